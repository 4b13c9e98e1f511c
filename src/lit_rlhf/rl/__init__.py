"""What only reinforcement learning needs: advantage estimators and the experience of a rollout.

* `advantages`: GAE with a critic, the critic-free REINFORCE, RLOO, GRPO and ReMax baselines, and
  per-token REINFORCE for dense rewards (`advantage` group), each a pure function plus the object a config builds;
* `trust_region`: PPO-Clip (with clip-higher and dual clip) and PPO-Penalty (`trust_region` group);
* `reward_shaping`: the score's running normalisation and clipping;
* `experience`: the typed tuple one rollout produces.
"""

from lit_rlhf.rl.advantages import (
    GAE,
    RLOO,
    GroupRelative,
    ReinforceBaseline,
    ReMax,
    TokenReturns,
    gae,
    group_relative_advantages,
    reinforce_baseline_advantages,
    rloo_advantages,
)
from lit_rlhf.rl.experience import Experience
from lit_rlhf.rl.reward_shaping import ScoreShaping, normalize_scores
from lit_rlhf.rl.trust_region import AdaptiveOldPolicyKL, RatioClip, TrustRegion

__all__ = [
    "GAE",
    "RLOO",
    "AdaptiveOldPolicyKL",
    "Experience",
    "GroupRelative",
    "RatioClip",
    "ReMax",
    "ReinforceBaseline",
    "ScoreShaping",
    "TokenReturns",
    "TrustRegion",
    "gae",
    "group_relative_advantages",
    "normalize_scores",
    "reinforce_baseline_advantages",
    "rloo_advantages",
]
