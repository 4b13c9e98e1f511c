"""What a reward sees: completions of their prompts, with the other columns of each prompt's row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch


class Scores(NamedTuple):
    """One component's scores of B completions.

    Attributes:
        values: (B,) float32 on the CPU; 0 where the row is unscored.
        scored: (B,) bool, False where the component has nothing to say about a row (a function's None).
    """

    values: torch.Tensor
    scored: torch.Tensor

    @staticmethod
    def of_all(values: torch.Tensor) -> Scores:
        """Every row scored."""
        values = values.detach().float().cpu().flatten()
        return Scores(values, torch.ones(len(values), dtype=torch.bool))


@dataclass(frozen=True)
class Completions:
    """B completions to score.

    Attributes:
        prompts, completions: the B texts (completions without their stop token).
        columns: every other column of the prompts' rows, as name -> B values (None where a row lacks it),
            passed unchanged to reward functions as keyword arguments.
        sequences, attention_mask: (B, T) the policy's ids of prompt + completion, or None when only texts
            are known (a data set's own responses).
        has_stop: (B,) whether each completion ended on a stop token (None: all of them did).
        lengths: (B,) each completion's length in the policy's tokens (None: unknown).
    """

    prompts: list[str]
    completions: list[str]
    columns: dict[str, list[Any]] = field(default_factory=dict)
    sequences: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    has_stop: torch.Tensor | None = None
    lengths: torch.Tensor | None = None

    def __post_init__(self) -> None:
        size = len(self.prompts)
        if len(self.completions) != size or any(len(values) != size for values in self.columns.values()):
            raise ValueError(
                f"completions to score need one value per row: {size} prompts, {len(self.completions)} completions, "
                f"columns {{{', '.join(f'{name}: {len(values)}' for name, values in self.columns.items())}}}"
            )

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, rows: slice) -> Completions:
        """The completions in `rows`."""

        def part(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor[rows]

        return Completions(
            self.prompts[rows],
            self.completions[rows],
            {name: values[rows] for name, values in self.columns.items()},
            part(self.sequences),
            part(self.attention_mask),
            part(self.has_stop),
            part(self.lengths),
        )

    def stopped(self) -> list[bool]:
        """Whether each completion ended on a stop token."""
        return [True] * len(self) if self.has_stop is None else [bool(stop) for stop in self.has_stop.tolist()]


def columns_of_rows(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Per-row column dicts -> name -> one value per row (None where a row lacks the column)."""
    names = dict.fromkeys(name for row in rows for name in row)
    return {name: [row.get(name) for row in rows] for name in names}


def repeat_columns(columns: dict[str, list[Any]], repeats: int) -> dict[str, list[Any]]:
    """Each row's values repeated `repeats` times in place (rows of several samples per prompt)."""
    return {name: [value for value in values for _ in range(repeats)] for name, values in columns.items()}
