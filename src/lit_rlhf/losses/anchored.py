"""Anchored losses that move the chosen and the rejected response each on its own: NCA, BCO, APO.

Their implicit rewards βΔ are absolute, not only relative to each other, so the chosen likelihood can be
raised (or both lowered) rather than only the gap widened.

Every function takes (B,) log-probabilities of the chosen (w) and rejected (l) responses under the policy π
and the frozen reference π_ref, and returns a per-example loss (B,); Δ_w, Δ_l and the margin h = Δ_w - Δ_l
are defined in `log_ratios`. The classes in `lit_rlhf.losses.dpo` bind the hyperparameters from config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_rlhf.losses.log_ratios import check_beta, logratio_margin


def nca_pair_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """-log σ(βΔ_w) - ½ log σ(-βΔ_w) - ½ log σ(-βΔ_l): absolute rewards, so the chosen likelihood is raised.

    Chen et al. 2024, "Noise Contrastive Alignment of Language Models with
    Explicit Rewards" (NCA, paired form).

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.

    Returns:
        (B,).
    """
    check_beta(beta)
    chosen = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected = beta * (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)


def bco_pair_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    baseline: float,
) -> Tensor:
    """-log σ(βΔ_w - δ) - log σ(-(βΔ_l - δ)): each side a binary classification around the reward shift δ.

    Jung et al. 2024, "Binary Classifier Optimization for Large Language Model
    Alignment" (BCO); δ is the running mean of the implicit rewards βΔ.

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.
        baseline: the reward shift δ (0 gives TRL 1.16's `bco_pair`).

    Returns:
        (B,).
    """
    check_beta(beta)
    chosen = beta * (policy_chosen_logps - reference_chosen_logps) - baseline
    rejected = beta * (policy_rejected_logps - reference_rejected_logps) - baseline
    return -F.logsigmoid(chosen) - F.logsigmoid(-rejected)


def apo_zero_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """(1 - σ(βΔ_w)) + σ(βΔ_l): raise the chosen likelihood, lower the rejected one.

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive
    Revisions: Addressing Underspecification in Alignment" (APO-zero, Eq. 7): for
    chosen responses better than the model's own.

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.

    Returns:
        (B,).
    """
    check_beta(beta)
    chosen = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected = beta * (policy_rejected_logps - reference_rejected_logps)
    return (1.0 - torch.sigmoid(chosen)) + torch.sigmoid(rejected)


def apo_down_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """σ(βΔ_w) + (1 - σ(βh)): lower both likelihoods, the rejected one more.

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive
    Revisions" (APO-down, Eq. 8): for chosen responses worse than the model's own.

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.

    Returns:
        (B,).
    """
    check_beta(beta)
    chosen = beta * (policy_chosen_logps - reference_chosen_logps)
    margin = beta * logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return torch.sigmoid(chosen) + (1.0 - torch.sigmoid(margin))
