"""Which examples each data-parallel rank reads: its share of one seeded order.

Lightning's own DistributedSampler replacement is switched off (`trainer.use_distributed_sampler:
false`): it would drop the samplers' resumable state, and its order differs from a single process's.
Here rank r of W reads positions r, r + W, r + 2W, ... of the epoch's permutation, so W ranks with
batch b read, batch by batch, the same examples as one process with batch W·b; and the sampler's
state (epoch, examples drawn) is saved with the loader, so a killed run resumes mid-epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler
from torch.utils.data.distributed import DistributedSampler


def shard_of_permutation(permutation: list[int], rank: int, world_size: int) -> list[int]:
    """Every W-th entry from `rank` on, cut to ⌊n/W⌋ so all ranks read as many (the remainder is left out)."""
    per_rank = len(permutation) // world_size
    return permutation[rank::world_size][:per_rank]


class ShardedShuffle(Sampler[int]):
    """A rank's share of a seeded shuffle, one new permutation per pass; resumable (torchdata's protocol).

    Args:
        size: examples in the dataset.
        seed: pass p's permutation is drawn from seed + p (identical on every rank).
        rank, world_size: this process and the number of data-parallel processes.
        num_samples: indices one rank draws per pass (default: its share of one permutation); more than
            that continues into further permutations (a pretraining corpus drawn for every prompt batch).
    """

    def __init__(self, size: int, seed: int, rank: int, world_size: int, num_samples: int | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if size < world_size:
            raise ValueError(f"{size} examples cannot be shared by {world_size} ranks")
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.num_samples = size // world_size if num_samples is None else num_samples
        self.passes, self.drawn = 0, 0
        self._resuming, self._started = False, False

    def __len__(self) -> int:
        return self.num_samples

    def indices(self, pass_number: int) -> list[int]:
        """This rank's indices of one pass, in order."""
        chosen, permutation_number = [], 0
        while len(chosen) < self.num_samples:
            generator = torch.Generator().manual_seed(self.seed + pass_number + 7919 * permutation_number)
            permutation = torch.randperm(self.size, generator=generator).tolist()
            chosen += shard_of_permutation(permutation, self.rank, self.world_size)
            permutation_number += 1
        return chosen[: self.num_samples]

    def __iter__(self) -> Iterator[int]:
        # A new pass unless a loaded state says where the interrupted one stood.
        if not self._resuming:
            if self._started:
                self.passes += 1
            self.drawn = 0
        self._resuming, self._started = False, True
        return self._draw(self.indices(self.passes)[self.drawn :])

    def _draw(self, remaining: list[int]) -> Iterator[int]:
        for index in remaining:
            self.drawn += 1
            yield index

    def state_dict(self) -> dict[str, Any]:
        return {"passes": self.passes, "drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.passes, self.drawn = int(state["passes"]), int(state["drawn"])
        self._resuming, self._started = True, True


def evaluation_shard(dataset, rank: int, world_size: int) -> Sampler[int] | None:
    """Validation in order, rank r reading every W-th example (None: one process reads all in order).

    Ranks must run as many validation batches (sharded weights are gathered in every forward), so the
    first examples are repeated to fill the last share, as Lightning does: with W > 1 up to W − 1
    examples count twice.
    """
    if world_size == 1:
        return None
    return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
