"""Where the KL(pi || pi_ref) penalty acts: in the per-token reward, in the actor's loss, or nowhere.

Each object carries an estimator (`lit_rlhf.rl.kl`) and a coefficient controller
(`lit_rlhf.rl.kl_controller`). PPO calls both hooks every step; the placement
decides which one does something.
"""

from __future__ import annotations

from typing import Callable

import torch

from lit_rlhf.regularizers.term import RegularizerTerm
from lit_rlhf.rl.kl_controller import FixedKLController
from lit_rlhf.rl.masking import masked_mean


class _KLPenalty:
    """A KL estimator with a coefficient controller; subclasses decide where the penalty acts."""

    def __init__(self, estimator, controller):
        self.estimator, self.controller = estimator, controller

    @property
    def coef(self) -> float:
        return self.controller.value


class KLInReward(_KLPenalty):
    """r_t = -beta * KL_t on every response token, plus the score at the last one.

    Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences";
    Ouyang et al. 2022 (InstructGPT); DeepSpeed-Chat's `compute_rewards`.

    Args:
        estimator: per-token KL estimator (k1, abs, k2, k3, full).
        controller: fixed or adaptive coefficient beta.
    """

    def reward_penalty(self, per_token_kl: torch.Tensor) -> torch.Tensor:
        """(B, T) what to subtract from each token's reward."""
        return self.coef * per_token_kl

    def loss_term(
        self, logprobs, ref_logprobs, mask, logits, reference_logits: Callable[[], torch.Tensor]
    ) -> RegularizerTerm:
        return RegularizerTerm.zero(logprobs)


class KLInLoss(_KLPenalty):
    """beta * mean_t KL_t added to the actor's loss, with gradients through the policy (GRPO-style).

    Shao et al. 2024, "DeepSeekMath" (GRPO), which pairs it with the k3 estimator.

    Args:
        estimator: per-token KL estimator; `full` recomputes the reference logits per minibatch.
        controller: fixed or adaptive coefficient beta.
    """

    def reward_penalty(self, per_token_kl: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(per_token_kl)

    def loss_term(
        self, logprobs, ref_logprobs, mask, logits, reference_logits: Callable[[], torch.Tensor]
    ) -> RegularizerTerm:
        """Args: logprobs (B, T) of the current policy with gradients; ref_logprobs (B, T);
        mask (B, T); logits (B, T, V); reference_logits: computes (B, T, V) on demand."""
        ref_logits = reference_logits() if self.estimator.needs_logits else None
        kl = masked_mean(self.estimator(logprobs, ref_logprobs, logits, ref_logits), mask)
        return RegularizerTerm(self.coef * kl, {"kl_loss": kl.detach()})


class NoKL(_KLPenalty):
    """No KL penalty (beta = 0). The estimator still measures KL for the `train/kl` curve.

    `controller` is accepted so that `regularizer/kl=none` composes with any controller choice; it is unused.
    """

    def __init__(self, estimator, controller=None):
        super().__init__(estimator, FixedKLController(0.0))

    def reward_penalty(self, per_token_kl: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(per_token_kl)

    def loss_term(
        self, logprobs, ref_logprobs, mask, logits, reference_logits: Callable[[], torch.Tensor]
    ) -> RegularizerTerm:
        return RegularizerTerm.zero(logprobs)
