"""Reward-model ensembles as one reward source (Coste et al. 2023, "Reward Model Ensembles Help Mitigate
Overoptimization"): the mean, the worst case (min) or the uncertainty-weighted score of K reward models."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lit_rlhf.errors import ConfigError
from lit_rlhf.ops.forward import last_token_rewards

AGGREGATIONS = ("mean", "min", "uncertainty_weighted")


def aggregate_rewards(scores: torch.Tensor, aggregation: str, uncertainty_penalty: float) -> torch.Tensor:
    """Combine the K members' scores of each response into one.

    Args:
        scores: (K, B) member k's score of response b.
        aggregation: `mean`; `min` (worst-case optimisation, WCO); `uncertainty_weighted`
            (UWO): mean − λ·std, the population std across the K members. Coste et al. penalise the
            variance; the std keeps the penalty in reward units.
        uncertainty_penalty: λ of `uncertainty_weighted` (unused by the others).
    Returns:
        (B,) the aggregated scores.
    """
    if aggregation == "mean":
        return scores.mean(0)
    if aggregation == "min":
        return scores.min(0).values
    if aggregation == "uncertainty_weighted":
        return scores.mean(0) - uncertainty_penalty * scores.std(0, correction=0)
    raise ConfigError(f"unknown reward aggregation '{aggregation}'; choose one of: {', '.join(AGGREGATIONS)}")


class RewardEnsemble(nn.Module):
    """K frozen scalar-head reward models scored together and aggregated (`module.reward_aggregation`)."""

    def __init__(self, members: Sequence[nn.Module], aggregation: str, uncertainty_penalty: float):
        super().__init__()
        if not members:
            raise ConfigError("a reward ensemble needs at least one reward model")
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"unknown reward aggregation '{aggregation}'; choose one of: {', '.join(AGGREGATIONS)}")
        self.members = nn.ModuleList(members)
        self.aggregation, self.uncertainty_penalty = aggregation, uncertainty_penalty

    @torch.no_grad()
    def member_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(K, B) each member's reward at each row's last real token."""
        return torch.stack([last_token_rewards(member, input_ids, attention_mask) for member in self.members])

    @torch.no_grad()
    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) the aggregated reward of each row (input_ids, attention_mask: (B, T))."""
        scores = self.member_scores(input_ids, attention_mask)
        return aggregate_rewards(scores, self.aggregation, self.uncertainty_penalty)


def reward_source(reward_model, aggregation: str, uncertainty_penalty: float) -> nn.Module:
    """One reward model as it is; a list of them (`model.reward` as a list) as a RewardEnsemble."""
    if isinstance(reward_model, nn.Module):
        return reward_model
    return RewardEnsemble(list(reward_model), aggregation, uncertainty_penalty)
