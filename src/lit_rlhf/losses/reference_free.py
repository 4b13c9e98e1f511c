"""Losses that need no reference model: SimPO's length-normalised margin and MPO's SFT (NLL) term.

Every function takes (B,) log-probabilities of the chosen (w) and rejected (l) responses under the policy π
and the frozen reference π_ref, and returns a per-example loss (B,); Δ_w, Δ_l and the margin h = Δ_w - Δ_l
are defined in `log_ratios`. The classes in `lit_rlhf.losses.dpo` bind the hyperparameters from config.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lit_rlhf.losses.log_ratios import check_beta


def simpo_loss(policy_chosen_avg_logps: Tensor, policy_rejected_avg_logps: Tensor, beta: float, gamma: float) -> Tensor:
    """-log σ(β(log π(y_w)/|y_w| - log π(y_l)/|y_l|) - γ): a length-normalised reward with a target margin γ.

    Meng et al. 2024, "SimPO: Simple Preference Optimization with a
    Reference-Free Reward" (Eq. 6). No reference model.

    Args:
        policy_chosen_avg_logps: (B,) chosen log-probabilities averaged over response tokens.
        policy_rejected_avg_logps: (B,) rejected log-probabilities averaged over response tokens.
        beta: β > 0.
        gamma: the target reward margin γ ≥ 0.

    Returns:
        (B,).
    """
    check_beta(beta)
    if gamma < 0:
        raise ValueError(f"simpo_loss: gamma must be >= 0, got {gamma}")
    return -F.logsigmoid(beta * (policy_chosen_avg_logps - policy_rejected_avg_logps) - gamma)


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
