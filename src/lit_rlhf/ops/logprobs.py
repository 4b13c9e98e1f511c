"""Per-token log-probabilities and entropies from language-model logits.

Logits are the biggest tensors in RLHF, (B, T, V) with V ~ 32k-256k, so both
functions work one batch row at a time: the softmax buffers they need are
(T, V), never a second (B, T, V). Low-precision logits (bf16/fp16) are upcast
row by row to float32, because a logsumexp over a large vocabulary in bf16
loses about two significant digits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# Logit elements (positions x vocabulary) one chunk holds: 2^26 floats = 256 MiB in float32, i.e.
# ~440 positions of a 152k vocabulary, or everything at once for a small one.
CHUNK_LOGIT_ELEMENTS = 2**26


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


def chunked_head_logprobs(
    hidden: Tensor, head: nn.Linear, labels: Tensor, with_entropy: bool, chunk_tokens: int | None
) -> tuple[Tensor, Tensor | None]:
    """Log-probs (and entropies) of `labels` through the LM head, a chunk of positions at a time.

    The (B, T, V) logits never exist: each chunk's (c, V) logits are made, reduced to (c,)
    and dropped. Under autograd each chunk is checkpointed, so the backward pass remakes
    one chunk's logits at a time instead of keeping all of them.

    Args:
        hidden: (B, T, H) last hidden states, aligned with `labels` (position t predicts labels[:, t]).
        head: the LM head, (c, H) -> (c, V), with its (V, H) `weight`.
        labels: (B, T) token ids.
        with_entropy: also return the entropy of each next-token distribution.
        chunk_tokens: positions per chunk; None sizes chunks to CHUNK_LOGIT_ELEMENTS.

    Returns:
        logprobs (B, T) and entropies (B, T) or None, in float32 (float64 for a float64 head).
    """
    batch, length = labels.shape
    flat_hidden, flat_labels = hidden.reshape(batch * length, -1), labels.reshape(-1)

    def reduce(h: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = head(h)  # (c, V)
        logits = logits.to(_compute_dtype(logits))
        normalisers = torch.logsumexp(logits, dim=-1)
        logprobs = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1) - normalisers
        if not with_entropy:
            return logprobs, logprobs.new_empty(0)
        logits = logits.clamp(min=torch.finfo(logits.dtype).min)
        return logprobs, normalisers - (torch.softmax(logits, dim=-1) * logits).sum(-1)

    chunk_tokens = chunk_tokens or max(1, CHUNK_LOGIT_ELEMENTS // head.weight.shape[0])
    logprobs, entropies = [], []
    for h, y in zip(flat_hidden.split(chunk_tokens), flat_labels.split(chunk_tokens)):
        if torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(reduce, h, y, use_reentrant=False)
        else:
            lp, ent = reduce(h, y)
        logprobs.append(lp)
        entropies.append(ent)
    logprobs = torch.cat(logprobs).reshape(batch, length)
    return logprobs, torch.cat(entropies).reshape(batch, length) if with_entropy else None
