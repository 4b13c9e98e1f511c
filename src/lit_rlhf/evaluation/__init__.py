"""Evaluation without training: sample a policy, score it, compare it with a reference, write completions.

`Evaluator` runs `python -m lit_rlhf.evaluate` (reward, KL, win rate and, with a verifier, accuracy,
pass@k and maj@k); `generate_completions` runs `python -m lit_rlhf.generate`; `metrics` holds the
estimators as pure functions.
"""

from lit_rlhf.evaluation.evaluate import Evaluation, Evaluator
from lit_rlhf.evaluation.generate import generate_completions
from lit_rlhf.evaluation.metrics import maj_at_k, majority_answer, pass_at_k, win_rate

__all__ = ["Evaluation", "Evaluator", "generate_completions", "maj_at_k", "majority_answer", "pass_at_k", "win_rate"]
