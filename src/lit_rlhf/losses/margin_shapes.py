"""Other shapes of a function of the margin h: SLiC-HF's hinge, EXO's reverse KL, DiscoPOP's discovered mix.

Every function takes (B,) log-probabilities of the chosen (w) and rejected (l) responses under the policy π
and the frozen reference π_ref, and returns a per-example loss (B,); Δ_w, Δ_l and the margin h = Δ_w - Δ_l
are defined in `log_ratios`. The classes in `lit_rlhf.losses.dpo` bind the hyperparameters from config.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_rlhf.losses.log_ratios import check_beta, logratio_margin


def hinge_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """relu(1 - βh): zero once the scaled margin exceeds 1.

    Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human
    Feedback" (calibration loss, with the reference log-ratio as in TRL).

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0 (1/β is the margin δ of the paper).

    Returns:
        (B,).
    """
    check_beta(beta)
    margin = logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return torch.relu(1.0 - beta * margin)


def exo_pair_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float,
) -> Tensor:
    """KL(q ‖ p) over {y_w, y_l}, with q = (σ(βh), σ(-βh)) the policy's and p = (1-ε, ε) the labels'.

    Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model
    Alignment" (EXO-pref, Eq. 16). It is the reverse KL where DPO is the
    forward one, so it seeks a mode instead of covering both; ε > 0 keeps
    log ε finite (the paper uses 1e-3).

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.
        label_smoothing: ε in (0, 0.5].

    Returns:
        (B,).
    """
    check_beta(beta)
    if not 0.0 < label_smoothing <= 0.5:
        raise ValueError(f"exo_pair_loss: label_smoothing must lie in (0, 0.5], got {label_smoothing}")
    logits = beta * logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    chosen_term = torch.sigmoid(logits) * (F.logsigmoid(logits) - math.log1p(-label_smoothing))
    rejected_term = torch.sigmoid(-logits) * (F.logsigmoid(-logits) - math.log(label_smoothing))
    return chosen_term + rejected_term


def discopop_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    tau: float,
) -> Tensor:
    """(1 - m)·(-log σ(βh)) + m·exp(-βh), with m = σ(βh/τ): logistic for small margins, exponential for large.

    Chris Lu et al. 2024, "Discovering Preference Optimization Algorithms with
    and for Large Language Models" (DiscoPOP / LRML, Eq. 5).

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.
        tau: temperature τ > 0 of the mixing weight (the paper's 0.05).

    Returns:
        (B,).
    """
    check_beta(beta)
    if not tau > 0:
        raise ValueError(f"discopop_loss: tau must be > 0, got {tau}")
    logits = beta * logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    mix = torch.sigmoid(logits / tau)
    return (1.0 - mix) * -F.logsigmoid(logits) + mix * torch.exp(-logits)
