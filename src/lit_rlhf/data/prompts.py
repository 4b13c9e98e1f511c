"""Prompts from a user's file (`data=prompts`), each with the other columns of its row.

A row holds `prompt` (text, or a list of chat messages) or `messages` (a chat, rendered with the
tokenizer's chat template and its generation prompt). Every other column rides along with the prompt,
unchanged, to the reward functions and to evaluation: JSON files are parsed line by line so that values
keep their exact types (no Arrow unification of the rows).
"""

from __future__ import annotations

import json
from typing import Any

from lit_rlhf.data.messages import ChatRenderer, messages_of
from lit_rlhf.data.records import PromptRecord
from lit_rlhf.data.sources import SplitRows, available_splits, read_split, validate_rows
from lit_rlhf.errors import DataError


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
