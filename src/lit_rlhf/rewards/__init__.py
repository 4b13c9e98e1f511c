"""Rewards: what PPO, RLOO, GRPO, ReMax, best-of-n and `evaluate` optimise or measure.

A `Reward` sums named components with weights (`reward` config group): trained reward models
(`ModelReward`), a user's functions `fn(prompts, completions, **columns)` (`FunctionReward`), and
built-in verifiers (`MathVerifier`, `ExactMatch`, `FormatReward`, `LengthPenalty`). The held-out gold
reward of over-optimization studies is written the same way (`gold_reward` config group).
"""

from lit_rlhf.rewards.completions import Completions, Scores, columns_of_rows, repeat_columns
from lit_rlhf.rewards.function import FunctionReward, import_function
from lit_rlhf.rewards.mix import Reward, RewardScores, as_reward, weighted_total
from lit_rlhf.rewards.model import AGGREGATIONS, ModelReward, RewardEnsemble, aggregate_rewards
from lit_rlhf.rewards.verifiers import ExactMatch, FormatReward, LengthPenalty, MathVerifier, overlong_penalty

__all__ = [
    "AGGREGATIONS",
    "Completions",
    "ExactMatch",
    "FormatReward",
    "FunctionReward",
    "LengthPenalty",
    "MathVerifier",
    "ModelReward",
    "Reward",
    "RewardEnsemble",
    "RewardScores",
    "Scores",
    "aggregate_rewards",
    "as_reward",
    "columns_of_rows",
    "import_function",
    "overlong_penalty",
    "repeat_columns",
    "weighted_total",
]
