"""The KL(π ‖ π_ref) penalty a PPO-family module is given: it measures, penalises, adds its loss term and adapts.

One object per placement (`regularizer/kl=in_reward|in_score|in_loss|none`), each owning its estimator
(`regularizer/kl/estimator`) and its coefficient controller (`regularizer/kl/controller`, bound to
`regularizer.kl.coef`). The module only calls the methods below; it never reaches into the parts, so
a new estimator, gradient form or aggregation is a change here, not in the module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lit_rlhf.errors import ConfigError
from lit_rlhf.ops.masking import last_true_index, masked_sum
from lit_rlhf.regularizers.kl.estimators import kl_k1, kl_k3
from lit_rlhf.regularizers.kl.gradient import KL_GRADIENTS, kl_loss_values
from lit_rlhf.regularizers.term import RegularizerTerm

ReferenceLogits = Callable[[], Tensor]


class _KLPenalty:
    """An estimator and a coefficient controller; subclasses decide where the penalty acts.

    Args:
        estimator: per-token KL estimator (`regularizer/kl/estimator`).
        controller: a `_partial_` controller factory, called with `coef` (None: β stays 0 and never moves).
        coef: β, or where an adaptive controller starts.
    """

    def __init__(self, estimator, controller: Callable[..., Any] | None, coef: float):
        self.estimator = estimator
        self.controller = controller(coef=coef) if controller is not None else None

    @property
    def coef(self) -> float:
        return self.controller.value if self.controller is not None else 0.0

    @property
    def overflow_hint(self) -> str:
        """A remedy the estimator offers when values overflow (", clamp the k3 estimator (...)"), for a
        non-finite stop's message; "" if none."""
        return self.estimator.overflow_hint

    @property
    def needs_logits(self) -> bool:
        """Whether `measure` needs both models' (B, T, V) logits (the exact estimator), so a rollout keeps them."""
        return self.estimator.needs_logits

    def measure(
        self, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, logits: Tensor | None, ref_logits: Tensor | None
    ) -> Tensor:
        """(B, T) per-token KL of the sampled tokens, 0 outside `mask`.

        Args:
            logprobs, ref_logprobs: (B, T) log π and log π_ref of the sampled tokens.
            mask: (B, T) real response tokens.
            logits, ref_logits: (B, T, V), or None unless `needs_logits`.
        """
        # masked_fill, not a product: whatever sits after EOS must not turn into NaN * 0.
        return self.estimator(logprobs, ref_logprobs, logits, ref_logits).masked_fill(~mask.bool(), 0.0)

    def sequence_kls(
        self, per_token_kl: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor
    ) -> dict[str, Tensor]:
        """(B,) each response's KL by the configured estimator (`kl`), and by k1 and k3 for comparison."""
        return {
            "kl": masked_sum(per_token_kl, mask, dim=1),
            "kl_k1": masked_sum(kl_k1(logprobs, ref_logprobs), mask, dim=1),
            "kl_k3": masked_sum(kl_k3(logprobs, ref_logprobs), mask, dim=1),
        }

    def rollout_metrics(self, per_token_kl: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> dict:
        """Mean sequence KL by the configured estimator (`kl`), by k1 and k3, and β."""
        kls = self.sequence_kls(per_token_kl, logprobs, ref_logprobs, mask)
        return {**{name: kl.mean() for name, kl in kls.items()}, "kl_coef": torch.tensor(self.coef)}

    def reward_penalty(self, per_token_kl: Tensor, mask: Tensor) -> Tensor:
        """(B, T) what to subtract from each token's reward."""
        return torch.zeros_like(per_token_kl)

    def loss_term(
        self,
        logprobs: Tensor,
        ref_logprobs: Tensor,
        old_logprobs: Tensor,
        mask: Tensor,
        logits: Tensor,
        reference_logits: ReferenceLogits,
        aggregate: Callable[[Tensor, Tensor], Tensor],
    ) -> RegularizerTerm:
        """The term added to the actor's loss on one minibatch.

        Args:
            logprobs: (B, T) log π_θ with gradients; ref_logprobs, old_logprobs: (B, T) from the rollout.
            mask: (B, T); logits: (B, T, V) of π_θ; reference_logits: computes π_ref's (B, T, V) on demand.
            aggregate: the `loss_aggregation` object the policy term uses, (B, T) and mask -> scalar.
        """
        return RegularizerTerm.zero(logprobs)

    def update(self, sequence_kl: float, n_samples: int) -> None:
        """Let the controller see the rollout's mean sequence KL over `n_samples` responses."""
        if self.controller is not None:
            self.controller.update(sequence_kl, n_steps=n_samples)

    def state_dict(self) -> dict[str, Any]:
        return self.controller.state_dict() if self.controller is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.controller is not None:
            self.controller.load_state_dict(state)


class KLInReward(_KLPenalty):
    """r_t = -β·KL_t on every response token, plus the score at the last one.

    Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences";
    Ouyang et al. 2022 (InstructGPT); DeepSpeed-Chat's `compute_rewards`.

    Args:
        estimator: per-token KL estimator (k1, abs, k2, k3, full).
        controller: fixed or adaptive coefficient, a `_partial_` factory.
        coef: β (the adaptive controller's start).
    """

    def reward_penalty(self, per_token_kl: Tensor, mask: Tensor) -> Tensor:
        return self.coef * per_token_kl


class KLInScore(_KLPenalty):
    """r = score - β·Σ_t KL_t: one KL per response, subtracted from its score at the last token.

    Seed 003's simple sequence-level form (the InstructGPT objective written per response). The total
    return equals KLInReward's; what differs is credit assignment: GAE sees the whole penalty at the
    end, as it sees the score.

    Args:
        estimator: per-token KL estimator, summed over the response.
        controller: fixed or adaptive coefficient, a `_partial_` factory.
        coef: β (the adaptive controller's start).
    """

    def reward_penalty(self, per_token_kl: Tensor, mask: Tensor) -> Tensor:
        penalty = torch.zeros_like(per_token_kl)
        last = last_true_index(mask)
        penalty[torch.arange(len(last), device=penalty.device), last] = self.coef * masked_sum(per_token_kl, mask, 1)
        return penalty


class KLInLoss(_KLPenalty):
    """β·KL added to the actor's loss, aggregated like the policy term, with the chosen gradient (GRPO-style).

    Shao et al. 2024, "DeepSeekMath" (GRPO), which pairs it with k3 backpropagated as is (`gradient=naive`):
    that gradient is the forward KL's; `straight_through` and `importance_weighted` give the reverse KL's
    (see regularizers/kl/gradient.py).

    Args:
        estimator: per-token KL estimator; `full` recomputes the reference logits per minibatch.
        controller: fixed or adaptive coefficient, a `_partial_` factory.
        coef: β (the adaptive controller's start).
        gradient: naive, straight_through or importance_weighted.
    """

    def __init__(self, estimator, controller: Callable[..., Any] | None, coef: float, gradient: str):
        if gradient not in KL_GRADIENTS:
            raise ConfigError(f"regularizer.kl.gradient must be one of {', '.join(KL_GRADIENTS)}, got '{gradient}'")
        super().__init__(estimator, controller, coef)
        self.gradient = gradient

    def loss_term(
        self, logprobs, ref_logprobs, old_logprobs, mask, logits, reference_logits, aggregate
    ) -> RegularizerTerm:
        ref_logits = reference_logits() if self.needs_logits else None
        values = self.estimator(logprobs, ref_logprobs, logits, ref_logits)
        kl = aggregate(kl_loss_values(values, logprobs, ref_logprobs, old_logprobs, mask, self.gradient), mask)
        return RegularizerTerm(self.coef * kl, {"kl_loss": kl.detach()})


class NoKL(_KLPenalty):
    """No KL penalty (β = 0). The estimator still measures KL for the `train/kl` curve.

    Args:
        estimator: per-token KL estimator used for the metric.
        controller: must be None: with no coefficient there is nothing to control, and a configured
            controller would otherwise be dropped without a word.
    """

    def __init__(self, estimator, controller=None):
        if controller is not None:
            raise ConfigError(
                "regularizer/kl=none has no KL coefficient, so it takes no regularizer/kl/controller; "
                "drop the controller override, or place the penalty with regularizer/kl=in_reward or in_loss"
            )
        super().__init__(estimator, None, 0.0)
