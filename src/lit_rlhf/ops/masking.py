"""Masked reductions and response masks.

A mask is a bool or 0/1 float tensor broadcastable to the values it selects.
Every reduction here ignores what sits outside the mask, even huge or infinite
values: entries are *selected* with `torch.where`, never multiplied by the mask
(`0 * inf` is NaN).

Response tokens are left-aligned: a row's mask is a run of True followed by
False (padding after the first stop token).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _select(values: Tensor, mask: Tensor) -> Tensor:
    """`values` where the mask is true, 0 elsewhere (same shape as `values`)."""
    return torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))


def _count(values: Tensor, mask: Tensor, dim: int | None) -> Tensor:
    """Number of selected entries, in `values`' dtype (broadcasting the mask first)."""
    selected = mask.bool().expand_as(values).to(values.dtype)
    return selected.sum() if dim is None else selected.sum(dim)


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of the selected entries.

    Args:
        values: (..., T) any shape.
        mask: broadcastable to `values`; true = keep.
        dim: dimension to reduce; None reduces everything to a scalar.
    """
    selected = _select(values, mask)
    return selected.sum() if dim is None else selected.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of the selected entries; NaN where nothing is selected (as `torch.mean` of an empty tensor).

    Args:
        values: (..., T) any shape.
        mask: broadcastable to `values`; true = keep.
        dim: dimension to reduce; None reduces everything to a scalar.
    """
    return masked_sum(values, mask, dim) / _count(values, mask, dim)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of all selected entries (a scalar).

    Args:
        values: any shape.
        mask: broadcastable to `values`; true = keep.
        unbiased: divide by n - 1 (Bessel's correction) instead of n.

    Raises:
        ValueError: fewer than 2 entries selected (1 for the biased variance).
            Checking costs one host sync; this runs once per batch, not per token.
    """
    count = _count(values, mask, None)
    needed = 2 if unbiased else 1
    if count.item() < needed:
        raise ValueError(
            f"masked_var needs at least {needed} selected entries "
            f"(unbiased={unbiased}); the mask selects {int(count.item())}"
        )
    mean = masked_sum(values, mask) / count
    sum_of_squares = masked_sum((values - mean) ** 2, mask)
    return sum_of_squares / (count - 1 if unbiased else count)


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise the selected entries to unit variance (and zero mean if `shift_mean`); 0 outside the mask.

    Statistics are over all selected entries of the batch (unbiased variance),
    as in PPO implementations since OpenAI's lm-human-preferences. A single
    selected entry has nothing to scale by: its variance is taken as 0.

    Args:
        values: any shape, e.g. advantages (B, T).
        mask: broadcastable to `values`; true = keep.
        shift_mean: subtract the mean; if False the original mean is kept
            (only the spread is normalised), as TRL does for rewards.
        eps: added to the variance before the square root.

    Returns:
        Same shape as `values`.
    """
    count = _count(values, mask, None)
    mean = masked_sum(values, mask) / count
    variance = masked_var(values, mask, unbiased=bool(count.item() > 1))
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _select(whitened, mask)


def response_mask(response_ids: Tensor, stop_token_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Mask of the real tokens of generated responses: everything up to and including the first stop token.

    Args:
        response_ids: (B, R) generated token ids (without the prompt).
        stop_token_ids: ids that end a response (EOS, end-of-turn, ...). The pad
            id may be among them: only the first stop token of a row counts.

    Returns:
        mask: (B, R) bool; a row with no stop token is all True (truncated).
        has_stop: (B,) bool; whether the row contains a stop token.
    """
    stop_ids = torch.as_tensor(list(stop_token_ids), dtype=response_ids.dtype, device=response_ids.device)
    is_stop = torch.isin(response_ids, stop_ids)  # (B, R)
    # A token is real while no stop token came strictly before it.
    stops_before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()
    return stops_before == 0, is_stop.any(dim=1)


def last_true_index(mask: Tensor) -> Tensor:
    """Index of the last true entry of every row, e.g. where a sequence reward is read.

    Args:
        mask: (B, T) bool or 0/1.

    Returns:
        (B,) long.

    Raises:
        ValueError: a row has no true entry (costs one host sync).
    """
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, -1).max(dim=1).values
    empty_rows = (last < 0).nonzero().flatten().tolist()
    if empty_rows:
        raise ValueError(f"last_true_index: rows {empty_rows} of the mask have no true entry")
    return last
