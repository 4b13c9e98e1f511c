"""Per-token estimators of KL(π ‖ π_ref) for tokens sampled from π.

With x = log π(y_t) - log π_ref(y_t) and y_t ~ π (Schulman 2020, "Approximating
KL Divergence", http://joschu.net/blog/kl-approx.html; TRL's `_kl_penalty`):

- k1 = x           unbiased, high variance, negative on some tokens;
- |x|              always ≥ 0, biased upwards;
- k2 = ½ x²        (TRL's "mse") low variance, biased, ≥ 0;
- k3 = e^{-x} - 1 + x   unbiased (E_π[e^{-x}] = 1) and ≥ 0 (e^u ≥ 1 + u);
- full             Σ_v π(v)(log π(v) - log π_ref(v)): exact per position, needs logits.

The estimator classes are the Hydra group `regularizer/kl/estimator`: a config picks one
with `_target_` instead of a string switch inside the PPO module.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k1 = log π - log π_ref (Schulman 2020, "Approximating KL Divergence").

    Args:
        logprobs: (B, T) log π of the sampled tokens.
        ref_logprobs: (B, T) log π_ref of the same tokens.

    Returns:
        (B, T).
    """
    return logprobs - ref_logprobs


def kl_abs(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """|log π - log π_ref| (TRL's "abs" KL penalty; Schulman 2020, "Approximating KL Divergence").

    Args:
        logprobs: (B, T); ref_logprobs: (B, T).

    Returns:
        (B, T), ≥ 0.
    """
    return (logprobs - ref_logprobs).abs()


def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k2 = ½ (log π - log π_ref)² (Schulman 2020, "Approximating KL Divergence"; TRL's "mse").

    Args:
        logprobs: (B, T); ref_logprobs: (B, T).

    Returns:
        (B, T), ≥ 0.
    """
    return 0.5 * (logprobs - ref_logprobs).square()


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor, clamp: float | None = None) -> Tensor:
    """k3 = π_ref/π - 1 - log(π_ref/π) (Schulman 2020, "Approximating KL Divergence").

    Unbiased for tokens sampled from π and never negative. e^{-x} overflows float32 once the policy gives a
    token e^{88} times less probability than the reference (x < -88); `clamp` bounds x to [-clamp, clamp]
    first (OpenRLHF clamps at 10, verl at 20), which biases only such tokens.

    Args:
        logprobs: (B, T); ref_logprobs: (B, T).
        clamp: bound on |log π - log π_ref|, or None for the exact estimator.

    Returns:
        (B, T), ≥ 0.
    """
    log_ratio = logprobs - ref_logprobs
    if clamp is not None:
        log_ratio = log_ratio.clamp(-clamp, clamp)
    return torch.expm1(-log_ratio) + log_ratio  # expm1 keeps precision when π ≈ π_ref


def kl_full(logits: Tensor, ref_logits: Tensor) -> Tensor:
    """Exact KL(π(·|context_t) ‖ π_ref(·|context_t)) at every position, summed over the vocabulary.

    Σ_v π(v)(log π(v) - log π_ref(v)) from the log-softmax of both logit
    tensors (TRL's "full" KL penalty). Computed one batch row at a time so the
    buffers are (T, V), not (B, T, V).

    Args:
        logits: (B, T, V) policy logits.
        ref_logits: (B, T, V) reference logits at the same positions.

    Returns:
        (B, T), ≥ 0, float32 (float64 for float64 logits).
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    per_row = []
    for row, ref_row in zip(logits, ref_logits):  # (T, V) each
        # Clamping -inf logits (banned tokens) to the most negative float avoids 0 * -inf = NaN.
        log_p = torch.log_softmax(row.to(dtype).clamp(min=torch.finfo(dtype).min), dim=-1)
        log_q = torch.log_softmax(ref_row.to(dtype).clamp(min=torch.finfo(dtype).min), dim=-1)
        per_row.append((log_p.exp() * (log_p - log_q)).sum(dim=-1))
    return torch.stack(per_row)


class K1Estimator:
    """k1 = log π - log π_ref: unbiased, can be negative (Schulman 2020, "Approximating KL Divergence")."""

    needs_logits: bool = False
    overflow_hint: str = ""  # no exponential to overflow

    def __call__(
        self, logprobs: Tensor, ref_logprobs: Tensor, logits: Tensor | None = None, ref_logits: Tensor | None = None
    ) -> Tensor:
        return kl_k1(logprobs, ref_logprobs)


class AbsEstimator:
    """|log π - log π_ref| (TRL's "abs"; Schulman 2020, "Approximating KL Divergence")."""

    needs_logits: bool = False
    overflow_hint: str = ""  # no exponential to overflow

    def __call__(
        self, logprobs: Tensor, ref_logprobs: Tensor, logits: Tensor | None = None, ref_logits: Tensor | None = None
    ) -> Tensor:
        return kl_abs(logprobs, ref_logprobs)


class K2Estimator:
    """k2 = ½ (log π - log π_ref)² (TRL's "mse"; Schulman 2020, "Approximating KL Divergence")."""

    needs_logits: bool = False
    overflow_hint: str = ""  # no exponential to overflow

    def __call__(
        self, logprobs: Tensor, ref_logprobs: Tensor, logits: Tensor | None = None, ref_logits: Tensor | None = None
    ) -> Tensor:
        return kl_k2(logprobs, ref_logprobs)


class K3Estimator:
    """k3 = e^{-x} - 1 + x: unbiased and ≥ 0 (Schulman 2020, "Approximating KL Divergence").

    Args:
        clamp: bound on |x| before the exponential (`regularizer.kl.estimator.clamp`), or None: exact.
    """

    needs_logits: bool = False

    def __init__(self, clamp: float | None):
        self.clamp = clamp

    def __call__(
        self, logprobs: Tensor, ref_logprobs: Tensor, logits: Tensor | None = None, ref_logits: Tensor | None = None
    ) -> Tensor:
        return kl_k3(logprobs, ref_logprobs, self.clamp)

    @property
    def overflow_hint(self) -> str:
        """How to keep the exponential finite, for a non-finite stop's message ("" once clamped)."""
        return "" if self.clamp is not None else ", clamp the k3 estimator (regularizer.kl.estimator.clamp=20)"


class FullEstimator:
    """Exact per-position KL over the vocabulary; needs both models' logits (TRL's "full")."""

    needs_logits: bool = True
    overflow_hint: str = ""  # no exponential to overflow

    def __call__(
        self, logprobs: Tensor, ref_logprobs: Tensor, logits: Tensor | None = None, ref_logits: Tensor | None = None
    ) -> Tensor:
        if logits is None or ref_logits is None:
            raise ValueError(
                "FullEstimator needs the (B, T, V) logits of both the policy and the reference model; "
                "pass logits= and ref_logits=, or choose a sampled estimator (k1, abs, k2, k3)"
            )
        return kl_full(logits, ref_logits)
