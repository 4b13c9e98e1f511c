"""AOT (Melnyk et al. 2024): distributional alignment by optimal transport of a batch's sorted log-ratios.

The loss of one pair depends on the whole batch; each returns its (B,) entries in sorted order.

Every function takes (B,) log-probabilities of the chosen (w) and rejected (l) responses under the policy π
and the frozen reference π_ref, and returns a per-example loss (B,); Δ_w, Δ_l and the margin h = Δ_w - Δ_l
are defined in `log_ratios`. The classes in `lit_rlhf.losses.dpo` bind the hyperparameters from config.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_rlhf.losses.log_ratios import check_beta, check_label_smoothing, smoothed_logistic


def aot_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float,
) -> Tensor:
    """The smoothed logistic loss of β(sort(π_c - π_r) - sort(ref_c - ref_r)): the policy's margins dominate.

    Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal
    Transport" (AOT, paired): first-order stochastic dominance of the policy's
    log-ratio margins over the reference's, via the 1-D optimal transport of the
    batch (matching sorted values). The loss of one pair depends on the batch.

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.
        label_smoothing: ε in [0, 0.5].

    Returns:
        (B,), in sorted order rather than the batch's.
    """
    check_beta(beta)
    check_label_smoothing("aot_loss", label_smoothing, allow_half=True)
    policy_sorted = torch.sort(policy_chosen_logps - policy_rejected_logps).values
    reference_sorted = torch.sort(reference_chosen_logps - reference_rejected_logps).values
    return smoothed_logistic(beta * (policy_sorted - reference_sorted), label_smoothing)


def aot_pair_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float,
) -> Tensor:
    """The smoothed logistic loss of β(sort(Δ_w) - sort(Δ_l)): chosen log-ratios dominate rejected ones.

    Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal
    Transport" (AOT, unpaired: chosen and rejected sorted apart). TRL called it
    `aot_pair` and renamed it `aot_unpaired`.

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.
        label_smoothing: ε in [0, 0.5].

    Returns:
        (B,), in sorted order rather than the batch's.
    """
    check_beta(beta)
    check_label_smoothing("aot_pair_loss", label_smoothing, allow_half=True)
    chosen_sorted = torch.sort(policy_chosen_logps - reference_chosen_logps).values
    rejected_sorted = torch.sort(policy_rejected_logps - reference_rejected_logps).values
    return smoothed_logistic(beta * (chosen_sorted - rejected_sorted), label_smoothing)
