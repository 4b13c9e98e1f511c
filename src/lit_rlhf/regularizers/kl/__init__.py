"""The KL(π ‖ π_ref) penalty: per-token estimators, coefficient controllers, and where the penalty acts.

`estimators` holds the formulas, `controllers` the coefficient β and its state, `gradient` the gradient a
KL term in the loss gives, and `penalty` the objects a module is given
(`regularizer/kl=in_reward|in_score|in_loss|none`), which own both.
"""

from lit_rlhf.regularizers.kl.controllers import AdaptiveKLController, FixedKLController
from lit_rlhf.regularizers.kl.estimators import (
    AbsEstimator,
    FullEstimator,
    K1Estimator,
    K2Estimator,
    K3Estimator,
    kl_abs,
    kl_full,
    kl_k1,
    kl_k2,
    kl_k3,
)
from lit_rlhf.regularizers.kl.gradient import KL_GRADIENTS, importance_weighted, kl_loss_values, straight_through_k2
from lit_rlhf.regularizers.kl.penalty import KLInLoss, KLInReward, KLInScore, NoKL

__all__ = [
    "KL_GRADIENTS",
    "AbsEstimator",
    "AdaptiveKLController",
    "FixedKLController",
    "FullEstimator",
    "K1Estimator",
    "K2Estimator",
    "K3Estimator",
    "KLInLoss",
    "KLInReward",
    "KLInScore",
    "NoKL",
    "importance_weighted",
    "kl_abs",
    "kl_full",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_loss_values",
    "straight_through_k2",
]
