"""Running a per-row computation over a batch in chunks of rows, to bound peak memory."""

from __future__ import annotations

from collections.abc import Callable

import torch


def row_chunks(n_rows: int, chunk_size: int | None) -> list[slice]:
    """Consecutive row slices of at most `chunk_size` rows (one slice of all rows for None)."""
    if chunk_size is None or chunk_size >= n_rows:
        return [slice(0, n_rows)]
    if chunk_size < 1:
        raise ValueError(f"a micro-batch size must be >= 1 (or null), got {chunk_size}")
    return [slice(start, min(start + chunk_size, n_rows)) for start in range(0, n_rows, chunk_size)]


def map_row_chunks(function: Callable[[slice], tuple], n_rows: int, chunk_size: int | None) -> tuple:
    """`function(rows)` on every chunk of rows, its tensors concatenated along rows (None stays None).

    `function` returns a tuple of per-row tensors (or None); the result is that tuple for all rows.
    """
    outputs = [function(rows) for rows in row_chunks(n_rows, chunk_size)]
    return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*outputs))
