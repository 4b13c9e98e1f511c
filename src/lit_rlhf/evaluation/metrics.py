"""Evaluation metrics of sampled completions: pass@k, maj@k and the win rate against a reference."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples of which `correct` are right (Chen et al. 2021,
    "Evaluating Large Language Models Trained on Code"): 1 - C(n - c, k) / C(n, k), the chance that at
    least one of k samples drawn without replacement from the n is right."""
    if not 0 < k <= n:
        raise ValueError(f"pass@k needs 0 < k <= n, got k={k}, n={n}")
    if not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n, got {correct} of {n}")
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def majority_answer(answers: Sequence[str | None]) -> int | None:
    """The index of the first sample giving the most common answer (ties: the answer seen first); None when
    no sample gives an answer. Samples without an answer do not vote."""
    votes = Counter(answer for answer in answers if answer is not None)
    if not votes:
        return None
    top = max(votes.values())
    return next(i for i, answer in enumerate(answers) if answer is not None and votes[answer] == top)


def maj_at_k(answers: Sequence[str | None], correct: Sequence[float], k: int) -> float:
    """maj@k of one prompt: 1.0 if the majority answer of its first k samples is right (Wang et al. 2023,
    "Self-Consistency Improves Chain of Thought Reasoning in Language Models"), else 0.0.

    Args:
        answers: each sample's extracted answer (None: it gives none).
        correct: each sample's verdict (1.0 right, 0.0 wrong).
    """
    if not 0 < k <= len(answers):
        raise ValueError(f"maj@k needs 0 < k <= {len(answers)} samples, got k={k}")
    chosen = majority_answer(answers[:k])
    return 0.0 if chosen is None else float(correct[chosen])


def win_rate(policy: Sequence[float], reference: Sequence[float]) -> float:
    """The share of pairs the policy's completion wins against the reference's on the same prompt, by a
    judge's scores; a tie counts as half a win."""
    if len(policy) != len(reference) or not policy:
        raise ValueError(f"win rate needs equal, non-empty score lists, got {len(policy)} and {len(reference)}")
    wins = sum(1.0 if p > r else 0.5 if p == r else 0.0 for p, r in zip(policy, reference))
    return wins / len(policy)
