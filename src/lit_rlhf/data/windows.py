"""Accumulation windows: training batches drawn N at a time, each told the response-token total of its window.

Under `trainer.accumulate_grad_batches=N` Lightning sums the gradients of N consecutive batches (counted
from each epoch's first batch) into one optimizer step, and divides every batch's loss by N, the last,
shorter window of an epoch included. For the accumulated gradient to be that of the token mean over the
whole window, each batch must divide its NLL sum by the window's token count, which only the sampler
knows before the window's batches are collated: `AccumulationWindows` draws a window's batches at once
and keys every index with the window's total (`WindowKey`); `WindowedRows` hands the total on with each
item, and `collate_sft_window` puts it in `SFTBatch.window_tokens`.

The iterator is stateful (torchdata's protocol), so a StatefulDataLoader checkpoints it mid-window and a
resumed run continues with the same batches and the same totals.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pyarrow.compute as pc
import torch.utils.data
from torch.utils.data import Dataset
from torchdata.stateful_dataloader.sampler import BatchSampler
from torchdata.stateful_dataloader.stateful import Stateful

from lit_rlhf.data.collate import SFTItem
from lit_rlhf.data.tokenized import SFTRows


class WindowKey(NamedTuple):
    """An example's index, and the response-token total of the accumulation window its batch belongs to."""

    index: int
    window_tokens: int


def response_token_counts(rows: SFTRows) -> np.ndarray:
    """(len(rows),) response tokens each example is trained on: the True entries of its `loss_mask` row.

    `response_target_mask` marks targets max(prompt_length, 1) <= t+1 < len(ids); computed from the
    Arrow columns, so no row is read into Python.
    """
    lengths = pc.list_value_length(pc.list_flatten(rows.table.data.column("ids"))).to_numpy()
    prompt_lengths = pc.list_flatten(rows.table.data.column("prompt_lengths")).to_numpy()
    return np.maximum(lengths.astype(np.int64) - np.maximum(prompt_lengths.astype(np.int64), 1), 0)


def epoch_batches(num_batches: int, limit: int | float | None) -> int:
    """The batches Lightning draws per epoch under `trainer.limit_train_batches` (its `_parse_num_batches`)."""
    if limit is None:
        return num_batches
    if isinstance(limit, int):
        return min(num_batches, limit)
    return int(num_batches * limit)


class AccumulationWindows(torch.utils.data.BatchSampler):
    """Batches of `batch_size` indices, drawn `accumulate` batches at a time, keyed with their window's tokens.

    The order is that of torchdata's `BatchSampler(sampler, batch_size, drop_last)`: only the keys are added.
    Under data parallelism each rank's sampler is its shard (`data.sharding`), and SFT weighs each rank's
    window by its part of all ranks' window tokens.

    Args:
        sampler: the example order (this rank's seeded, stateful `ShardedShuffle` for training).
        batch_size, drop_last: as in torch's BatchSampler.
        token_counts: (len(dataset),) response tokens of each example (`response_token_counts`).
        accumulate: N, the trainer's `accumulate_grad_batches`.
        limit_batches: the trainer's `limit_train_batches` (None for the whole epoch): the last window
            ends where the trainer stops drawing.
    """

    def __init__(
        self,
        sampler,
        batch_size: int,
        drop_last: bool,
        token_counts: np.ndarray,
        accumulate: int,
        limit_batches: int | float | None = None,
    ):
        super().__init__(sampler, batch_size, drop_last)
        if accumulate < 1:
            raise ValueError(f"accumulate must be a positive integer, got {accumulate}")
        self.token_counts, self.accumulate, self.limit_batches = token_counts, accumulate, limit_batches
        self.max_batches = epoch_batches(len(self), limit_batches)

    def __iter__(self) -> _WindowIterator:
        return _WindowIterator(self)

    # __len__ stays the full epoch's: Lightning applies limit_train_batches to it itself.


class _WindowIterator(Iterator[list[WindowKey]], Stateful):
    """One epoch of keyed batches; its state is the batch iterator's at the window start and the batches taken."""

    def __init__(self, windows: AccumulationWindows):
        self.windows = windows
        self.batches = iter(BatchSampler(windows.sampler, windows.batch_size, windows.drop_last))
        self.window_start: dict[str, Any] = self.batches.state_dict()
        self.window: list[list[WindowKey]] = []
        self.taken = 0  # batches of the current window already yielded
        self.before = 0  # batches of this epoch before the current window

    def _draw(self) -> None:
        """Read the next window's batches (fewer at the epoch's end) and key them with their token total."""
        self.before += len(self.window)
        self.window_start, self.taken = self.batches.state_dict(), 0
        size = min(self.windows.accumulate, self.windows.max_batches - self.before)
        batches = [batch for _, batch in zip(range(size), self.batches)]
        total = int(sum(int(self.windows.token_counts[batch].sum()) for batch in batches))
        self.window = [[WindowKey(int(i), total) for i in batch] for batch in batches]

    def __next__(self) -> list[WindowKey]:
        if self.taken == len(self.window):
            self._draw()
            if not self.window:
                raise StopIteration
        self.taken += 1
        return self.window[self.taken - 1]

    def state_dict(self) -> dict[str, Any]:
        return {"window_start": self.window_start, "taken": self.taken, "before": self.before}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Re-draw the current window from its start and skip the batches already taken."""
        self.batches.load_state_dict(state_dict["window_start"])
        self.window, self.before = [], state_dict["before"]
        self._draw()
        self.taken = state_dict["taken"]


class WindowedRows(Dataset):
    """SFT rows looked up by `WindowKey`: each item comes with its window's token total."""

    def __init__(self, rows: SFTRows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: WindowKey) -> tuple[SFTItem, int]:
        return self.rows[key.index], key.window_tokens
