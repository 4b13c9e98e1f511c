"""SFT demonstrations: a user's file (`data=sft`), any record read as a demonstration, and their datamodule.

A demonstration row holds `prompt` + `completion` (texts, or TRL's conversational lists of messages) or
`messages` (a chat whose final assistant message is the completion and everything before it the prompt,
rendered with the tokenizer's chat template). The SFT loss covers the completion's tokens only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from lit_rlhf.data.batches import SFTBatch
from lit_rlhf.data.collate import SFTItem, collate_sft, collate_sft_window
from lit_rlhf.data.files import SplitRows, available_splits, read_split, validate_rows
from lit_rlhf.data.messages import ChatRenderer, messages_of
from lit_rlhf.data.record_datamodule import RecordDataModule, data_parallel_place
from lit_rlhf.data.records import PreferenceRecord, RankedRecord, SFTRecord
from lit_rlhf.data.sharding import ShardedShuffle
from lit_rlhf.data.tokenization import check_lengths, report_truncation
from lit_rlhf.data.tokenized import COMPLETIONS, SFTRows, encode_completions
from lit_rlhf.data.windows import AccumulationWindows, WindowedRows, response_token_counts
from lit_rlhf.errors import DataError


def demonstration_from_row(
    row: dict, prompt_key: str, completion_key: str, messages_key: str, renderer: ChatRenderer | None
) -> SFTRecord:
    """One row -> SFTRecord(prompt, completion); DataError (without location) if invalid."""
    prompt, completion = row.get(prompt_key), row.get(completion_key)
    if prompt is not None and completion is not None:
        if isinstance(prompt, list) or isinstance(completion, list):
            prompt_turns = messages_of(row, prompt_key)
            completion_turns = messages_of(row, completion_key)
            return SFTRecord(*_chat(renderer, prompt_key).prompt_and_completion(prompt_turns, completion_turns))
        for key, value in ((prompt_key, prompt), (completion_key, completion)):
            if not isinstance(value, str):
                raise DataError(f"'{key}' must be text or a list of chat messages, got {type(value).__name__}")
        if not completion.strip():
            raise DataError(f"'{completion_key}' is empty")
        return SFTRecord(prompt, completion)
    if row.get(messages_key) is not None:
        turns = messages_of(row, messages_key)
        if turns[-1]["role"] != "assistant":
            raise DataError(f"'{messages_key}' does not end with an assistant message, the completion to learn")
        return SFTRecord(*_chat(renderer, messages_key).prompt_and_completion(turns[:-1], turns[-1:]))
    there = ", ".join(row) or "none"
    raise DataError(
        f"record has neither '{prompt_key}' + '{completion_key}' nor '{messages_key}' (its columns: {there}); "
        "set data.prompt_key, data.completion_key or data.messages_key"
    )


def _chat(renderer: ChatRenderer | None, key: str) -> ChatRenderer:
    if renderer is None:
        raise DataError(f"'{key}' holds chat messages, which need a tokenizer with a chat template")
    return renderer


class SFTFileSource:
    """Demonstrations from a local file or folder (JSONL, JSON, CSV, parquet, optionally compressed, or a
    folder saved by `datasets`), or a Hub dataset when online.

    Args:
        path: the file or folder.
        prompt_key, completion_key: the columns of prompt + completion rows.
        messages_key: the column of chat rows (the last assistant message is the completion).
        skip_invalid: drop (and report once) invalid rows.
        tokenizer: renders chat rows with its chat template.
    """

    def __init__(
        self,
        path: str,
        prompt_key: str,
        completion_key: str,
        messages_key: str,
        skip_invalid: bool,
        tokenizer: Any = None,
    ):
        self.path, self.prompt_key, self.completion_key = path, prompt_key, completion_key
        self.messages_key = messages_key
        self.skip_invalid, self.tokenizer = skip_invalid, tokenizer

    def splits(self) -> list[str]:
        return available_splits(self.path)

    def load(self, split: str) -> list[SFTRecord]:
        rows = read_split(self.path, split)
        renderer = self._renderer(rows)
        keys = (self.prompt_key, self.completion_key, self.messages_key)
        return validate_rows(rows, lambda row: demonstration_from_row(row, *keys, renderer), self.skip_invalid)

    def _renderer(self, rows: SplitRows) -> ChatRenderer | None:
        chat = (self.prompt_key, self.completion_key, self.messages_key)
        first = next((i for i, row in enumerate(rows.rows) if any(isinstance(row.get(k), list) for k in chat)), None)
        if first is None:
            return None
        try:
            return ChatRenderer(self.tokenizer, what="the demonstrations")
        except DataError as error:
            raise DataError(f"{rows.where(first)}: {error}") from None


def as_prompt_response(record) -> tuple[str, str]:
    """The demonstration in any record type: an SFT pair, a preference's chosen, a ranking's best."""
    if isinstance(record, SFTRecord):
        return record.prompt, record.response
    if isinstance(record, PreferenceRecord):
        return record.prompt, record.chosen
    if isinstance(record, RankedRecord):
        return record.prompt, record.responses[0]
    raise DataError(f"SFT needs prompt/response records; got {type(record).__name__}")


class SFTDataModule(RecordDataModule):
    """Prompt + demonstration pairs; the loss covers the response tokens only."""

    batch_type = SFTBatch
    kind = "sft"
    features = COMPLETIONS

    def __init__(self, source, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int, **kwargs):
        super().__init__(source, tokenizer, **kwargs)
        check_lengths(max_length, max_prompt_length)
        self.max_length, self.max_prompt_length = max_length, max_prompt_length

    def lengths(self) -> dict:
        return {"max_length": self.max_length, "max_prompt_length": self.max_prompt_length}

    def columns(self, records: list) -> dict[str, list]:
        pairs = [as_prompt_response(r) for r in records]
        return {"prompt": [prompt for prompt, _ in pairs], "responses": [[response] for _, response in pairs]}

    def encoder(self) -> Callable[[dict], dict]:
        return functools.partial(
            encode_completions,
            tokenizer=self.tokenizer,
            max_length=self.max_length,
            max_prompt_length=self.max_prompt_length,
        )

    def rows(self, table, first_id: int) -> SFTRows:
        return SFTRows(table)

    def report(self, items: SFTRows, split: str) -> None:
        report_truncation(items.truncated_count(), len(items), f"{split} demonstrations", self.max_length)

    def collate(self, items: list[SFTItem]) -> SFTBatch:
        return collate_sft(items, self.tokenizer.pad_token_id)

    def train_dataloader(self) -> StatefulDataLoader:
        """The shuffled order of `train_loader`, drawn in accumulation windows of the trainer's
        `accumulate_grad_batches` batches; each batch carries its window's response-token total."""
        accumulate, limit = 1, None
        if self.trainer is not None:
            accumulate, limit = self.trainer.accumulate_grad_batches, self.trainer.limit_train_batches
        sampler = ShardedShuffle(len(self.train_items), self.seed, *data_parallel_place(self))
        windows = AccumulationWindows(
            sampler,
            self.batch_size,
            drop_last=len(sampler) >= self.batch_size,
            token_counts=response_token_counts(self.train_items),
            accumulate=accumulate,
            limit_batches=limit,
        )
        return StatefulDataLoader(
            WindowedRows(self.train_items),
            batch_sampler=windows,
            collate_fn=functools.partial(collate_sft_window, pad_id=self.tokenizer.pad_token_id),
            num_workers=self.num_workers,
        )
