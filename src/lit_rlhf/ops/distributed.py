"""Statistics over every process of a data-parallel run (DDP, FSDP, DeepSpeed).

Each rank holds its own rollout or batch. A quantity that normalises a loss or an advantage (a token
count, a mean, a variance) is taken over all ranks, so N ranks on batches b_1..b_N compute what one
process computes on their concatenation. In a single process every function is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Processes in the default group; 1 without torch.distributed."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group; 0 without torch.distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _collective_device(value: Tensor) -> torch.device:
    """Where a collective can run: NCCL reduces only CUDA tensors, gloo any."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return value.device


def sum_over_ranks(value: Tensor) -> Tensor:
    """The elementwise sum of `value` over ranks (a new tensor on `value`'s device and in its dtype)."""
    if world_size() == 1:
        return value.detach().clone()
    total = value.detach().to(_collective_device(value), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(value.device)


def total_over_ranks(value: float) -> float:
    """A Python number summed over ranks (float64, so token counts stay exact)."""
    return float(sum_over_ranks(torch.tensor(float(value), dtype=torch.float64)))


def mean_over_ranks(value: float) -> float:
    """A Python number averaged over ranks."""
    return total_over_ranks(value) / world_size()


def max_over_ranks(value: float) -> float:
    """The largest of a Python number over ranks (e.g. a signal only some ranks received)."""
    if world_size() == 1:
        return float(value)
    largest = torch.tensor(float(value), dtype=torch.float64)
    largest = largest.to(_collective_device(largest))
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return float(largest)


def every_rank(flag: bool) -> bool:
    """True only when `flag` holds on every rank: a decision all ranks take together (no rank falls behind)."""
    return total_over_ranks(float(not flag)) == 0.0


def gather_rows(values: Tensor) -> Tensor:
    """(B, ...) on each rank -> (W·B, ...), rank 0's rows first. Every rank must hold the same shape."""
    if world_size() == 1:
        return values
    local = values.detach().to(_collective_device(values)).contiguous()
    parts = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local)
    return torch.cat(parts).to(values.device)


def global_masked_whiten(values: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """`ops.masking.masked_whiten` with the mean and unbiased variance over the selected entries of every rank.

    Args:
        values: (B, T) (or any shape) on this rank.
        mask: broadcastable to `values`; true = keep.

    Returns:
        Same shape as `values`: (v − μ) / sqrt(σ² + eps) where selected, 0 elsewhere.
    """
    keep = mask.bool().expand_as(values)
    selected = values.masked_fill(~keep, 0.0)
    count_and_sum = sum_over_ranks(torch.stack([keep.sum().to(values.dtype), selected.sum()]))
    count, mean = count_and_sum[0], count_and_sum[1] / count_and_sum[0]
    squares = sum_over_ranks(((values - mean) ** 2).masked_fill(~keep, 0.0).sum())
    # One selected entry in all has no spread to scale by (as masked_whiten).
    variance = squares / (count - 1) if count > 1 else torch.zeros_like(squares)
    return ((values - mean) * torch.rsqrt(variance + eps)).masked_fill(~keep, 0.0)


def global_mean(values: Tensor) -> Tensor:
    """The mean of every entry of `values` on every rank (a scalar)."""
    count = torch.tensor(values.numel(), dtype=values.dtype, device=values.device)
    count_and_sum = sum_over_ranks(torch.stack([count, values.sum()]))
    return count_and_sum[1] / count_and_sum[0]


def rank_share(local_normalizer: float) -> float:
    """W · (this rank's normaliser) / (the sum over ranks): the weight of a rank's normalised loss.

    Data parallelism averages gradients over the W ranks. A rank whose loss is its own sum over
    `local_normalizer` items, times this weight, makes that average the gradient of one loss over
    all ranks' items: Σ_r sum_r / Σ_r n_r. Ranks with equal normalisers get 1.
    """
    if world_size() == 1:
        return 1.0
    total = total_over_ranks(local_normalizer)
    return world_size() * local_normalizer / total if total > 0 else 1.0
