"""Divergences between a student π_s and a teacher π_t over the vocabulary, per position of a response.

On-policy distillation scores the student's own samples by how far its next-token distribution is from
the teacher's (Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes" (GKD); Gu et al. 2024, "MiniLLM: Knowledge Distillation of Large Language
Models"). The sampled estimate of the reverse KL is the KL penalty's k1 (`regularizers.kl.estimators`);
the exact one is its `kl_full`. This file adds the generalized Jensen-Shannon divergence of GKD, whose
β moves from the forward KL (β = 0) to the reverse KL (β = 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_rlhf.errors import ConfigError


def _log_softmax(logits: Tensor) -> Tensor:
    """log-softmax in at least float32, with -inf logits (banned tokens) clamped so 0 · -inf is never NaN."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return torch.log_softmax(logits.to(dtype).clamp(min=torch.finfo(dtype).min), dim=-1)


def _kl_of_log_probs(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Σ_v p(v) (log p(v) - log q(v)) over the last dimension: (..., V) -> (...)."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float) -> Tensor:
    """GKD's generalized Jensen-Shannon divergence at every position (Agarwal et al. 2024, eq. 1).

        M = β·π_t + (1 - β)·π_s,    JSD_β = β·KL(π_t ‖ M) + (1 - β)·KL(π_s ‖ M)

    Its ends are taken as the two KLs it interpolates (as TRL's `generalized_jsd_loss` does): β = 0 is the
    forward KL(π_t ‖ π_s) (mode-covering, what supervised distillation minimises) and β = 1 the reverse
    KL(π_s ‖ π_t) (mode-seeking, what the on-policy reward minimises). In between it is bounded by the
    binary entropy H(β) ≤ log 2, unlike the KLs at its ends: the loss weight sets the scale.

    Args:
        student_logits: (B, T, V) the student's logits, with gradients.
        teacher_logits: (B, T, V) the teacher's at the same positions (no gradient needed).
        beta: in [0, 1].

    Returns:
        (B, T), ≥ 0, float32 (float64 for float64 logits); differentiable in `student_logits`.
    """
    check_jsd_beta(beta)
    log_s, log_t = _log_softmax(student_logits), _log_softmax(teacher_logits)
    if beta == 0.0:
        return _kl_of_log_probs(log_t, log_s)
    if beta == 1.0:
        return _kl_of_log_probs(log_s, log_t)
    # log M = logsumexp(log β + log π_t, log(1-β) + log π_s): stable where either probability underflows.
    log_mixture = torch.logaddexp(log_t + math.log(beta), log_s + math.log(1.0 - beta))
    return beta * _kl_of_log_probs(log_t, log_mixture) + (1.0 - beta) * _kl_of_log_probs(log_s, log_mixture)


def check_jsd_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(f"regularizer.distill.beta must lie in [0, 1] (0: forward KL, 1: reverse KL), got {beta}")
