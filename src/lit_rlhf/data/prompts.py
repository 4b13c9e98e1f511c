"""Prompts for PPO: a user's file (`data=prompts`), each prompt with the other columns of its row, and their datamodule.

A row holds `prompt` (text, or a list of chat messages) or `messages` (a chat, rendered with the
tokenizer's chat template and its generation prompt). Every other column rides along with the prompt,
unchanged, to the reward functions and to evaluation: JSON files are parsed line by line so that values
keep their exact types (no Arrow unification of the rows).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from lightning.pytorch.utilities import CombinedLoader
from transformers import PreTrainedTokenizerBase

from lit_rlhf.data.batches import PPOBatch, PromptBatch
from lit_rlhf.data.collate import PromptItem, collate_prompts
from lit_rlhf.data.files import SplitRows, available_splits, read_split, validate_rows
from lit_rlhf.data.messages import ChatRenderer, messages_of
from lit_rlhf.data.pretraining import pretraining_loader, pretraining_rows
from lit_rlhf.data.record_datamodule import RecordDataModule, data_parallel_place
from lit_rlhf.data.records import PromptRecord
from lit_rlhf.data.tokenization import report_truncation
from lit_rlhf.data.tokenized import PROMPTS, PromptRows, SFTRows, encode_prompt_column
from lit_rlhf.errors import ConfigError, DataError


def prompt_messages(row: dict, key: str) -> list[dict]:
    """A chat prompt's messages; it must end with a turn the assistant answers, not with the assistant's."""
    messages = messages_of(row, key)
    if messages[-1]["role"] == "assistant":
        raise DataError(f"'{key}' ends with an assistant message; a prompt ends with the turn the policy answers")
    return messages


def prompt_from_row(row: dict, prompt_key: str, messages_key: str, renderer: ChatRenderer | None) -> PromptRecord:
    """One row -> PromptRecord with every column but `prompt_key` as `columns`; DataError if invalid."""
    if row.get(prompt_key) is not None:
        key = prompt_key
        value = row[key]
        if isinstance(value, list):
            prompt = _render(renderer, prompt_messages(row, key), key)
        elif isinstance(value, str):
            if not value.strip():
                raise DataError(f"'{key}' is empty")
            prompt = value
        else:
            raise DataError(f"'{key}' must be text or a list of chat messages, got {type(value).__name__}")
    elif row.get(messages_key) is not None:
        key = messages_key
        prompt = _render(renderer, prompt_messages(row, key), key)
    else:
        there = ", ".join(row) or "none"
        raise DataError(
            f"record has neither '{prompt_key}' nor '{messages_key}' (its columns: {there}); "
            "set data.prompt_key=<column> or data.messages_key=<column>"
        )
    # A chat's messages stay a column (a judge may read the turns); a text prompt is the prompt itself.
    return PromptRecord(prompt, {name: value for name, value in row.items() if name != prompt_key})


def _render(renderer: ChatRenderer | None, messages: list[dict], key: str) -> str:
    if renderer is None:
        raise DataError(f"'{key}' holds chat messages, which need a tokenizer with a chat template")
    return renderer.prompt(messages)


def is_chat_row(row: dict, prompt_key: str, messages_key: str) -> bool:
    return isinstance(row.get(prompt_key), list) or (row.get(prompt_key) is None and row.get(messages_key) is not None)


def jsonable_columns(columns: dict[str, Any]) -> str:
    """A prompt's columns as JSON text (its cache row). Values JSON cannot hold (dates, bytes) become their str()."""
    return json.dumps(columns, ensure_ascii=False, default=str)


class PromptFileSource:
    """Prompts from a local file or folder (JSONL, JSON, CSV, parquet, optionally compressed, or a folder saved
    by `datasets`), or a Hub dataset when online.

    Args:
        path: the file or folder.
        prompt_key: the column holding the prompt (text, or chat messages).
        messages_key: the column holding a chat to render as the prompt, for rows without `prompt_key`.
        skip_invalid: drop (and report once) rows without a usable prompt.
        tokenizer: renders chat rows with its chat template.
    """

    def __init__(self, path: str, prompt_key: str, messages_key: str, skip_invalid: bool, tokenizer: Any = None):
        self.path, self.prompt_key, self.messages_key = path, prompt_key, messages_key
        self.skip_invalid, self.tokenizer = skip_invalid, tokenizer

    def splits(self) -> list[str]:
        return available_splits(self.path)

    def load(self, split: str) -> list[PromptRecord]:
        rows = read_split(self.path, split, exact_json=True)
        renderer = self._renderer(rows)
        return validate_rows(
            rows, lambda row: prompt_from_row(row, self.prompt_key, self.messages_key, renderer), self.skip_invalid
        )

    def _renderer(self, rows: SplitRows) -> ChatRenderer | None:
        first = next(
            (i for i, row in enumerate(rows.rows) if is_chat_row(row, self.prompt_key, self.messages_key)), None
        )
        if first is None:
            return None
        try:
            return ChatRenderer(self.tokenizer, what="the prompts")
        except DataError as error:
            raise DataError(f"{rows.where(first)}: {error}") from None


