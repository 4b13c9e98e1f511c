"""The embedded offline task: a tiny review language with a programmatic gold reward.

Every default run trains on it, so nothing has to be downloaded: a policy learns
to write positive reviews (as in the classic GPT-2 sentiment RLHF demo), and the
gold reward shows whether the learned reward model is being over-optimised.
"""

from lit_rlhf.task.dataset import SPLITS, EmbeddedTask

# `gold_reward` (the function) is not re-exported: it would shadow the submodule of that name,
# which Hydra targets such as lit_rlhf.task.gold_reward.GoldReward must resolve.
from lit_rlhf.task.gold_reward import GoldReward, max_gold_reward
from lit_rlhf.task.language import parse_response, prompt_aspect
from lit_rlhf.task.tokenizer import build_task_tokenizer, train_tokenizer

__all__ = [
    "SPLITS",
    "EmbeddedTask",
    "GoldReward",
    "build_task_tokenizer",
    "max_gold_reward",
    "parse_response",
    "prompt_aspect",
    "train_tokenizer",
]
