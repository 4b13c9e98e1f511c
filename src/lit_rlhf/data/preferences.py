"""Preference data: chosen/rejected pairs or K-wise rankings, their sources and their datamodule.

A source reads a local file or folder or a Hub dataset (`files`) into `PreferenceRecord`s: rows
`{"prompt", "chosen", "rejected", "margin"?}` of text or chat messages (`JsonlPreferenceSource`, `data=jsonl`),
or Anthropic HH-RLHF dialogues (`HHRLHFSource`, `data=hh_rlhf`). `PreferenceDataModule` feeds reward models
and DPO. A source's constructor does no I/O, so Hydra can build it before the data exists.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lit_rlhf.data.batches import PreferenceBatch
from lit_rlhf.data.collate import PreferenceItem, collate_preferences
from lit_rlhf.data.files import SplitRows, available_splits, read_split, validate_rows
from lit_rlhf.data.hh_rlhf import hh_preference
from lit_rlhf.data.messages import ChatRenderer, is_conversational, preference_from_row
from lit_rlhf.data.record_datamodule import RecordDataModule, eval_loader
from lit_rlhf.data.records import PreferenceRecord, RankedRecord
from lit_rlhf.data.tokenization import check_lengths, report_truncation
from lit_rlhf.data.tokenized import PREFERENCES, PreferenceRows, encode_completions
from lit_rlhf.errors import DataError


class JsonlPreferenceSource:
    """Rows `{"prompt", "chosen", "rejected", "margin"?}` of text, or of chat messages rendered by `tokenizer`.

    Args:
        path: a local file or folder, or a Hub dataset name.
        skip_invalid: drop (and report once) rows with missing fields, wrong types or empty responses.
        tokenizer: needed only for chat-message rows; its chat template renders them.
    """

    def __init__(self, path: str, skip_invalid: bool, tokenizer: Any = None):
        self.path = path
        self.skip_invalid = skip_invalid
        self.tokenizer = tokenizer

    def splits(self) -> list[str]:
        return available_splits(self.path)

    def load(self, split: str) -> list[PreferenceRecord]:
        rows = read_split(self.path, split)
        renderer = self._renderer(rows)
        return validate_rows(rows, lambda row: preference_from_row(row, renderer), self.skip_invalid)

    def _renderer(self, rows: SplitRows) -> ChatRenderer | None:
        """A chat renderer if any row holds messages; a missing tokenizer is an error even with skip_invalid."""
        first = next((index for index, row in enumerate(rows.rows) if is_conversational(row)), None)
        if first is None:
            return None
        try:
            return ChatRenderer(self.tokenizer)
        except DataError as error:
            raise DataError(f"{rows.where(first)}: {error}") from None


class HHRLHFSource:
    """Anthropic HH-RLHF rows `{"chosen": dialogue, "rejected": dialogue}`, split at the last Assistant turn.

    Args:
        path: a local file or folder, or a Hub dataset name.
        skip_invalid: drop (and report once) rows that cannot be split into a shared prompt and two responses.
    """

    def __init__(self, path: str, skip_invalid: bool):
        self.path = path
        self.skip_invalid = skip_invalid

    def splits(self) -> list[str]:
        return available_splits(self.path)

    def load(self, split: str) -> list[PreferenceRecord]:
        return validate_rows(read_split(self.path, split), hh_preference, self.skip_invalid)


def as_ranked_group(record) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...], tuple[float | None, ...]]:
    """Completions best-first, the (better, worse) pairs among them, and each pair's margin."""
    if isinstance(record, PreferenceRecord):
        return (record.chosen, record.rejected), ((0, 1),), (record.margin,)
    if isinstance(record, RankedRecord):
        pairs = tuple(itertools.combinations(range(len(record.responses)), 2))
        scores = record.scores
        margins = tuple(None if scores is None else max(scores[i] - scores[j], 0.0) for i, j in pairs)
        return record.responses, pairs, margins
    raise DataError(f"preference training needs chosen/rejected or ranked records; got {type(record).__name__}")


class PreferenceDataModule(RecordDataModule):
    """Chosen/rejected pairs or K-wise rankings, for reward models and DPO.

    Every completion gets a dataset-wide sequence id (train first, then validation),
    the key of DPO's cached reference log-probs.
    """

    batch_type = PreferenceBatch
    kind = "preferences"
    features = PREFERENCES

    def __init__(self, source, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int, **kwargs):
        super().__init__(source, tokenizer, **kwargs)
        check_lengths(max_length, max_prompt_length)
        self.max_length, self.max_prompt_length = max_length, max_prompt_length

    def lengths(self) -> dict:
        return {"max_length": self.max_length, "max_prompt_length": self.max_prompt_length}

    def num_ids(self, items) -> int:
        """Completions, not records: each completion has its own id."""
        if isinstance(items, PreferenceRows):
            return items.num_ids
        return sum(len(item.examples) for item in items)

    def total_ids(self) -> int:
        """Sequence ids of both splits: the size of a per-completion cache."""
        return self.num_ids(self.train_items) + self.num_ids(self.val_items)

    def columns(self, records: list) -> dict[str, list]:
        groups = [as_ranked_group(r) for r in records]
        return {
            "prompt": [r.prompt for r in records],
            "responses": [list(responses) for responses, _, _ in groups],
            "pairs": [[list(pair) for pair in pairs] for _, pairs, _ in groups],
            "margins": [list(margins) for _, _, margins in groups],
        }

    def encoder(self) -> Callable[[dict], dict]:
        return functools.partial(
            encode_completions,
            tokenizer=self.tokenizer,
            max_length=self.max_length,
            max_prompt_length=self.max_prompt_length,
        )

    def rows(self, table, first_id: int) -> PreferenceRows:
        return PreferenceRows(table, first_id)

    def report(self, items: PreferenceRows, split: str) -> None:
        report_truncation(items.truncated_count(), items.num_ids, f"{split} preference completions", self.max_length)

    def collate(self, items: list[PreferenceItem]) -> PreferenceBatch:
        return collate_preferences(items, self.tokenizer.pad_token_id)

    def all_dataloaders(self) -> list[DataLoader]:
        """Unshuffled passes over every split (to precompute reference log-probs once); every rank reads
        all of it, since its shard of the training order changes each epoch."""
        return [
            eval_loader(items, self.val_batch_size, self.collate, self.num_workers, rank=0, world_size=1)
            for items in (self.train_items, self.val_items)
        ]