class PromptDataModule(RecordDataModule):
    """Prompts for PPO rollouts, with their rows' other columns, optionally with a pretraining corpus for PPO-ptx.

    Training batches are `PPOBatch`es: prompts, plus a pretraining batch when the corpus is mixed in
    (`mix_pretraining`, which regularizer/ptx=mix sets). The corpus is sampled so that it yields exactly
    one batch per prompt batch: the prompts alone define an epoch. Validation batches are plain
    `PromptBatch`es.
    """

    batch_type = PPOBatch
    kind = "prompts"
    features = PROMPTS

    def __init__(
        self,
        source,
        tokenizer: PreTrainedTokenizerBase,
        max_prompt_length: int,
        pretrain_source,
        mix_pretraining: bool,
        pretrain_batch_size: int,
        pretrain_max_length: int,
        **kwargs,
    ):
        super().__init__(source, tokenizer, **kwargs)
        if max_prompt_length < 1:
            # ids[-0:] would keep the whole prompt: 0 must not silently mean "no limit".
            raise ConfigError(f"need max_prompt_length > 0, got {max_prompt_length}")
        self.max_prompt_length = max_prompt_length
        # Only regularizer/ptx=mix mixes the corpus in: otherwise nothing of it is read or tokenized.
        self.pretrain_source = pretrain_source if mix_pretraining else None
        self.pretrain_batch_size, self.pretrain_max_length = pretrain_batch_size, pretrain_max_length
        self.pretrain_items: SFTRows | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_items is not None:
            return
        super().setup(stage)
        if self.pretrain_source is not None:
            self.pretrain_items = pretraining_rows(
                self.pretrain_source, self.tokenizer, self.pretrain_max_length, self.cache_dir, self.num_proc
            )

    def lengths(self) -> dict:
        return {"max_prompt_length": self.max_prompt_length}

    def columns(self, records: list) -> dict[str, list]:
        return {"prompt": [r.prompt for r in records], "columns": [jsonable_columns(r.columns) for r in records]}

    def column_names(self) -> set[str]:
        """The columns the prompts carry besides the prompt (what reward functions receive)."""
        self.setup()
        return self.train_items.column_names() | self.val_items.column_names()

    def encoder(self) -> Callable[[dict], dict]:
        return functools.partial(
            encode_prompt_column, tokenizer=self.tokenizer, max_prompt_length=self.max_prompt_length
        )

    def rows(self, table, first_id: int) -> PromptRows:
        return PromptRows(table)

    def report(self, items: PromptRows, split: str) -> None:
        report_truncation(items.truncated_count(), len(items), f"{split} prompts", self.max_prompt_length)
        empty = items.empty_count()
        if empty:
            raise DataError(f"{empty} {split} prompts tokenize to nothing; generation needs at least one prompt token")

    def collate(self, items: list[PromptItem]) -> PromptBatch:
        return collate_prompts(items, self.tokenizer.pad_token_id)

    def train_dataloader(self):
        prompts = super().train_dataloader()
        loaders = {"prompts": prompts}
        if self.pretrain_items is not None:
            rank, world_size = data_parallel_place(self)
            loaders["pretrain"] = pretraining_loader(
                self.pretrain_items,
                self.pretrain_batch_size,
                num_batches=len(prompts),
                seed=self.seed + 1,
                rank=rank,
                world_size=world_size,
                pad_id=self.tokenizer.pad_token_id,
                num_workers=self.num_workers,
            )
        return CombinedLoader(loaders, mode="min_size")

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """The combined loader yields a dict of its loaders' batches; the module takes them typed."""
        if isinstance(batch, dict):
            return PPOBatch(prompts=batch["prompts"], pretrain=batch.get("pretrain"))
        return batch
