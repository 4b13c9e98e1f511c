"""The reward a module optimises: named components, each a model or a function, summed with weights.

    total(row) = Σ_c  w_c · normalise_c(s_c(row))      over the components c that scored the row

A component leaves a row unscored (a function's None) where it has nothing to say about it; the row's total
then sums the others, and a row that no component scored has no total: the module leaves it out of the update.
Normalisation (per component, before the sum) is `none`, `batch` (this batch's mean and std of the scored
rows) or `running` (the mean and std of every training batch so far, Chan et al.'s merge; saved in
checkpoints).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lit_rlhf.errors import ConfigError
from lit_rlhf.ops.distributed import gather_rows
from lit_rlhf.ops.moments import RunningMoments
from lit_rlhf.rewards.completions import Completions, Scores
from lit_rlhf.rewards.function import FunctionReward, run_concurrently

NORMALIZATIONS = ("none", "batch", "running")


@dataclass(frozen=True)
class RewardScores:
    """One batch's rewards.

    Attributes:
        total: (B,) the weighted sum of the normalised components that scored each row (0 where none did).
        scored: (B,) whether any component scored the row.
        components: name -> that component's raw `Scores`.
    """

    total: torch.Tensor
    scored: torch.Tensor
    components: dict[str, Scores]

    def total_or_nan(self) -> torch.Tensor:
        """(B,) the total, NaN where no component scored the row (the plain shape of a gold reward)."""
        return torch.where(self.scored, self.total, torch.full_like(self.total, float("nan")))

    def metrics(self) -> dict[str, torch.Tensor]:
        """`reward/<name>` and `reward/<name>_std` of each component over the rows it scored, and the share of
        rows that no component scored (`reward_unscored`); the total's own mean is the module's `reward`."""
        values = {}
        for name, (scores, scored) in self.components.items():
            values[f"reward/{name}"] = masked_statistic(scores, scored, torch.mean)
            values[f"reward/{name}_std"] = masked_statistic(scores, scored, lambda x: x.std(correction=0))
        values["reward_unscored"] = (~self.scored).float().mean()
        return values


def masked_statistic(values: torch.Tensor, keep: torch.Tensor, statistic) -> torch.Tensor:
    """`statistic` of the kept values; NaN (not logged) when none are kept."""
    kept = values[keep]
    return statistic(kept) if len(kept) else torch.tensor(float("nan"))


def normalized(scores: torch.Tensor, mean: float, std: float, eps: float = 1e-8) -> torch.Tensor:
    """(s - mean) / (std + eps)."""
    return (scores - mean) / (std + eps)


def weighted_total(components: Mapping[str, Scores], weights: Mapping[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) Σ_c w_c · s_c over the components that scored each row (0 where none did), and (B,) whether any did."""
    values = torch.stack([scores.values for scores in components.values()])  # (C, B)
    scored = torch.stack([scores.scored for scores in components.values()])  # (C, B)
    weight = torch.tensor([weights[name] for name in components], dtype=values.dtype).unsqueeze(1)  # (C, 1)
    total = (torch.where(scored, values, torch.zeros_like(values)) * weight).sum(0)
    return total, scored.any(0)


