"""Sampled completions of prompt records, batch by batch, as output rows that keep the records' columns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import torch

from lit_rlhf.data.collate import pad_left
from lit_rlhf.data.records import PromptRecord
from lit_rlhf.generation import GenerationEngine
from lit_rlhf.ops.generation import SamplingConfig, decode_responses


def batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@torch.no_grad()
def generate_completions(
    engine: GenerationEngine,
    tokenizer,
    records: Iterable[PromptRecord],
    sampling: SamplingConfig,
    n: int,
    batch_size: int,
    max_prompt_length: int,
    seed: int,
) -> Iterator[dict]:
    """Rows {**columns, prompt, completion, sample} for n samples of every record, in the records' order.

    Prompts longer than `max_prompt_length` tokens keep their end (as training does); batch b samples with
    seed + b, so a run with the same seed writes the same completions. `engine` (the `generation` group's,
    holding the policy) samples them.
    """
    for number, batch in enumerate(batched(records, batch_size)):
        encoded = tokenizer([record.prompt for record in batch], add_special_tokens=True)["input_ids"]
        ids, mask = pad_left([row[-max_prompt_length:] for row in encoded], tokenizer.pad_token_id)
        rollout = engine.generate(
            ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), sampling, seed=seed + number
        )
        texts = decode_responses(tokenizer, rollout.generation)
        for index, text in enumerate(texts):
            record = batch[index // n]
            yield {**record.columns, "prompt": record.prompt, "completion": text, "sample": index % n}
