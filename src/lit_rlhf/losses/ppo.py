"""PPO's clipped surrogate losses for the policy and the critic.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms", in the token-
level form of RLHF code (DeepSpeed-Chat's `actor_loss_fn`/`critic_loss_fn`,
TRL): every response token is one action, and losses are masked means over
the real tokens of the batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lit_rlhf.ops.masking import masked_mean, masked_var


class PolicyLoss(NamedTuple):
    loss: Tensor  # scalar, differentiable
    clipfrac: Tensor  # scalar, fraction of tokens where the clipped branch is active
    approx_kl: Tensor  # scalar, detached k3 estimate of KL(π_old ‖ π) on the tokens


class ValueLoss(NamedTuple):
    loss: Tensor  # scalar, differentiable
    clipfrac: Tensor  # scalar, fraction of tokens where the clipped value is active


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float
) -> PolicyLoss:
    """PPO-Clip: masked mean of max(-A·ρ, -A·clip(ρ, 1-ε, 1+ε)), ρ = π/π_old.

    Schulman et al. 2017, "Proximal Policy Optimization Algorithms". The max of
    the negated objectives is the min of the objectives: the pessimistic bound,
    so a token whose ratio already moved past 1±ε in the advantage's direction
    stops contributing gradient.

    Args:
        logprobs: (B, T) log π_θ of the taken tokens (with grad).
        old_logprobs: (B, T) log π_old at rollout time.
        advantages: (B, T).
        mask: (B, T) real response tokens.
        clip_eps: ε > 0.

    Returns:
        PolicyLoss(loss, clipfrac, approx_kl), all scalars.
    """
    keep = mask.bool()
    # Zero the log-ratio on padding before exp(): garbage there must not overflow.
    log_ratio = torch.where(keep, logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), keep)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(ratio.dtype), keep)
        # (ρ - 1) - log ρ ≥ 0: Schulman's k3 for KL(π_old ‖ π) on tokens sampled from π_old.
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, keep)
    return PolicyLoss(loss, clipfrac, approx_kl)


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_eps: float) -> ValueLoss:
    """Clipped critic loss: ½ · masked mean of max((V - R)², (V_clip - R)²).

    With V_clip = V_old + clamp(V - V_old, -ε, ε): the value clipping of the
    OpenAI baselines PPO2 implementation of Schulman et al. 2017, "Proximal
    Policy Optimization Algorithms" (kept by TRL and DeepSpeed-Chat). Taking the
    larger error means the critic gains nothing from moving more than ε away
    from its rollout-time prediction in one update.

    Args:
        values: (B, T) V_θ (with grad).
        old_values: (B, T) V at rollout time.
        returns: (B, T) GAE returns (targets).
        mask: (B, T) real response tokens.
        clip_eps: ε > 0, in reward units.

    Returns:
        ValueLoss(loss, clipfrac), scalars.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    unclipped_error = (values - returns).square()
    clipped_error = (clipped_values - returns).square()
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_error > unclipped_error).to(values.dtype), mask)
    return ValueLoss(loss, clipfrac)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var[R - V] / Var[R] over the real tokens: 1 = perfect critic, 0 = no better than a constant.

    A standard PPO diagnostic (OpenAI baselines). NaN when the returns have no
    variance (then the ratio is undefined).

    Args:
        values: (B, T) critic predictions.
        returns: (B, T) targets.
        mask: (B, T) real response tokens (at least one).

    Returns:
        Scalar, detached.
    """
    with torch.no_grad():
        # Biased variances: the n/(n-1) factors cancel in the ratio, and a single token is allowed.
        returns_var = masked_var(returns, mask, unbiased=False)
        residual_var = masked_var(returns - values, mask, unbiased=False)
        nan = torch.full_like(returns_var, float("nan"))
        return torch.where(returns_var > 0, 1.0 - residual_var / returns_var, nan)
