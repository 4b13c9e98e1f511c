"""Which gradient a KL term in the loss gives: `regularizer.kl.gradient`.

Tokens are sampled from π_old, x = log π_θ - log π_ref. Tang & Munos 2025 ("On a few pitfalls in KL
divergence gradient estimation for RL", arXiv 2506.09477) and Liu et al. 2025 ("Rethinking KL
Regularization in RLHF", arXiv 2510.01555) show that, on-policy (π_old = π_θ):

- naive: backpropagating the estimator. k1's expected gradient is 0; k3's is ∇KL(π_ref ‖ π_θ), the
  *forward* KL, not the reverse KL(π_θ ‖ π_ref) that GRPO reports and its β is meant to bound;
- straight_through: the estimator's value with k2's gradient, x·∇log π_θ, whose mean is ∇KL(π_θ ‖ π_ref)
  (verl's "k3+" for k3);
- importance_weighted: ρ·k with ρ = π_θ/π_old kept differentiable. For an estimator with
  E_π[k] = KL(π ‖ π_ref) (k1, k3), E_π_old[ρ·k] = KL(π_θ ‖ π_ref) as a function of θ, so the gradient
  is unbiased on- and off-policy (DeepSeek-V3.2's form).

tests/test_kl_gradient.py checks all three against the exact gradients on a categorical policy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_rlhf.regularizers.kl.estimators import kl_k2

KL_GRADIENTS = ("naive", "straight_through", "importance_weighted")


def straight_through_k2(values: Tensor, logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Forward: `values`; backward: ∇k2 = (log π - log π_ref)·∇log π. All (B, T)."""
    k2 = kl_k2(logprobs, ref_logprobs)
    return values.detach() + (k2 - k2.detach())


def importance_weighted(values: Tensor, logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """ρ·values with ρ = exp(log π_θ - log π_old) differentiable; ρ is 1 on padding. All (B, T)."""
    log_ratio = torch.where(mask.bool(), logprobs - old_logprobs, torch.zeros_like(logprobs))
    return torch.exp(log_ratio) * values


def kl_loss_values(
    values: Tensor, logprobs: Tensor, ref_logprobs: Tensor, old_logprobs: Tensor, mask: Tensor, gradient: str
) -> Tensor:
    """The per-token KL term to aggregate into the loss, with the chosen gradient. All (B, T).

    Args:
        values: the estimator's per-token KL, with its own graph through `logprobs`.
        logprobs: log π_θ with grad; ref_logprobs, old_logprobs: from the rollout; mask: real tokens.
        gradient: one of KL_GRADIENTS.
    """
    if gradient == "naive":
        return values
    if gradient == "straight_through":
        return straight_through_k2(values, logprobs, ref_logprobs)
    return importance_weighted(values, logprobs, old_logprobs, mask)
