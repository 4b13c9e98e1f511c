"""DPO-family losses that move the chosen and the rejected response each on its own.

With Δ_w = log π(y_w) - log π_ref(y_w) and Δ_l = log π(y_l) - log π_ref(y_l), as in
`dpo_functions`: absolute implicit rewards (nca_pair, bco_pair, apo_*), a target for
each log-ratio (sppo_hard), the sorted log-ratios of each side (aot_pair), and the
chosen response's likelihood alone (sft). Each takes (B,) log-probabilities and
returns (B,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_rlhf.losses.dpo_functions import _check_beta, _check_label_smoothing, _logratio_margin, _smoothed_logistic


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
    _check_beta(beta)
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
    _check_beta(beta)
    chosen = beta * (policy_chosen_logps - reference_chosen_logps) - baseline
    rejected = beta * (policy_rejected_logps - reference_rejected_logps) - baseline
    return -F.logsigmoid(chosen) - F.logsigmoid(-rejected)


def sppo_hard_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """(Δ_w - 1/(2β))² + (Δ_l + 1/(2β))²: regress each log-ratio onto ±1/(2β).

    Wu et al. 2024, "Self-Play Preference Optimization for Language Model
    Alignment" (SPPO, Eq. 4.7), with the hard win probability P = 1 for the
    chosen response and 0 for the rejected one.

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0 (the paper's 1/η).

    Returns:
        (B,).
    """
    _check_beta(beta)
    target = 0.5 / beta
    chosen = policy_chosen_logps - reference_chosen_logps
    rejected = policy_rejected_logps - reference_rejected_logps
    return (chosen - target).square() + (rejected + target).square()


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
    _check_beta(beta)
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
    _check_beta(beta)
    chosen = beta * (policy_chosen_logps - reference_chosen_logps)
    margin = beta * _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return torch.sigmoid(chosen) + (1.0 - torch.sigmoid(margin))


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
    _check_beta(beta)
    _check_label_smoothing("aot_pair_loss", label_smoothing, allow_half=True)
    chosen_sorted = torch.sort(policy_chosen_logps - reference_chosen_logps).values
    rejected_sorted = torch.sort(policy_rejected_logps - reference_rejected_logps).values
    return _smoothed_logistic(beta * (chosen_sorted - rejected_sorted), label_smoothing)


def sft_loss(policy_chosen_logps: Tensor, chosen_lengths: Tensor) -> Tensor:
    """-Σ log π(y_w) / Σ |y_w|: the token-mean NLL of the batch's chosen responses, repeated per pair.

    The SFT term of MPO (Wang et al. 2024, "Enhancing the Reasoning Ability of
    Multimodal Large Language Models via Mixed Preference Optimization") and
    TRL's `sft` loss type. Unlike `regularizer/nll`, which averages each
    response's per-token NLL, every token of the batch weighs the same.

    Args:
        policy_chosen_logps: (B,) summed log π of the chosen response tokens.
        chosen_lengths: (B,) number of those tokens.

    Returns:
        (B,), every entry the batch's token-mean NLL.
    """
    token_mean = -policy_chosen_logps.sum() / chosen_lengths.sum().clamp(min=1).to(policy_chosen_logps.dtype)
    return token_mean.expand_as(policy_chosen_logps)
