"""Regularizers: small objects that each compute one term of an objective and its metrics.

Hydra groups (`regularizer/kl`, `regularizer/ptx`, `regularizer/nll`) choose them;
a module sums the terms it is given and never switches on names. The KL penalty's estimators,
controllers and gradients are in `lit_rlhf.regularizers.kl`.
"""

from lit_rlhf.regularizers.kl import KLInLoss, KLInReward, KLInScore, NoKL
from lit_rlhf.regularizers.nll import ChosenNLL, NoNLL, chosen_nll
from lit_rlhf.regularizers.ptx import NoPretrainMix, PretrainMix
from lit_rlhf.regularizers.term import RegularizerTerm

__all__ = [
    "ChosenNLL",
    "KLInLoss",
    "KLInReward",
    "KLInScore",
    "NoKL",
    "NoNLL",
    "NoPretrainMix",
    "PretrainMix",
    "RegularizerTerm",
    "chosen_nll",
]
