"""Reward-model losses on pairs of scalar rewards (chosen/better, rejected/worse).

Every loss returns one value per pair, (P,); the module takes the mean, so
InstructGPT's 1/C(K,2) weighting of K-wise rankings is just a mean over the
pairs of `ranked_pair_indices`.
The classes are the Hydra group `loss/reward`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def bradley_terry_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """-log σ(r_w - r_l): the negative log-likelihood of the preference under a Bradley-Terry model.

    Bradley & Terry 1952, "Rank Analysis of Incomplete Block Designs: I. The
    Method of Paired Comparisons"; as used by Ouyang et al. 2022, "Training
    language models to follow instructions with human feedback".

    Args:
        chosen_rewards: (P,) r_θ(x, y_w).
        rejected_rewards: (P,) r_θ(x, y_l).

    Returns:
        (P,).
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards)  # logsigmoid: no overflow for large gaps


def margin_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, margin: Tensor) -> Tensor:
    """-log σ(r_w - r_l - m): the chosen reward must win by at least the labelled margin.

    Touvron et al. 2023, "Llama 2: Open Foundation and Fine-Tuned Chat Models".

    Args:
        chosen_rewards: (P,).
        rejected_rewards: (P,).
        margin: (P,) m(r) ≥ 0, e.g. the difference of the labellers' Likert scores.

    Returns:
        (P,).
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards - margin)


def reward_centering_penalty(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """(r_w + r_l)²: pulls the rewards of every pair towards zero mean.

    Bradley-Terry only sees reward differences, so the offset drifts freely;
    this auxiliary term pins it (Eisenstein et al. 2023, "Helping or Herding?
    Reward Model Ensembles Mitigate but do not Eliminate Reward Hacking").

    Args:
        chosen_rewards: (P,).
        rejected_rewards: (P,).

    Returns:
        (P,).
    """
    return (chosen_rewards + rejected_rewards).square()


def ranked_pair_indices(group_sizes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """All K(K-1)/2 (better, worse) pairs of K-wise rankings, as flat indices into the concatenated groups.

    Ouyang et al. 2022, "Training language models to follow instructions with
    human feedback": every ranking of K completions yields all C(K, 2) pairs.
    Sequences are flattened group after group, each group best-first. Order:
    group by group; inside a group of offset o, pairs (o+i, o+j) for i < j in
    row-major order (0,1), (0,2), …, (0,K-1), (1,2), …, (K-2,K-1).

    Args:
        group_sizes: K ≥ 1 for each group (a group of 1 gives no pair).

    Returns:
        better: (P,) long, index of the higher-ranked sequence of each pair.
        worse: (P,) long, index of the lower-ranked one.
    """
    better, worse = [], []
    offset = 0
    for size in group_sizes:
        if size < 1:
            raise ValueError(
                f"ranked_pair_indices: every group needs at least one sequence, got sizes {list(group_sizes)}"
            )
        rows, cols = torch.triu_indices(size, size, offset=1)  # i < j, row-major
        better.append(rows + offset)
        worse.append(cols + offset)
        offset += size
    if not better:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(better), torch.cat(worse)


class BradleyTerryLoss:
    """Pairwise -log σ(r_w - r_l) (Bradley & Terry 1952; Ouyang et al. 2022, InstructGPT)."""

    uses_margin: bool = False

    def __call__(self, chosen: Tensor, rejected: Tensor, margin: Tensor | None = None) -> Tensor:
        """chosen, rejected: (P,); margin ignored -> (P,)."""
        return bradley_terry_loss(chosen, rejected)


class MarginLoss:
    """Pairwise -log σ(r_w - r_l - scale·m).

    Touvron et al. 2023, "Llama 2: Open Foundation and Fine-Tuned Chat Models".

    Args:
        scale: multiplies the labelled margin (1 uses it as given; < 1 softens
            margins on a wide rating scale).
    """

    uses_margin: bool = True

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, chosen: Tensor, rejected: Tensor, margin: Tensor | None = None) -> Tensor:
        """chosen, rejected, margin: (P,) -> (P,)."""
        if margin is None or torch.isnan(margin).any():
            raise ValueError(
                "the margin loss needs a margin for every pair, but some pairs have none; "
                "use data that labels a margin for every pair, or the Bradley-Terry loss"
            )
        return margin_loss(chosen, rejected, self.scale * margin)
