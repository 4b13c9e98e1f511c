"""PPO's clipped surrogate losses for the policy and the critic.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms", in the token-
level form of RLHF code (DeepSpeed-Chat's `actor_loss_fn`/`critic_loss_fn`,
TRL): every response token is one action. The policy surrogate is returned per
token; how tokens and responses are weighed is the `loss_aggregation` group's job
(`ops/aggregation.py`), and which constraint applies is `rl/trust_region.py`'s.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lit_rlhf.ops.masking import masked_mean, masked_var


class ClippedSurrogate(NamedTuple):
    loss: Tensor  # (B, T) per-token loss, to be aggregated over the mask
    clipped: Tensor  # (B, T) bool, where a clip (the ratio's or the dual one) is active


class ValueLoss(NamedTuple):
    loss: Tensor  # scalar, differentiable
    clipfrac: Tensor  # scalar, fraction of tokens where the clipped value is active


def token_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """log ρ_t = log π_θ(y_t) - log π_old(y_t), 0 on padding. (B, T) -> (B, T).

    Zeroing padding before anything calls exp(): garbage there must not overflow.
    """
    return torch.where(mask.bool(), logprobs - old_logprobs, torch.zeros_like(logprobs))


def sequence_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """GSPO-token's log s_{i,t}: the value of the sequence's length-normalised log-ratio on every token.

    Zheng et al. 2025, "Group Sequence Policy Optimization": s_i = (π(y_i)/π_old(y_i))^{1/|y_i|}, and
    s_{i,t} = sg[s_i] · π(y_t)/sg[π(y_t)], whose value is s_i and whose gradient is s_i·∇log π(y_t). With
    one advantage per response and `seq_mean_token_mean` aggregation this is GSPO's sequence objective.

    Args:
        logprobs: (B, T) with grad; old_logprobs: (B, T); mask: (B, T).

    Returns:
        (B, T), 0 on padding.
    """
    keep = mask.bool()
    per_token = token_log_ratio(logprobs, old_logprobs, mask)
    lengths = keep.sum(dim=1, keepdim=True).clamp(min=1)
    sequence = (per_token.sum(dim=1, keepdim=True) / lengths).detach()  # (B, 1) log s_i
    return torch.where(keep, sequence + logprobs - logprobs.detach(), torch.zeros_like(logprobs))


def clipped_surrogate(
    ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float, dual_clip: float | None
) -> ClippedSurrogate:
    """Per-token PPO-Clip loss max(-A·ρ, -A·clip(ρ, 1-ε_low, 1+ε_high)), optionally dual-clipped.

    Schulman et al. 2017, "Proximal Policy Optimization Algorithms": the max of the negated
    objectives is the pessimistic bound, so a token whose ratio already moved past the clip in the
    advantage's direction stops contributing gradient. ε_high > ε_low is DAPO's clip-higher (Yu et
    al. 2025), which leaves low-probability tokens room to grow. Dual-clip (Ye et al. 2020, "Mastering
    Complex Control in MOBA Games with Deep Reinforcement Learning") caps the loss of a negative
    advantage at -c·A, so a huge ratio on a bad token cannot blow the update up.

    Args:
        ratio: (B, T) ρ (with grad); advantages: (B, T).
        eps_low, eps_high: the clip range [1-ε_low, 1+ε_high].
        dual_clip: c > 1, or None for no dual clip.

    Returns:
        ClippedSurrogate(loss (B, T), clipped (B, T) bool).
    """
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    active = clipped > unclipped
    if dual_clip is not None:
        cap = -dual_clip * advantages
        capped = (advantages < 0) & (loss > cap)
        loss = torch.where(capped, cap, loss)
        active = active | capped
    return ClippedSurrogate(loss, active)


def old_policy_kl(log_ratio: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(π_old ‖ π_θ) on tokens sampled from π_old: (ρ - 1) - log ρ ≥ 0.

    Schulman 2020, "Approximating KL Divergence", with the roles of the two policies swapped; the
    quantity PPO-Penalty constrains (Schulman et al. 2017 §4) and TRL logs as `approx_kl`.

    Args:
        log_ratio: (B, T) log π_θ - log π_old (with grad when it is a loss), 0 on padding.

    Returns:
        (B, T).
    """
    return torch.expm1(log_ratio) - log_ratio


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float
) -> Tensor:
    """Symmetric token-level PPO-Clip, the token mean over the mask: the textbook form, a reference for tests.

    Args:
        logprobs: (B, T) log π_θ (with grad); old_logprobs, advantages, mask: (B, T); clip_eps: ε.

    Returns:
        Scalar loss.
    """
    ratio = torch.exp(token_log_ratio(logprobs, old_logprobs, mask))
    return masked_mean(clipped_surrogate(ratio, advantages, clip_eps, clip_eps, None).loss, mask)


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
