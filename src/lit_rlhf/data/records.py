"""The normalised records every data source produces, whatever its file format.

Prompts and responses are plain text. A response is the continuation of its
prompt: `prompt + response` is the full text, so responses usually begin with
a space (or a newline, for chat templates).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PromptRecord:
    """A prompt to sample from, and every other column of its row (the reference answer, a task id, ...).

    `columns` ride along with the prompt, unchanged, through the rollout to the reward functions and to
    evaluation: strings, numbers, lists and nested dicts as the data file held them.
    """

    prompt: str
    columns: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SFTRecord:
    prompt: str
    response: str


@dataclass(frozen=True)
class PreferenceRecord:
    """One human comparison. `margin` is the Llama 2 margin m(r) >= 0, if the data has one."""

    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None


@dataclass(frozen=True)
class RankedRecord:
    """K >= 2 completions of one prompt, best first (InstructGPT's K-wise rankings).

    `scores` (same length as `responses`, optional) are the labeller's Likert
    scores; the margin of pair (i, j) is max(scores[i] - scores[j], 0).
    """

    prompt: str
    responses: tuple[str, ...]
    scores: tuple[float, ...] | None = None
