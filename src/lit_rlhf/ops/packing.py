"""Packed rows: shared prompts and padding-free batches, as a layout, a 4D attention mask and position ids.

Prefix sharing (Wang et al. 2024, "Accelerating Direct Preference Optimization with Prefix
Sharing"): completions of one prompt become ONE unit `[prompt | response_1 | response_2 ...]`;
each response attends to the prompt and to its own earlier tokens, never to a sibling, and its
position ids continue from the prompt's end, so every token sees exactly the context (and the
positions) it has in its own padded row, and the prompt is encoded once.

Padding-free batches: several units share a row, a block-diagonal mask keeps them apart and each
unit's positions restart at 0, so the rows hold (almost) no padding.

The layout is index bookkeeping on the host (a few Python loops over the N sequences of a batch);
the mask is built on the device from two (R, L) tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# `unit` of a padding slot of a packed row: it belongs to no unit.
NO_UNIT = -1


@dataclass(frozen=True)
class PackedLayout:
    """Where each token of N right-padded sequences sits in R packed rows of width L.

    Attributes:
        place: (N, T) long, the flat index row * L + column of token t of sequence n; -1 for its padding.
            Tokens of a shared prompt have the same place in every sequence of the unit.
        unit: (R, L) long, the unit (one prompt's completions, or one sequence) a slot belongs to within
            its row; NO_UNIT for padding.
        branch: (R, L) long, 0 for a unit's shared prefix, k + 1 for the own tokens of its k-th sequence.
    """

    place: Tensor
    unit: Tensor
    branch: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        """(R, L)."""
        return tuple(self.unit.shape)


def prompt_lengths(response_mask: Tensor, lengths: Tensor) -> Tensor:
    """(N,) tokens before each response: the prefix a sequence may share with its siblings.

    Args:
        response_mask: (N, T-1) True where the next token (t + 1) is a response token.
        lengths: (N,) real tokens per sequence (an empty response: all of them are prompt).
    """
    first = response_mask.long().argmax(dim=1) + 1
    return torch.where(response_mask.any(dim=1), first, lengths)


def prefix_groups(sequences: list[list[int]], prefix_lengths: list[int]) -> list[list[int]]:
    """Indices of consecutive sequences that start with the same prefix (same length, same ids), group by group.

    Sharing needs only identical tokens: two records with the same prompt may share it too.
    """
    groups: list[list[int]] = []
    for n, (ids, length) in enumerate(zip(sequences, prefix_lengths)):
        if groups:
            head = groups[-1][0]
            if length > 0 and length == prefix_lengths[head] and ids[:length] == sequences[head][:length]:
                groups[-1].append(n)
                continue
        groups.append([n])
    return groups


def first_fit_rows(unit_lengths: list[int], capacity: int) -> list[list[int]]:
    """Units per row, first-fit over the units longest first: no row exceeds `capacity` tokens.

    With capacity = the longest unit, no packed row is longer than the longest padded row.
    """
    rows: list[list[int]] = []
    free: list[int] = []
    for unit in sorted(range(len(unit_lengths)), key=lambda u: -unit_lengths[u]):
        row = next((r for r, space in enumerate(free) if space >= unit_lengths[unit]), None)
        if row is None:
            rows.append([])
            free.append(capacity)
            row = len(rows) - 1
        rows[row].append(unit)
        free[row] -= unit_lengths[unit]
    return rows


def pack_layout(
    input_ids: Tensor,
    attention_mask: Tensor,
    target_mask: Tensor,
    share_prefixes: bool,
    padding_free: bool,
    row_length: int | None = None,
) -> PackedLayout:
    """The layout of a right-padded batch: units (shared prompts or single sequences) placed in rows.

    Args:
        input_ids, attention_mask: (N, T) right-padded.
        target_mask: (N, T-1) True where the next token is a response token (it marks each prompt's end).
        share_prefixes: consecutive sequences with the same prompt form one unit (else one unit each).
        padding_free: several units per row (else one unit per row).
        row_length: the most tokens a padding-free row holds; None (or fewer than the longest unit) is the
            longest unit's length, so no packed row is longer than the longest padded row and a dense mask's
            attention cost (rows x length^2) never grows; a longer row packs more but attends over more.

    Returns:
        A PackedLayout on `input_ids`' device.
    """
    lengths = attention_mask.sum(1)
    lengths_list = lengths.tolist()
    sequences = [row[:length] for row, length in zip(input_ids.tolist(), lengths_list)]
    shared = prompt_lengths(target_mask, lengths).tolist() if share_prefixes else [0] * len(sequences)
    groups = prefix_groups(sequences, shared)
    # Unit g: its group's prefix once, then every member's tokens after it.
    unit_lengths = [shared[g[0]] + sum(lengths_list[n] - shared[g[0]] for n in g) for g in groups]
    capacity = max(max(unit_lengths), row_length or 0)
    rows = first_fit_rows(unit_lengths, capacity) if padding_free else [[g] for g in range(len(groups))]
    width = max(sum(unit_lengths[g] for g in row) for row in rows)

    place = torch.full(input_ids.shape, -1, dtype=torch.long)
    unit = torch.full((len(rows), width), NO_UNIT, dtype=torch.long)
    branch = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for u, g in enumerate(row):
            prefix = shared[groups[g][0]]
            unit[r, start : start + unit_lengths[g]] = u
            own = start + prefix  # where the next member's own tokens go
            for k, n in enumerate(groups[g]):
                size = lengths_list[n] - prefix
                branch[r, own : own + size] = k + 1
                place[n, :prefix] = torch.arange(start, start + prefix) + r * width
                place[n, prefix : lengths_list[n]] = torch.arange(own, own + size) + r * width
                own += size
            start += unit_lengths[g]
    device = input_ids.device
    return PackedLayout(place.to(device), unit.to(device), branch.to(device))


def pack_values(values: Tensor, layout: PackedLayout, fill: int | float) -> Tensor:
    """(R, L) the per-token `values` (N, T) moved to their packed places; `fill` in padding slots.

    A shared prompt token is written once per sequence of its unit, always with the same value.
    """
    rows, width = layout.shape
    packed = values.new_full((rows * width,), fill)
    real = layout.place >= 0
    packed[layout.place[real]] = values[real]
    return packed.view(rows, width)


def attention_allowed(layout: PackedLayout) -> Tensor:
    """(R, 1, L, L) bool: query i may attend to key j (True) in the packed rows.

    j <= i in the same unit, and j is in the shared prefix or in i's own branch. Padding attends to
    itself only, so no softmax row is empty (sdpa gives NaN for those).
    """
    width = layout.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=layout.unit.device).tril()  # (L, L)
    query_unit, key_unit = layout.unit[:, :, None], layout.unit[:, None, :]  # (R, L, 1), (R, 1, L)
    query_branch, key_branch = layout.branch[:, :, None], layout.branch[:, None, :]
    same_unit = (query_unit == key_unit) & (key_unit != NO_UNIT)
    visible = (key_branch == 0) | (key_branch == query_branch)
    allowed = causal & same_unit & visible  # (R, L, L)
    allowed |= torch.eye(width, dtype=torch.bool, device=allowed.device)
    return allowed[:, None]


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """The bool mask as eager attention adds it to the scores: 0 where allowed, the dtype's minimum elsewhere."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)
