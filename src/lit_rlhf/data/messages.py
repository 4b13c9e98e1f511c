"""Prompt/chosen/rejected rows as `PreferenceRecord`s: plain text, or chat messages rendered by a chat template.

Text rows are `{"prompt", "chosen", "rejected", "margin"?}` strings (margin >= 0).
Chat rows follow TRL's conversational preference format, in two shapes:
- explicit prompt: `prompt` is a message list and `chosen`/`rejected` hold the
  assistant turn(s) that follow it;
- implicit prompt: `chosen`/`rejected` are whole conversations that agree up to
  their final assistant message; that shared part is the prompt.

The text comes from the tokenizer's own chat template, so the policy trains on
the exact string it will see at generation time:
    prompt text   = render(prompt, add_generation_prompt=True)
    response text = render(prompt + response)[len(prompt text):]
"""

from __future__ import annotations

import math
from typing import Any

import jinja2

from lit_rlhf.data.records import PreferenceRecord
from lit_rlhf.errors import DataError

Message = dict[str, Any]
PREFERENCE_FIELDS = "required: prompt, chosen, rejected; optional: margin"


def is_conversational(row: dict) -> bool:
    """Whether a row holds chat messages (lists) rather than plain strings."""
    return any(isinstance(row.get(field), list) for field in ("prompt", "chosen", "rejected"))


def preference_from_row(row: dict, renderer: ChatRenderer | None) -> PreferenceRecord:
    """One row -> PreferenceRecord; raises DataError (without location) if invalid.

    `renderer` renders chat rows; it may be None only if no row of the data is conversational.
    """
    for field in ("chosen", "rejected"):
        if row.get(field) is None:
            raise DataError(f"record has no field '{field}' ({PREFERENCE_FIELDS})")
    margin = _margin(row.get("margin"))
    if renderer is not None and is_conversational(row):
        prompt, chosen, rejected = renderer.preference(row)
        return PreferenceRecord(prompt=prompt, chosen=chosen, rejected=rejected, margin=margin)
    if row.get("prompt") is None:
        raise DataError(f"record has no field 'prompt' ({PREFERENCE_FIELDS})")
    for field in ("prompt", "chosen", "rejected"):
        if not isinstance(row[field], str):
            raise DataError(
                f"field '{field}' must be a string (or, for chat data, a list of messages), "
                f"got {type(row[field]).__name__}"
            )
    for field in ("chosen", "rejected"):
        if not row[field].strip():
            raise DataError(f"{field} response is empty")
    return PreferenceRecord(prompt=row["prompt"], chosen=row["chosen"], rejected=row["rejected"], margin=margin)


def _margin(value: Any) -> float | None:
    if value is None:
        return None
    # bool is an int in Python, but `true` is not a margin.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise DataError(f"field 'margin' must be a finite number >= 0, got {value!r}")
    return float(value)


def split_conversation(row: dict) -> tuple[list[Message], list[Message], list[Message]]:
    """(prompt, chosen response, rejected response) messages of an explicit- or implicit-prompt row."""
    chosen = _messages(row, "chosen")
    rejected = _messages(row, "rejected")
    if row.get("prompt") is not None:
        return _messages(row, "prompt"), chosen, rejected
    for field, conversation in (("chosen", chosen), ("rejected", rejected)):
        if conversation[-1]["role"] != "assistant":
            raise DataError(f"{field} conversation does not end with an assistant message (and there is no prompt)")
    if chosen[:-1] != rejected[:-1]:
        raise DataError("chosen and rejected conversations differ before their final assistant message")
    return chosen[:-1], chosen[-1:], rejected[-1:]


def messages_of(row: dict, field: str) -> list[Message]:
    """A row's `field` as checked chat messages (DataError naming the field if it is not a message list)."""
    return _messages(row, field)


def _messages(row: dict, field: str) -> list[Message]:
    """A field's message list, checked, with the None-valued keys Arrow adds to unify structs removed."""
    value = row.get(field)
    if value is None:
        raise DataError(f"record has no field '{field}'")
    if not isinstance(value, list) or not value:
        raise DataError(f"field '{field}' must be a non-empty list of {{role, content}} messages")
    messages = []
    for number, message in enumerate(value, 1):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise DataError(f"{field} message {number} is not a {{role, content}} message with string values")
        messages.append({key: item for key, item in message.items() if item is not None})
    return messages


class ChatRenderer:
    """Renders conversational rows with a tokenizer's chat template.

    Args:
        tokenizer: a `transformers` tokenizer with a `chat_template`.
    """

    def __init__(self, tokenizer: Any, what: str = "chosen/rejected"):
        if tokenizer is None:
            raise DataError(
                f"{what} are chat messages, which need a tokenizer with a chat template "
                "to become text; none was given (pass tokenizer= to the source)"
            )
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(
                f"{what} are chat messages, but tokenizer {type(tokenizer).__name__} "
                "has no chat_template to render them with"
            )
        self.tokenizer = tokenizer
        self.eos_token = getattr(tokenizer, "eos_token", None)

    def preference(self, row: dict) -> tuple[str, str, str]:
        """(prompt, chosen, rejected) text of one conversational row."""
        prompt_messages, chosen_messages, rejected_messages = split_conversation(row)
        prompt = self._render(prompt_messages, add_generation_prompt=True)
        chosen = self._response(prompt, prompt_messages, chosen_messages, "chosen")
        rejected = self._response(prompt, prompt_messages, rejected_messages, "rejected")
        return prompt, chosen, rejected

    def prompt(self, messages: list[Message]) -> str:
        """A chat prompt's text, ending with the generation prompt that opens the assistant's turn."""
        return self._render(messages, add_generation_prompt=True)

    def prompt_and_completion(
        self, prompt_messages: list[Message], completion_messages: list[Message]
    ) -> tuple[str, str]:
        """(prompt, completion) texts of a conversation cut before its completion turn(s)."""
        prompt = self.prompt(prompt_messages)
        return prompt, self._response(prompt, prompt_messages, completion_messages, "completion")

    def _response(
        self, prompt: str, prompt_messages: list[Message], response_messages: list[Message], field: str
    ) -> str:
        if not any(message["content"].strip() for message in response_messages):
            raise DataError(f"{field} response is empty")
        full = self._render(prompt_messages + response_messages, add_generation_prompt=False)
        if not full.startswith(prompt):
            raise DataError(
                f"the chat template's rendering of the {field} conversation does not start with its "
                "rendering of the prompt (add_generation_prompt=True), so the response cannot be cut out"
            )
        return self._without_eos(full[len(prompt) :])

    def _without_eos(self, response: str) -> str:
        # The training pipeline appends EOS itself. Templates that close each turn
        # with EOS (often followed by a newline) would otherwise end it twice.
        trimmed = response.rstrip()
        if self.eos_token and trimmed.endswith(self.eos_token):
            return trimmed[: -len(self.eos_token)]
        return response

    def _render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except (jinja2.TemplateError, ValueError, TypeError) as error:
            # Templates reject some conversations on purpose (e.g. roles that do not alternate).
            raise DataError(f"the chat template cannot render this conversation ({error})") from None
