"""A trained reward model (or an ensemble of them) as a reward component.

Ensembles follow Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization": the mean, the
worst case (min) or the uncertainty-weighted score of K reward models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from lit_rlhf.errors import ConfigError
from lit_rlhf.models.reward_inputs import own_tokenizer, reward_model_inputs
from lit_rlhf.ops.forward import last_token_rewards
from lit_rlhf.rewards.completions import Scores

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
    """K frozen scalar-head reward models scored together and aggregated."""

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


class ModelReward(nn.Module):
    """A frozen scalar-head reward model scoring prompt + completion at its last token (Ouyang et al. 2022).

    It reads the policy's token ids when it shares the policy's tokenizer; a reward model with a
    tokenizer of its own scores the texts re-tokenized its way (`lit_rlhf.models.reward_inputs`), as
    does any model when only texts are known.

    Args:
        model: a trained reward model, or a list of them (an ensemble read on the policy's ids).
        tokenizer: the policy's tokenizer.
        aggregation: how an ensemble's scores combine: mean, min or uncertainty_weighted.
        uncertainty_penalty: λ of uncertainty_weighted.
        weight: its weight in the mix.
    """

    verifier = False
    required_columns: tuple[str, ...] = ()

    def __init__(
        self,
        model,
        tokenizer: PreTrainedTokenizerBase,
        aggregation: str,
        uncertainty_penalty: float,
        weight: float,
    ):
        super().__init__()
        if isinstance(model, nn.Module):
            self.model = model.eval().requires_grad_(False)
            own = own_tokenizer(model, tokenizer)
            self.ensemble = False
        else:
            self.model = RewardEnsemble(list(model), aggregation, uncertainty_penalty).eval().requires_grad_(False)
            own = None
            self.ensemble = True
        # Texts are tokenized with the model's own tokenizer, or the policy's when they share one.
        self.own_tokenizer = own
        self.text_tokenizer = own if own is not None else tokenizer
        self.weight, self.name = weight, "model"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def forward(self, completions) -> Scores:
        """Every completion's score (a NaN here is a fault, not a missing score)."""
        ids, mask = completions.sequences, completions.attention_mask
        if ids is None or self.own_tokenizer is not None:
            if self.ensemble and ids is None:
                raise ConfigError("a reward-model ensemble scores the policy's token ids; it cannot score texts alone")
            stops = torch.tensor(completions.stopped())
            ids, mask = reward_model_inputs(self.text_tokenizer, completions.prompts, completions.completions, stops)
        ids, mask = ids.to(self.device), mask.to(self.device)
        scores = self.model.score(ids, mask) if self.ensemble else last_token_rewards(self.model, ids, mask)
        return Scores.of_all(scores)
