"""Turn text records into token ids, with truncation that is counted and reported once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lit_rlhf.errors import ConfigError

log = logging.getLogger("lit_rlhf")


@dataclass(frozen=True)
class EncodedExample:
    """`ids` = prompt tokens + response tokens (+ EOS unless truncated away).

    The first `prompt_length` ids are the prompt.
    """

    ids: list[int]
    prompt_length: int
    truncated: bool


def encode_prompt_responses(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_length: int,
    max_prompt_length: int,
) -> list[EncodedExample]:
    """Tokenize prompt and response separately (so BPE never merges across the boundary) and append EOS.

    Over-long prompts keep their end (the most recent turns); then the response is
    cut to fit `max_length`, losing its EOS.
    """
    check_lengths(max_length, max_prompt_length)
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    return [
        join_prompt_response(prompt, response, tokenizer.eos_token_id, max_length, max_prompt_length)
        for prompt, response in zip(prompt_ids, response_ids)
    ]


def join_prompt_response(
    prompt: list[int], response: list[int], eos_token_id: int, max_length: int, max_prompt_length: int
) -> EncodedExample:
    """Prompt ids + response ids + EOS, cut as `encode_prompt_responses` describes."""
    response = [*response, eos_token_id]
    truncated = len(prompt) > max_prompt_length
    prompt = prompt[-max_prompt_length:]
    room = max_length - len(prompt)
    truncated = truncated or len(response) > room
    return EncodedExample(prompt + response[:room], len(prompt), truncated)


def check_lengths(max_length: int, max_prompt_length: int) -> None:
    """A prompt limit that leaves room for at least one response token."""
    if not 0 < max_prompt_length < max_length:
        raise ConfigError(f"need 0 < max_prompt_length < max_length, got {max_prompt_length} and {max_length}")


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_prompt_length: int
) -> tuple[list[list[int]], int]:
    """Prompt ids, keeping the end of over-long prompts, and how many prompts were cut."""
    if max_prompt_length < 1:
        # ids[-0:] would keep the whole prompt: 0 must not silently mean "no limit".
        raise ConfigError(f"need max_prompt_length > 0, got {max_prompt_length}")
    full = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    return [ids[-max_prompt_length:] for ids in full], sum(len(ids) > max_prompt_length for ids in full)


def report_truncation(count: int, total: int, what: str, limit: int) -> None:
    """Say once how many sequences were cut, so a too-small max_length is never silent."""
    if count:
        log.warning(
            "truncated %d of %d %s to fit %d tokens "
            "(raise data.max_length / data.max_prompt_length to keep them whole)",
            count,
            total,
            what,
            limit,
        )
