"""Built-in verifiable rewards: answer checks against a data column, a format regex, a length budget.

A verifier scores 1.0 (right) or 0.0 (wrong), and leaves unscored a row with no reference to check against. The
answer checks also extract the answer they judged, which majority voting (maj@k) counts.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import torch

from lit_rlhf.errors import ConfigError
from lit_rlhf.rewards.completions import Completions, Scores


def reference_values(completions: Completions, column: str, reward: str) -> list[Any]:
    """The reference column of every row; ConfigError naming the columns there are if it is missing."""
    if column not in completions.columns:
        there = ", ".join(completions.columns) or "none"
        raise ConfigError(
            f"reward '{reward}' checks completions against the data column '{column}', which the prompts do not "
            f"have (their columns: {there}); set its column (e.g. reward.components.{reward}.column=<name>)"
        )
    return completions.columns[column]


class _AnswerVerifier:
    """Shared by the answer checks: 1.0 if a completion's answer matches its row's `column`, else 0.0."""

    verifier = True

    def __init__(self, column: str, weight: float):
        self.column, self.weight = column, weight
        self.name = type(self).__name__
        self.required_columns = (column,)

    def __call__(self, completions: Completions) -> Scores:
        references = reference_values(completions, self.column, self.name)
        judged = [
            None if reference is None else self.judge(completion, reference)
            for completion, reference in zip(completions.completions, references)
        ]
        scored = torch.tensor([verdict is not None for verdict in judged], dtype=torch.bool)
        return Scores(torch.tensor([verdict or 0.0 for verdict in judged], dtype=torch.float32), scored)

    def judge(self, completion: str, reference: Any) -> float | None:
        """1.0 or 0.0, or None when the reference cannot be judged against."""
        raise NotImplementedError

    def extract(self, completion: str) -> str | None:
        """The answer a completion gives, in a canonical form (for majority voting); None if it gives none."""
        raise NotImplementedError


class MathVerifier(_AnswerVerifier):
    """Mathematical equivalence of the completion's final answer and the reference, by `math-verify`
    (Hugging Face's Math-Verify: LaTeX and plain expressions parsed to SymPy; 1/2 equals 0.5 and \\frac{1}{2}).

    A reference that does not parse gives no score (None); a completion that does not parse scores 0.

    Args:
        column: the data column holding each prompt's reference answer.
        weight: its weight in the mix.
    """

    def judge(self, completion: str, reference: Any) -> float | None:
        gold = self._parse(str(reference))
        if not gold:
            return None
        answer = self._parse(completion)
        return float(bool(answer) and self._verify(gold, answer))

    def extract(self, completion: str) -> str | None:
        parsed = self._parse(completion)
        return str(parsed[0]) if parsed else None

    @staticmethod
    def _timeout() -> dict:
        # math-verify times out with SIGALRM, which exists only in the main thread.
        if threading.current_thread() is threading.main_thread():
            return {}
        return {"parsing_timeout": None}

    def _parse(self, text: str) -> list:
        from math_verify import parse

        return parse(text, **self._timeout())

    def _verify(self, gold: list, answer: list) -> bool:
        from math_verify import verify

        if threading.current_thread() is threading.main_thread():
            return bool(verify(gold, answer))
        return bool(verify(gold, answer, timeout_seconds=None))  # no SIGALRM outside the main thread


def normalize_answer(text: str, case_sensitive: bool) -> str:
    """Whitespace collapsed, ends stripped (with a final full stop), lower case unless `case_sensitive`."""
    text = " ".join(str(text).split()).rstrip(".").strip()
    return text if case_sensitive else text.lower()


class ExactMatch(_AnswerVerifier):
    """Normalised exact match of the completion (or the part `pattern` captures) against the reference.

    Args:
        column: the data column holding each prompt's reference answer.
        pattern: a regex whose first group is the answer (its last match counts; `.` stops at line ends),
            e.g. `####\\s*(.+)`; null compares the whole completion.
        case_sensitive: compare letters' case too.
        weight: its weight in the mix.
    """

    def __init__(self, column: str, pattern: str | None, case_sensitive: bool, weight: float):
        super().__init__(column, weight)
        # Without DOTALL: an answer pattern such as `####\s*(.+)` ends at the line's end.
        self.pattern = _compile(pattern, "exact", flags=0) if pattern is not None else None
        self.case_sensitive = case_sensitive

    def extract(self, completion: str) -> str | None:
        if self.pattern is None:
            answer = completion
        else:
            matches = list(self.pattern.finditer(completion))
            if not matches:
                return None
            answer = matches[-1].group(1) if self.pattern.groups else matches[-1].group(0)
        answer = normalize_answer(answer, self.case_sensitive)
        return answer or None

    def judge(self, completion: str, reference: Any) -> float:
        answer = self.extract(completion)
        return float(answer is not None and answer == normalize_answer(reference, self.case_sensitive))


def _compile(pattern: str, reward: str, flags: int = re.DOTALL) -> re.Pattern:
    try:
        return re.compile(pattern, flags)
    except re.error as error:
        raise ConfigError(f"reward '{reward}': pattern {pattern!r} is not a valid regex ({error})") from None


class FormatReward:
    """1.0 if the whole completion matches `pattern` (re.fullmatch, `.` matching newlines too), else 0.0.

    Args:
        pattern: the regex, e.g. `<think>.*</think>\\s*<answer>.*</answer>` (DeepSeek-R1's format reward).
        weight: its weight in the mix.
    """

    verifier = False
    required_columns: tuple[str, ...] = ()

    def __init__(self, pattern: str, weight: float):
        self.pattern, self.weight, self.name = _compile(pattern, "format"), weight, "format"

    def __call__(self, completions: Completions) -> Scores:
        matched = [self.pattern.fullmatch(text) is not None for text in completions.completions]
        return Scores.of_all(torch.tensor(matched, dtype=torch.float32))


def overlong_penalty(lengths: torch.Tensor, max_tokens: int, buffer_tokens: int) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning
    System at Scale"), with L_max = max_tokens and L_cache = buffer_tokens:

        0                                   if L <= L_max - L_cache
        ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max
        -1                                  if L > L_max

    Args:
        lengths: (B,) completion lengths in tokens.
    Returns:
        (B,) float32 penalties in [-1, 0].
    """
    lengths = lengths.float()
    free = max_tokens - buffer_tokens
    ramp = (free - lengths) / buffer_tokens if buffer_tokens > 0 else torch.zeros_like(lengths)
    penalty = torch.where(lengths <= free, torch.zeros_like(lengths), ramp)
    return torch.where(lengths > max_tokens, torch.full_like(lengths, -1.0), penalty)


class LengthPenalty:
    """A penalty past a token budget (`overlong_penalty`), on the completions' lengths in policy tokens.

    Args:
        max_tokens: L_max, past which the penalty is -1.
        buffer_tokens: L_cache, the last tokens before L_max over which the penalty ramps from 0 to -1.
        weight: its weight in the mix.
    """

    verifier = False
    required_columns: tuple[str, ...] = ()

    def __init__(self, max_tokens: int, buffer_tokens: int, weight: float):
        if not 0 <= buffer_tokens < max_tokens:
            raise ConfigError(
                f"reward 'length' needs 0 <= buffer_tokens < max_tokens, got {buffer_tokens} and {max_tokens}"
            )
        self.max_tokens, self.buffer_tokens, self.weight, self.name = max_tokens, buffer_tokens, weight, "length"

    def __call__(self, completions: Completions) -> Scores:
        if completions.lengths is None:
            raise ConfigError("reward 'length' needs token counts: it scores sampled completions, not a data set's")
        return Scores.of_all(overlong_penalty(completions.lengths.cpu(), self.max_tokens, self.buffer_tokens))
