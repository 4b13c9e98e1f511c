"""lit-rlhf: reward models, PPO and DPO as PyTorch Lightning modules composed with Hydra.

`__all__` is the public surface: the subpackages (each with its own `__all__`), the four stage modules,
the reward mix, `compose` (a run config, as the command line makes it; `lit_rlhf.train.train(cfg)` runs it)
and the errors that reach the user as one line. Names load on first use, so
`import lit_rlhf` (which every Hydra plugin of this package triggers) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lit_rlhf.errors import ConfigError, DataError, UserError

__version__ = "0.1.0"

SUBPACKAGES = (
    "analysis",
    "callbacks",
    "data",
    "evaluation",
    "generation",
    "losses",
    "models",
    "modules",
    "ops",
    "overoptimization",
    "regularizers",
    "rewards",
    "rl",
    "search",
    "task",
)
# name -> the module it comes from
LAZY_NAMES = {
    "compose": "config",
    "DPOModule": "modules",
    "PPOModule": "modules",
    "RewardModel": "modules",
    "SFTModule": "modules",
    "Reward": "rewards",
}

__all__ = [
    "ConfigError",
    "DPOModule",
    "DataError",
    "PPOModule",
    "Reward",
    "RewardModel",
    "SFTModule",
    "UserError",
    "analysis",
    "callbacks",
    "compose",
    "data",
    "evaluation",
    "generation",
    "losses",
    "models",
    "modules",
    "ops",
    "overoptimization",
    "regularizers",
    "rewards",
    "rl",
    "search",
    "task",
]


def __getattr__(name: str):
    if name in SUBPACKAGES:
        return importlib.import_module(f"lit_rlhf.{name}")
    if name in LAZY_NAMES:
        return getattr(importlib.import_module(f"lit_rlhf.{LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'lit_rlhf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from lit_rlhf import (
        analysis,
        callbacks,
        data,
        evaluation,
        generation,
        losses,
        models,
        modules,
        ops,
        overoptimization,
        regularizers,
        rewards,
        rl,
        search,
        task,
    )
    from lit_rlhf.config import compose
    from lit_rlhf.modules import DPOModule, PPOModule, RewardModel, SFTModule
    from lit_rlhf.rewards import Reward
