"""Per-token log-probabilities and entropies from language-model logits.

Logits are the biggest tensors in RLHF, (B, T, V) with V ~ 32k-256k, so both
functions work one batch row at a time: the softmax buffers they need are
(T, V), never a second (B, T, V). Low-precision logits (bf16/fp16) are upcast
row by row to float32, because a logsumexp over a large vocabulary in bf16
loses about two significant digits.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _compute_dtype(logits: Tensor) -> torch.dtype:
    """float32, or float64 when the logits already are."""
    return torch.promote_types(logits.dtype, torch.float32)


def token_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """log π(label_t | context_t): the log-softmax of the logits, read at the labels.

    Computed as logit[label] - logsumexp(logits), which needs no full
    log-softmax tensor: the gather is (B, T) and each row's logsumexp buffer is
    (T, V). Autograd keeps nothing vocabulary-sized beyond the logits themselves.

    Args:
        logits: (B, T, V) next-token logits, already aligned with `labels`
            (i.e. `model(ids).logits[:, :-1]` for `labels = ids[:, 1:]`).
        labels: (B, T) token ids in [0, V). Ignored positions (padding) must hold
            a valid id (e.g. the pad id) and be masked out by the caller.

    Returns:
        (B, T) log-probabilities in float32 (float64 for float64 logits).
    """
    dtype = _compute_dtype(logits)
    label_logits = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1).to(dtype)  # (B, T)
    normalisers = torch.stack([torch.logsumexp(row.to(dtype), dim=-1) for row in logits])  # (B, T)
    return label_logits - normalisers


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy H(π(· | context_t)) = logsumexp(l) - Σ_v softmax(l)_v · l_v of every next-token distribution.

    Args:
        logits: (B, T, V).

    Returns:
        (B, T) entropies in nats, float32 (float64 for float64 logits).
    """
    dtype = _compute_dtype(logits)
    entropies = []
    for row in logits:  # row: (T, V)
        # -inf logits (banned tokens) would give 0 * -inf = NaN; the most negative float gives 0.
        row = row.to(dtype).clamp(min=torch.finfo(dtype).min)
        probs = torch.softmax(row, dim=-1)
        entropies.append(torch.logsumexp(row, dim=-1) - (probs * row).sum(dim=-1))
    return torch.stack(entropies)
