"""The four stage modules, LightningModules with no inheritance between them.

`SFTModule` (next-token NLL on response tokens), `RewardModel` (a scalar head trained on preferences),
`PPOModule` (PPO, RLOO, GRPO, ReMax: actor and optional critic against a frozen reference and a reward)
and `DPOModule` (DPO and its variants against a frozen or cached reference). `common` holds the helpers
they share and is not part of the public surface.
"""

from lit_rlhf.modules.dpo import DPOModule
from lit_rlhf.modules.ppo import PPOModule
from lit_rlhf.modules.reward_model import RewardModel
from lit_rlhf.modules.sft import SFTModule

__all__ = ["DPOModule", "PPOModule", "RewardModel", "SFTModule"]
