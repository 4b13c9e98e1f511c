"""Padding and batching: encoded examples -> typed batches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from lit_rlhf.data.batches import PreferenceBatch, PromptBatch, SFTBatch
from lit_rlhf.data.tokenization import EncodedExample


@dataclass(frozen=True)
class SFTItem:
    example: EncodedExample
    prompt: str


@dataclass(frozen=True)
class PreferenceItem:
    """One prompt's completions best-first, the pairs to compare within them, and their margins."""

    prompt: str
    responses: tuple[str, ...]
    examples: tuple[EncodedExample, ...]
    pairs: tuple[tuple[int, int], ...]
    margins: tuple[float, ...]
    first_sequence_id: int

    def only(self, index: int) -> PreferenceItem:
        """This item reduced to its completion `index` alone (no pairs), keeping that completion's sequence id."""
        return PreferenceItem(
            self.prompt, (self.responses[index],), (self.examples[index],), (), (), self.first_sequence_id + index
        )


@dataclass(frozen=True)
class PromptItem:
    ids: list[int]
    prompt: str
    columns: dict[str, Any] = field(default_factory=dict)


def pad_right(sequences: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask, padding at the end."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def pad_left(sequences: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask, padding at the start (prompts for generation)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


def response_target_mask(examples: Sequence[EncodedExample], width: int) -> torch.Tensor:
    """(B, width-1) True where the next token (input_ids[:, t+1]) belongs to the response."""
    mask = torch.zeros((len(examples), width - 1), dtype=torch.bool)
    for row, example in enumerate(examples):
        # Target t+1 is a response token when prompt_length <= t+1 < len(ids).
        mask[row, max(example.prompt_length - 1, 0) : len(example.ids) - 1] = True
    return mask


def collate_sft(items: Sequence[SFTItem], pad_id: int) -> SFTBatch:
    """A batch that is its own accumulation window (`window_tokens` counts its own response tokens)."""
    examples = [item.example for item in items]
    input_ids, attention_mask = pad_right([e.ids for e in examples], pad_id)
    prompt_ids, prompt_mask = pad_left([e.ids[: e.prompt_length] for e in examples], pad_id)
    loss_mask = response_target_mask(examples, input_ids.shape[1])
    return SFTBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        loss_mask=loss_mask,
        prompt_input_ids=prompt_ids,
        prompt_attention_mask=prompt_mask,
        prompts=[item.prompt for item in items],
        window_tokens=loss_mask.sum(),
    )


def collate_sft_window(keyed: Sequence[tuple[SFTItem, int]], pad_id: int) -> SFTBatch:
    """Items keyed with their window's response-token total (`lit_rlhf.data.windows.WindowedRows`)."""
    batch = collate_sft([item for item, _ in keyed], pad_id)
    return replace(batch, window_tokens=torch.tensor(keyed[0][1], dtype=torch.long))


def collate_preferences(items: Sequence[PreferenceItem], pad_id: int) -> PreferenceBatch:
    examples, prompts, responses, sequence_ids = [], [], [], []
    better, worse, margins = [], [], []
    for item in items:
        offset = len(examples)
        examples.extend(item.examples)
        prompts.extend([item.prompt] * len(item.examples))
        responses.extend(item.responses)
        sequence_ids.extend(range(item.first_sequence_id, item.first_sequence_id + len(item.examples)))
        for (i, j), margin in zip(item.pairs, item.margins):
            better.append(offset + i)
            worse.append(offset + j)
            margins.append(margin)
    input_ids, attention_mask = pad_right([e.ids for e in examples], pad_id)
    prompt_ids, prompt_mask = pad_left(
        [item.examples[0].ids[: item.examples[0].prompt_length] for item in items], pad_id
    )
    return PreferenceBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_target_mask(examples, input_ids.shape[1]),
        better_idx=torch.tensor(better, dtype=torch.long),
        worse_idx=torch.tensor(worse, dtype=torch.long),
        margin=torch.tensor([math.nan if m is None else m for m in margins], dtype=torch.float32),
        sequence_ids=torch.tensor(sequence_ids, dtype=torch.long),
        prompts=prompts,
        responses=responses,
        prompt_input_ids=prompt_ids,
        prompt_attention_mask=prompt_mask,
        group_prompts=[item.prompt for item in items],
    )


def collate_prompts(items: Sequence[PromptItem], pad_id: int) -> PromptBatch:
    input_ids, attention_mask = pad_left([item.ids for item in items], pad_id)
    return PromptBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        prompts=[item.prompt for item in items],
        columns=[item.columns for item in items],
    )
