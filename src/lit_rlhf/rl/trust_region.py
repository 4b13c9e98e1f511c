"""What keeps π_θ near the policy that sampled the rollout: the `trust_region` group.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms" offers two constraints, and seed
004 contrasts them: PPO-Clip clips the ratio ρ = π_θ/π_old (§3), PPO-Penalty adds β·KL(π_old ‖ π_θ)
to the loss and adapts β (§4). `clip`, `kl_penalty` and `clip_and_kl_penalty` pick one or both.
The ratio itself is per token (PPO) or per sequence (GSPO, Zheng et al. 2025).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_rlhf.errors import ConfigError
from lit_rlhf.losses.ppo import clipped_surrogate, old_policy_kl, sequence_log_ratio, token_log_ratio
from lit_rlhf.ops.masking import masked_mean

RATIO_LEVELS = ("token", "sequence")


class RatioClip:
    """PPO-Clip's range [1-ε_low, 1+ε_high], with DAPO's clip-higher and an optional dual clip.

    Args:
        eps_low: ε_low in (0, 1).
        eps_high: ε_high > 0 (ε_high > ε_low is clip-higher, Yu et al. 2025, "DAPO").
        dual_clip: c > 1 caps a negative advantage's loss at -c·A (Ye et al. 2020), or None.
    """

    def __init__(self, eps_low: float, eps_high: float, dual_clip: float | None):
        if not (0.0 < eps_low < 1.0 and eps_high > 0.0):
            raise ConfigError(
                f"trust_region.clip needs 0 < eps_low < 1 and eps_high > 0, got eps_low={eps_low}, eps_high={eps_high}"
            )
        if dual_clip is not None and not dual_clip > 1.0:
            raise ConfigError(f"trust_region.clip.dual_clip must be > 1 (or null), got {dual_clip}")
        self.eps_low, self.eps_high, self.dual_clip = eps_low, eps_high, dual_clip

    def __call__(self, ratio: Tensor, advantages: Tensor):
        return clipped_surrogate(ratio, advantages, self.eps_low, self.eps_high, self.dual_clip)


class AdaptiveOldPolicyKL:
    """PPO-Penalty's coefficient β on KL(π_old ‖ π_θ), adapted after every iteration.

    Schulman et al. 2017 §4: with d the KL after the update, β ← β/factor if d < d_targ/tolerance,
    β ← β·factor if d > d_targ·tolerance (the paper: factor 2, tolerance 1.5).

    Args:
        coef: the starting β.
        target: d_targ, mean KL(π_old ‖ π_θ) per token, in nats.
        tolerance: the band [d_targ/tolerance, d_targ·tolerance] where β stays.
        factor: how much β moves outside the band.
    """

    def __init__(self, coef: float, target: float, tolerance: float, factor: float):
        if not (coef > 0 and target > 0 and tolerance > 1 and factor > 1):
            raise ConfigError(
                "trust_region.kl_penalty needs coef > 0, target > 0, tolerance > 1 and factor > 1, got "
                f"coef={coef}, target={target}, tolerance={tolerance}, factor={factor}"
            )
        self.value, self.target, self.tolerance, self.factor = float(coef), target, tolerance, factor

    def update(self, kl: float) -> None:
        if kl < self.target / self.tolerance:
            self.value /= self.factor
        elif kl > self.target * self.tolerance:
            self.value *= self.factor

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class TrustRegion:
    """The actor's surrogate loss under the chosen constraint(s).

    Args:
        ratio: `token` (PPO) or `sequence` (GSPO-token: each token carries its response's length-normalised
            ratio; pair it with `loss_aggregation=seq_mean_token_mean` for GSPO's sequence objective).
        clip: a RatioClip, or None for an unclipped surrogate -A·ρ.
        kl_penalty: an AdaptiveOldPolicyKL, or None.
    """

    def __init__(self, ratio: str, clip: RatioClip | None, kl_penalty: AdaptiveOldPolicyKL | None):
        if ratio not in RATIO_LEVELS:
            raise ConfigError(f"trust_region.ratio must be one of {', '.join(RATIO_LEVELS)}, got '{ratio}'")
        if clip is None and kl_penalty is None:
            raise ConfigError(
                "a trust region needs clip, kl_penalty or both: choose trust_region=clip, kl_penalty "
                "or clip_and_kl_penalty"
            )
        self.ratio, self.clip, self.kl_penalty = ratio, clip, kl_penalty

    @property
    def needs_kl_after_update(self) -> bool:
        """Whether `update` wants KL(π_old ‖ π_θ) measured after the iteration's update (PPO-Penalty)."""
        return self.kl_penalty is not None

    def policy_loss(
        self,
        logprobs: Tensor,
        old_logprobs: Tensor,
        advantages: Tensor,
        mask: Tensor,
        aggregate,
        mismatch_weights: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The scalar actor loss on one minibatch, and its metrics.

        Args:
            logprobs: (B, T) log π_θ with grad; old_logprobs, advantages, mask: (B, T).
            aggregate: the `loss_aggregation` object, (B, T) per-token loss and mask -> scalar.
            mismatch_weights: (B, T) the rollout engine's correction (rl/mismatch.py), multiplying each token's
                clipped surrogate before aggregation (TIS, Yao et al. 2025), or None. The PPO-Penalty term is
                not weighted: it keeps π_θ near π_old whichever engine sampled.
        """
        per_token_log_ratio = token_log_ratio(logprobs, old_logprobs, mask)
        log_ratio = per_token_log_ratio if self.ratio == "token" else sequence_log_ratio(logprobs, old_logprobs, mask)
        ratio = torch.exp(log_ratio)
        if self.clip is not None:
            per_token, clipped = self.clip(ratio, advantages)
        else:
            per_token, clipped = -advantages * ratio, torch.zeros_like(mask, dtype=torch.bool)
        if mismatch_weights is not None:
            per_token = per_token * mismatch_weights
        loss = aggregate(per_token, mask)
        metrics = {"policy_loss": loss.detach(), "clipfrac": masked_mean(clipped.to(ratio.dtype), mask)}
        old_kl = old_policy_kl(per_token_log_ratio)
        if self.kl_penalty is not None:
            penalty = aggregate(old_kl, mask)
            loss = loss + self.kl_penalty.value * penalty
            metrics["trust_region_kl_coef"] = torch.tensor(self.kl_penalty.value)
        metrics["approx_kl"] = masked_mean(old_kl.detach(), mask)
        return loss, metrics

    def update(self, kl_after_update: float) -> None:
        """Adapt PPO-Penalty's β to the mean KL(π_old ‖ π_θ) per token after the iteration."""
        if self.kl_penalty is not None:
            self.kl_penalty.update(kl_after_update)

    def state_dict(self) -> dict[str, Any]:
        return self.kl_penalty.state_dict() if self.kl_penalty is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.kl_penalty is not None and state:
            self.kl_penalty.load_state_dict(state)
