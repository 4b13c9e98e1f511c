"""Losses as pure functions of log-probs and rewards, and the small config objects the modules call.

* `reward`: the reward model's pairwise losses (Bradley-Terry, Llama 2's margin) and reward centering;
* `ppo`: the clipped surrogate, the clipped value loss and the ratios they read;
* `dpo`: DPO and its variants as `PairLoss` objects (`loss/dpo` group), summed with weights by `MixedLoss`;
  their formulas are pure functions, one module per family and its papers: `dpo_sigmoid` (DPO, cDPO, robust
  DPO), `ipo` (IPO, SPPO), `margin_shapes` (SLiC-HF, EXO, DiscoPOP), `aot` (AOT), `anchored` (NCA, BCO,
  APO), `reference_free` (SimPO, MPO's SFT term), sharing `log_ratios`.
"""

from lit_rlhf.losses.anchored import apo_down_loss, apo_zero_loss, bco_pair_loss, nca_pair_loss
from lit_rlhf.losses.aot import aot_loss, aot_pair_loss
from lit_rlhf.losses.dpo import (
    AOTLoss,
    AOTPairLoss,
    APOLoss,
    BCOPairLoss,
    DiscoPOPLoss,
    ExoPairLoss,
    HingeLoss,
    IPOLoss,
    MixedLoss,
    NCAPairLoss,
    PairLogps,
    PairLoss,
    ReferenceFreeLoss,
    RobustLoss,
    SFTLoss,
    SigmoidLoss,
    SimPOLoss,
    SPPOHardLoss,
)
from lit_rlhf.losses.dpo_sigmoid import dpo_robust_loss, dpo_sigmoid_loss
from lit_rlhf.losses.ipo import ipo_loss, sppo_hard_loss
from lit_rlhf.losses.margin_shapes import discopop_loss, exo_pair_loss, hinge_loss
from lit_rlhf.losses.ppo import (
    ClippedSurrogate,
    ValueLoss,
    clipped_policy_loss,
    clipped_surrogate,
    clipped_value_loss,
    explained_variance,
    old_policy_kl,
    sequence_log_ratio,
    token_log_ratio,
)
from lit_rlhf.losses.reference_free import sft_loss, simpo_loss
from lit_rlhf.losses.reward import (
    BradleyTerryLoss,
    MarginLoss,
    bradley_terry_loss,
    margin_loss,
    ranked_pair_indices,
    reward_centering_penalty,
)

__all__ = [
    "AOTLoss",
    "AOTPairLoss",
    "APOLoss",
    "BCOPairLoss",
    "BradleyTerryLoss",
    "ClippedSurrogate",
    "DiscoPOPLoss",
    "ExoPairLoss",
    "HingeLoss",
    "IPOLoss",
    "MarginLoss",
    "MixedLoss",
    "NCAPairLoss",
    "PairLogps",
    "PairLoss",
    "ReferenceFreeLoss",
    "RobustLoss",
    "SFTLoss",
    "SPPOHardLoss",
    "SigmoidLoss",
    "SimPOLoss",
    "ValueLoss",
    "aot_loss",
    "aot_pair_loss",
    "apo_down_loss",
    "apo_zero_loss",
    "bco_pair_loss",
    "bradley_terry_loss",
    "clipped_policy_loss",
    "clipped_surrogate",
    "clipped_value_loss",
    "discopop_loss",
    "dpo_robust_loss",
    "dpo_sigmoid_loss",
    "exo_pair_loss",
    "explained_variance",
    "hinge_loss",
    "ipo_loss",
    "margin_loss",
    "nca_pair_loss",
    "old_policy_kl",
    "ranked_pair_indices",
    "reward_centering_penalty",
    "sequence_log_ratio",
    "sft_loss",
    "simpo_loss",
    "sppo_hard_loss",
    "token_log_ratio",
]
