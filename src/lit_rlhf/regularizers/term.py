from __future__ import annotations

from typing import NamedTuple

import torch


class RegularizerTerm(NamedTuple):
    """A term added to a loss, and what to log about it (names without the `train/` prefix)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]

    @classmethod
    def zero(cls, like: torch.Tensor) -> RegularizerTerm:
        return cls(like.new_zeros(()), {})