class Reward(nn.Module):
    """Named reward components summed with their weights (`reward` config group).

    Args:
        components: name -> component: a `ModelReward`, `FunctionReward`, verifier, or any callable
            `(Completions) -> (B,) scores` with a `weight` attribute.
        normalize: `none`, `batch` or `running` normalisation of each component before the sum.
        fn: the function of the `reward=function` preset (`reward.fn=my_pkg.my_module.my_fn`), which that
            preset's component reads; unused otherwise.
    """

    def __init__(self, components: Mapping[str, Any], normalize: str, fn: str | None = None):
        super().__init__()
        if not components:
            raise ConfigError("a reward needs at least one component (reward=model, function, math, exact, ...)")
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"unknown reward.normalize '{normalize}'; choose one of: {', '.join(NORMALIZATIONS)}")
        for name, component in components.items():
            if not callable(component) or not hasattr(component, "weight"):
                raise ConfigError(f"reward component '{name}' is not a reward (a callable with a weight)")
            component.name = name
        self.normalize = normalize
        # Model components are submodules, so they move to the module's device and stay out of the optimizers.
        self.models = nn.ModuleDict({name: c for name, c in components.items() if isinstance(c, nn.Module)})
        self.components = dict(components)
        self.moments = {name: RunningMoments() for name in components}

    @property
    def names(self) -> list[str]:
        return list(self.components)

    @property
    def verifiers(self) -> dict[str, Any]:
        """The components that check answers (their mean on greedy samples is the accuracy)."""
        return {name: c for name, c in self.components.items() if getattr(c, "verifier", False)}

    def required_columns(self) -> set[str]:
        return {column for c in self.components.values() for column in getattr(c, "required_columns", ())}

    def check_columns(self, available: set[str], where: str) -> None:
        """ConfigError before any work if a component needs a data column that `where` does not have."""
        for name, component in self.components.items():
            missing = [column for column in getattr(component, "required_columns", ()) if column not in available]
            if missing:
                raise ConfigError(
                    f"reward '{name}' needs the data column '{missing[0]}', which {where} does not have "
                    f"(columns: {', '.join(sorted(available)) or 'none'}); set its column with "
                    f"reward.components.{name}.column=<name>"
                )

    def component_scores(self, completions: Completions) -> dict[str, Scores]:
        """name -> that component's Scores; async components run concurrently."""
        pending = {
            name: c.score_async(completions)
            for name, c in self.components.items()
            if isinstance(c, FunctionReward) and c.is_async
        }
        awaited = dict(zip(pending, run_concurrently(list(pending.values())))) if pending else {}
        scores = {}
        for name, component in self.components.items():
            values, scored = awaited[name] if name in awaited else component(completions)
            if len(values) != len(completions):
                raise ConfigError(f"reward '{name}' gave {len(values)} scores for {len(completions)} completions")
            scores[name] = Scores(values.detach().float().cpu(), scored.cpu())
        return scores

    def forward(self, completions: Completions, update: bool = False) -> RewardScores:
        """Score a batch. `update=True` (training rollouts) also feeds the running normalisation."""
        return self.combine(self.component_scores(completions), update)

    def combine(self, raw: dict[str, Scores], update: bool) -> RewardScores:
        """The total of a whole batch's component scores."""
        shaped = {name: Scores(self._normalized(name, scores, update), scores.scored) for name, scores in raw.items()}
        weights = {name: float(c.weight) for name, c in self.components.items()}
        total, scored = weighted_total(shaped, weights)
        return RewardScores(total=total, scored=scored, components=raw)

    def _normalized(self, name: str, scores: Scores, update: bool) -> torch.Tensor:
        if self.normalize == "none":
            return scores.values
        # Every rank's scores, so the statistics (and the rewards) agree across ranks.
        values, scored = gather_rows(scores.values), gather_rows(scores.scored)
        seen = values[scored]
        if self.normalize == "batch":
            if len(seen) < 2:
                return scores.values - (seen.mean() if len(seen) else 0.0)
            return normalized(scores.values, float(seen.mean()), float(seen.std()))
        if update:
            self.moments[name].update(seen)
        return normalized(scores.values, self.moments[name].mean, self.moments[name].std)

    def stats_state(self) -> dict[str, dict]:
        """The running normalisation's state, for checkpoints."""
        return {name: moments.state_dict() for name, moments in self.moments.items()}

    def load_stats_state(self, state: dict[str, dict]) -> None:
        for name, moments in state.items():
            if name in self.moments:
                self.moments[name].load_state_dict(moments)

    def __call__(self, *args, **kwargs):
        """`reward(completions)` -> RewardScores; `reward(prompts, completions, **columns)` -> (B,) totals,
        the plain shape of a gold reward."""
        if args and isinstance(args[0], Completions):
            return super().__call__(*args, **kwargs)
        prompts, texts = args
        return super().__call__(Completions(list(prompts), list(texts), dict(kwargs))).total_or_nan()


def as_reward(reward: Reward | Callable | None) -> Reward | None:
    """A Reward as it is; a plain `fn(prompts, completions, **columns)` (a task's gold reward) as a one-component
    Reward named `gold`; None as None."""
    if reward is None or isinstance(reward, Reward):
        return reward
    return Reward({"gold": FunctionReward(reward, weight=1.0)}, normalize="none")
