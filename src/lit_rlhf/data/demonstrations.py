"""SFT demonstrations from a user's file (`data=sft`), and plain texts for PPO-ptx's pretraining mix.

A demonstration row holds `prompt` + `completion` (texts, or TRL's conversational lists of messages) or
`messages` (a chat whose final assistant message is the completion and everything before it the prompt,
rendered with the tokenizer's chat template). The SFT loss covers the completion's tokens only.
"""

from __future__ import annotations

from typing import Any

from lit_rlhf.data.messages import ChatRenderer, messages_of
from lit_rlhf.data.records import SFTRecord
from lit_rlhf.data.sources import SplitRows, available_splits, read_split, validate_rows
from lit_rlhf.errors import ConfigError, DataError


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


class TextFileSource:
    """Plain texts (PPO-ptx's pretraining corpus) from the `text_key` column of a file or folder.

    Args:
        path: the file or folder; None raises a ConfigError when the texts are first needed.
        text_key: the column holding each text.
    """

    def __init__(self, path: str | None, text_key: str):
        self.path, self.text_key = path, text_key

    def splits(self) -> list[str]:
        return available_splits(self._path())

    def load(self, split: str) -> list[SFTRecord]:
        rows = read_split(self._path(), split)
        return validate_rows(rows, self._text, skip_invalid=False)

    def _path(self) -> str:
        if self.path is None:
            raise ConfigError(
                "regularizer/ptx=mix on your data needs its pretraining texts: data.pretrain_path=<file with a "
                f"'{self.text_key}' column>"
            )
        return self.path

    def _text(self, row: dict) -> SFTRecord:
        text = row.get(self.text_key)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"'{self.text_key}' must be a non-empty text (data.pretrain_text_key names the column)")
        return SFTRecord(prompt="", response=text)
