"""What happens to the reward model's score before it becomes a reward: normalisation and clipping.

Scores from a learned reward model have an arbitrary offset and scale, and a few extreme ones can
dominate an update. DeepSpeed-Chat clips them (`clip_reward_value`, seed 003); TRL's PPO and OpenRLHF
normalise them by running statistics (`use_score_scaling`/`use_score_norm`, `normalize_reward`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_rlhf.errors import ConfigError
from lit_rlhf.ops.distributed import gather_rows
from lit_rlhf.ops.moments import RunningMoments


def normalize_scores(scores: Tensor, mean: float, std: float, eps: float = 1e-8) -> Tensor:
    """(s - mean) / (std + eps), elementwise. (B,) -> (B,)."""
    return (scores - mean) / (std + eps)


class ScoreShaping:
    """Running normalisation, then clipping to [-clip, clip] (in std units when normalising).

    Args:
        clip: the bound c of clamp(s, -c, c), or None (DeepSpeed-Chat's `clip_reward_value`).
        normalize: divide (s - running mean) by the running std of all scores so far, this batch included.
    """

    def __init__(self, clip: float | None, normalize: bool):
        if clip is not None and not clip > 0:
            raise ConfigError(f"module.reward_clip must be > 0 (or null), got {clip}")
        self.clip, self.normalize = clip, normalize
        self.moments = RunningMoments()

    def __call__(self, scores: Tensor, update: bool) -> Tensor:
        """(B,) shaped scores. `update=False` shapes without learning from them (a baseline's scores)."""
        if self.normalize:
            if update:
                # Every rank's scores, so the moments (and the shaping) are the same on all ranks.
                self.moments.update(gather_rows(scores))
            scores = normalize_scores(scores, self.moments.mean, self.moments.std)
        if self.clip is not None:
            scores = torch.clamp(scores, -self.clip, self.clip)
        return scores

    def state_dict(self) -> dict[str, Any]:
        return self.moments.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.moments.load_state_dict(state)
