"""On-policy distillation: a frozen teacher's divergence from the student, in the reward or in the loss.

`divergences` holds the formulas (GKD's generalized JSD; the reverse KL is the KL penalty's k1 and
`kl_full`), `teacher` the objects a module is given (`regularizer/distill=none|in_reward|in_loss`), which
own the teacher model.
"""

from lit_rlhf.regularizers.distill.divergences import generalized_jsd
from lit_rlhf.regularizers.distill.teacher import DistillInLoss, DistillInReward, NoDistillation, exact_reverse_kl

__all__ = ["DistillInLoss", "DistillInReward", "NoDistillation", "exact_reverse_kl", "generalized_jsd"]
