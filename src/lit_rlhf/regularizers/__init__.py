"""Regularizers: small objects that each compute one term of an objective and its metrics.

Hydra groups (`regularizer/kl`, `regularizer/distill`, `regularizer/ptx`, `regularizer/nll`) choose them;
a module sums the terms it is given and never switches on names. The KL penalty's estimators,
controllers and gradients are in `lit_rlhf.regularizers.kl`; the distillation teacher's in
`lit_rlhf.regularizers.distill`.
"""

from lit_rlhf.regularizers.distill import DistillInLoss, DistillInReward, NoDistillation
from lit_rlhf.regularizers.kl import KLInLoss, KLInReward, KLInScore, NoKL
from lit_rlhf.regularizers.nll import ChosenNLL, NoNLL, chosen_nll
from lit_rlhf.regularizers.ptx import NoPretrainMix, PretrainMix
from lit_rlhf.regularizers.term import RegularizerTerm

__all__ = [
    "ChosenNLL",
    "DistillInLoss",
    "DistillInReward",
    "KLInLoss",
    "KLInReward",
    "KLInScore",
    "NoDistillation",
    "NoKL",
    "NoNLL",
    "NoPretrainMix",
    "PretrainMix",
    "RegularizerTerm",
    "chosen_nll",
]
