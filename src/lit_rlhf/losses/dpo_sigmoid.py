"""DPO's logistic loss of the margin, and its two answers to noisy labels (DPO, cDPO, robust DPO).

Every function takes (B,) log-probabilities of the chosen (w) and rejected (l) responses under the policy π
and the frozen reference π_ref, and returns a per-example loss (B,); Δ_w, Δ_l and the margin h = Δ_w - Δ_l
are defined in `log_ratios`. The classes in `lit_rlhf.losses.dpo` bind the hyperparameters from config.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lit_rlhf.losses.log_ratios import check_beta, check_label_smoothing, logratio_margin, smoothed_logistic


def dpo_sigmoid_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> Tensor:
    """-(1-ε) log σ(βh) - ε log σ(-βh).

    ε = 0 is DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your
    Language Model is Secretly a Reward Model"); ε > 0 assumes each label is
    flipped with probability ε, conservative DPO (Mitchell 2023, "A note on DPO
    with noisy preferences & relationship to IPO").

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0, strength of the implicit KL to the reference.
        label_smoothing: ε in [0, 0.5].

    Returns:
        (B,).
    """
    check_beta(beta)
    check_label_smoothing("dpo_sigmoid_loss", label_smoothing, allow_half=True)
    margin = logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return smoothed_logistic(beta * margin, label_smoothing)


def dpo_robust_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float,
) -> Tensor:
    """(-(1-ε) log σ(βh) + ε log σ(-βh)) / (1 - 2ε): an unbiased DPO loss under label noise ε.

    Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language Models with
    Noisy Feedback". Unlike conservative DPO, its expectation over flipped
    labels equals the clean DPO loss, which is why ε must stay below 0.5.

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.
        label_smoothing: flip probability ε in [0, 0.5).

    Returns:
        (B,).
    """
    check_beta(beta)
    check_label_smoothing("dpo_robust_loss", label_smoothing, allow_half=False)
    logits = beta * logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    noisy = -(1.0 - label_smoothing) * F.logsigmoid(logits) + label_smoothing * F.logsigmoid(-logits)
    return noisy / (1.0 - 2.0 * label_smoothing)
