"""Helpers every DPO-family loss shares: the log-ratio margin h, the smoothed logistic loss, argument checks.

With Δ_w = log π(y_w) - log π_ref(y_w) and Δ_l = log π(y_l) - log π_ref(y_l), the margin is h = Δ_w - Δ_l.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"DPO losses need beta > 0, got {beta}")


def check_label_smoothing(who: str, label_smoothing: float, allow_half: bool) -> None:
    upper_ok = label_smoothing <= 0.5 if allow_half else label_smoothing < 0.5
    if not (label_smoothing >= 0.0 and upper_ok):
        interval = "[0, 0.5]" if allow_half else "[0, 0.5)"
        raise ValueError(f"{who}: label_smoothing must lie in {interval}, got {label_smoothing}")


def logratio_margin(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
) -> Tensor:
    """h = (π_c - ref_c) - (π_r - ref_r), all log-probs (B,) -> (B,)."""
    return (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)


def smoothed_logistic(logits: Tensor, label_smoothing: float) -> Tensor:
    """-(1-ε) log σ(z) - ε log σ(-z): the logistic loss when each label is flipped with probability ε."""
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
