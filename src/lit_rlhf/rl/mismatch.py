"""Correcting for the rollout engine sampling from a slightly different policy than the trainer scores.

The engine (vLLM, or HF's cached decode) samples y ~ μ, while PPO's ratio and gradient assume y ~ π_old,
the trainer's own log-probs of the same tokens. Kernels, precision and batching make μ ≠ π_old a little
(Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"). The
`mismatch_correction` group weighs each token's policy loss by a function of the ratio π_old(y_t)/μ(y_t):

- `tis`: truncated importance sampling, w_t = min(π_old/μ, C) (Yao et al. 2025).
- `mask`: w_t = 1 inside [1/C, C], else 0: the token leaves the gradient (IcePop, Ling Team 2025,
  "Small Leak Can Sink a Great Ship: Boost RL Training on MoE with IcePop!").
- `sequence_tis`, `sequence_mask`: the same on the response's ratio Π_t π_old/μ, one weight for all its tokens.

The trainer's log-probs stay the PPO ratio's denominator; these weights only multiply the per-token loss.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from lit_rlhf.errors import ConfigError
from lit_rlhf.ops.masking import masked_mean

LEVELS = ("token", "sequence")


class Correction(NamedTuple):
    """weights: (B, R) per-token loss weights (0 on padding), or None for no correction; metrics: scalars."""

    weights: Tensor | None
    metrics: dict[str, Tensor]


def trainer_engine_log_ratio(trainer_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor) -> Tensor:
    """log π_old(y_t) - log μ(y_t) per token, 0 on padding. All (B, R)."""
    return torch.where(mask.bool(), trainer_logprobs - engine_logprobs, torch.zeros_like(trainer_logprobs))


def leveled_log_ratio(log_ratio: Tensor, mask: Tensor, level: str) -> Tensor:
    """(B, R) the token log-ratio itself (`token`), or on each token its response's sum Σ_t log ratio
    (`sequence`: the log of the product of the token ratios); 0 on padding."""
    if level == "token":
        return log_ratio
    keep = mask.bool()
    per_sequence = log_ratio.masked_fill(~keep, 0.0).sum(dim=1, keepdim=True)  # (B, 1)
    return torch.where(keep, per_sequence.expand_as(log_ratio), torch.zeros_like(log_ratio))


def truncated_ratio(log_ratio: Tensor, cap: float) -> Tensor:
    """min(exp(log_ratio), cap), computed as exp(min(log_ratio, log cap)) so a long response cannot overflow."""
    return torch.exp(log_ratio.clamp(max=math.log(cap)))


def inside_band(log_ratio: Tensor, cap: float) -> Tensor:
    """(B, R) bool: exp(log_ratio) lies in [1/cap, cap]."""
    return log_ratio.abs() <= math.log(cap)


def logprob_gap_metrics(trainer_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Mean and max of |log π_old(y_t) - log μ(y_t)| over the response tokens: how far the engine is off.

    Args:
        trainer_logprobs, engine_logprobs: (B, R); mask: (B, R) the tokens that count.
    """
    gap = trainer_engine_log_ratio(trainer_logprobs, engine_logprobs, mask).abs()
    keep = mask.bool()
    largest = gap[keep].max() if keep.any() else gap.new_zeros(())
    return {"rollout/logprob_diff/mean": masked_mean(gap, keep), "rollout/logprob_diff/max": largest}


def _check(cap: float, level: str, name: str) -> None:
    if not cap > 1.0:
        raise ConfigError(f"mismatch_correction={name} needs cap > 1, got {cap}")
    if level not in LEVELS:
        raise ConfigError(f"mismatch_correction.level must be one of {', '.join(LEVELS)}, got '{level}'")


class NoCorrection:
    """The engine's samples are used as if the trainer had drawn them (the gap is still measured)."""

    def __call__(self, trainer_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor) -> Correction:
        return Correction(None, logprob_gap_metrics(trainer_logprobs, engine_logprobs, mask))


class TruncatedImportanceSampling:
    """w = min(π_old/μ, C) per token or per response (Yao et al. 2025); `rollout/truncated_fraction` is the
    share of response tokens whose ratio was above C.

    Args:
        cap: C > 1.
        level: `token` (the token's ratio) or `sequence` (the response's product of token ratios).
    """

    def __init__(self, cap: float, level: str):
        _check(cap, level, "tis" if level == "token" else "sequence_tis")
        self.cap, self.level = cap, level

    def __call__(self, trainer_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor) -> Correction:
        keep = mask.bool()
        log_ratio = leveled_log_ratio(
            trainer_engine_log_ratio(trainer_logprobs, engine_logprobs, keep), keep, self.level
        )
        weights = truncated_ratio(log_ratio, self.cap).masked_fill(~keep, 0.0)
        truncated = (log_ratio > math.log(self.cap)) & keep
        metrics = logprob_gap_metrics(trainer_logprobs, engine_logprobs, mask)
        metrics["rollout/truncated_fraction"] = masked_mean(truncated.float(), keep)
        return Correction(weights.detach(), metrics)


class RatioBandMask:
    """w = 1 if π_old/μ lies in [1/C, C] else 0, per token or per response (IcePop, Ling Team 2025);
    `rollout/masked_fraction` is the share of response tokens dropped.

    Args:
        cap: C > 1.
        level: `token` or `sequence` (the response's product of token ratios; the whole response is dropped).
    """

    def __init__(self, cap: float, level: str):
        _check(cap, level, "mask" if level == "token" else "sequence_mask")
        self.cap, self.level = cap, level

    def __call__(self, trainer_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor) -> Correction:
        keep = mask.bool()
        log_ratio = leveled_log_ratio(
            trainer_engine_log_ratio(trainer_logprobs, engine_logprobs, keep), keep, self.level
        )
        kept = inside_band(log_ratio, self.cap) & keep
        metrics = logprob_gap_metrics(trainer_logprobs, engine_logprobs, mask)
        metrics["rollout/masked_fraction"] = masked_mean((keep & ~kept).float(), keep)
        return Correction(kept.to(trainer_logprobs.dtype), metrics)
