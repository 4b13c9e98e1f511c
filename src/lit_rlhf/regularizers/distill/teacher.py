"""On-policy distillation: a frozen teacher π_t scores the student's own samples, token by token.

One object per placement (`regularizer/distill=none|in_reward|in_loss`), each owning the teacher model and
its forward pass. Like the KL penalty, the PPO module only calls the methods below (teacher outputs,
measure, reward penalty, loss term, metrics) and never reaches into the parts:

- `in_reward`: r_t -= β·D_t with D_t the reverse KL(π_s ‖ π_t) at token t, by k1 (log π_s - log π_t of the
  sampled token) or exactly over the vocabulary (`regularizer/distill/estimator=full`); the advantage
  estimator turns it into per-token credit (Gu et al. 2024, "MiniLLM"; Agarwal et al. 2024, GKD; Qwen3's
  on-policy distillation).
- `in_loss`: coef · GKD's generalized JSD over the vocabulary on the student's samples, added to the
  actor's loss and aggregated like the policy term (Agarwal et al. 2024, "On-Policy Distillation of
  Language Models: Learning from Self-Generated Mistakes").

Every choice with a teacher logs the student's reverse KL to it per response, by k1 (`kl_to_teacher`) and
exactly (`kl_to_teacher_exact`), so the teacher's logits and the student's are always computed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from lit_rlhf.errors import ConfigError
from lit_rlhf.ops.forward import sequence_token_logprobs
from lit_rlhf.ops.masking import masked_sum
from lit_rlhf.regularizers.distill.divergences import check_jsd_beta, generalized_jsd
from lit_rlhf.regularizers.kl.estimators import kl_full, kl_k1
from lit_rlhf.regularizers.term import RegularizerTerm

TeacherLogits = Callable[[], Tensor]


class NoDistillation(nn.Module):
    """No teacher: no reward penalty, no loss term, no metrics (`regularizer/distill=none`)."""

    needs_logits: bool = False

    def __init__(self):
        super().__init__()
        self.teacher = None

    @property
    def has_teacher(self) -> bool:
        return self.teacher is not None

    @property
    def metric_names(self) -> list[str]:
        """The validation means this choice logs (`val/<name>`)."""
        return ["kl_to_teacher", "kl_to_teacher_exact", "teacher_gold_reward"] if self.has_teacher else []

    @contextlib.contextmanager
    def teacher_model(self) -> Iterator[nn.Module | None]:
        """The frozen teacher (None without one), e.g. to sample its responses for `val/teacher_gold_reward`."""
        with torch.no_grad():
            yield self.teacher

    @torch.no_grad()
    def teacher_outputs(
        self, sequences: Tensor, attention_mask: Tensor, first: int
    ) -> tuple[Tensor | None, Tensor | None]:
        """The teacher's per-token log-probs (B, T) and logits (B, T, V) of the responses from position `first`
        on (as the policy's), or (None, None) without a teacher."""
        if self.teacher is None:
            return None, None
        return sequence_token_logprobs(self.teacher, sequences, attention_mask, first)

    def measure(
        self,
        logprobs: Tensor,
        teacher_logprobs: Tensor | None,
        mask: Tensor,
        logits: Tensor | None,
        teacher_logits: Tensor | None,
    ) -> Tensor:
        """(B, T) the per-token divergence the reward penalises, 0 outside `mask` (and everywhere without one)."""
        return torch.zeros_like(logprobs)

    def reward_penalty(self, per_token: Tensor, mask: Tensor) -> Tensor:
        """(B, T) what to subtract from each token's reward."""
        return torch.zeros_like(per_token)

    def loss_term(
        self, logits: Tensor | None, mask: Tensor, teacher_logits: TeacherLogits, aggregate
    ) -> RegularizerTerm:
        """The term added to the actor's loss on one minibatch.

        Args:
            logits: (B, T, V) of the student with gradients (None without a teacher).
            mask: (B, T) response tokens; teacher_logits: computes the teacher's (B, T, V) on demand.
            aggregate: the `loss_aggregation` object the policy term uses, (B, T) and mask -> scalar.
        """
        return RegularizerTerm.zero(mask.new_zeros((), dtype=torch.float32))

    def sequence_kls(
        self,
        logprobs: Tensor,
        teacher_logprobs: Tensor | None,
        mask: Tensor,
        logits: Tensor | None,
        teacher_logits: Tensor | None,
    ) -> dict[str, Tensor]:
        """(B,) each response's reverse KL to the teacher, by k1 and exactly (nats per response); {} without."""
        if self.teacher is None:
            return {}
        # With a teacher, teacher_outputs gave both and needs_logits made the module keep the student's logits.
        assert teacher_logprobs is not None and logits is not None and teacher_logits is not None
        return {
            "kl_to_teacher": masked_sum(kl_k1(logprobs, teacher_logprobs), mask, dim=1),
            "kl_to_teacher_exact": masked_sum(exact_reverse_kl(logits, teacher_logits), mask, dim=1),
        }

    def rollout_metrics(self, logprobs, teacher_logprobs, mask, logits, teacher_logits) -> dict[str, Tensor]:
        """Means over the rollout of `sequence_kls`."""
        kls = self.sequence_kls(logprobs, teacher_logprobs, mask, logits, teacher_logits)
        return {name: kl.mean() for name, kl in kls.items()}

    def train(self, mode: bool = True) -> NoDistillation:
        # Lightning switches every submodule to train mode at fit start: the teacher stays in eval (no dropout).
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self


class _WithTeacher(NoDistillation):
    """A frozen teacher; subclasses decide where its divergence acts.

    Args:
        teacher: a causal LM with the policy's tokenizer (`model.teacher`, loaded frozen).
        coef: the divergence's weight β.
    """

    needs_logits: bool = True  # `kl_to_teacher_exact` and the full-vocabulary divergences

    def __init__(self, teacher: nn.Module, coef: float):
        super().__init__()
        if coef < 0:
            raise ConfigError(f"regularizer.distill.coef must be >= 0, got {coef}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.coef = coef


class DistillInReward(_WithTeacher):
    """r_t = -β·D_t on every response token, D_t the reverse KL(π_s ‖ π_t) at t by the chosen estimator.

    Gu et al. 2024, "MiniLLM: Knowledge Distillation of Large Language Models"; Agarwal et al. 2024, GKD.
    Summed over a response's tokens and averaged over the student's samples, -D is a Monte-Carlo estimate
    of -KL(π_s ‖ π_t) of the whole sequence, the objective whose policy gradient the module follows.

    Args:
        teacher: the frozen teacher (`model.teacher`).
        estimator: `regularizer/distill/estimator`: k1 (the sampled token's log-ratio) or full (exact, over
            the vocabulary), the KL penalty's own estimator classes.
        coef: β.
    """

    def __init__(self, teacher: nn.Module, estimator, coef: float):
        super().__init__(teacher, coef)
        self.estimator = estimator

    def measure(self, logprobs, teacher_logprobs, mask, logits, teacher_logits) -> Tensor:
        # masked_fill, not a product: whatever sits after EOS must not turn into NaN * 0.
        return self.estimator(logprobs, teacher_logprobs, logits, teacher_logits).masked_fill(~mask.bool(), 0.0)

    def reward_penalty(self, per_token: Tensor, mask: Tensor) -> Tensor:
        return self.coef * per_token


class DistillInLoss(_WithTeacher):
    """coef · JSD_β(π_t, π_s) per response token, aggregated like the policy term, added to the actor's loss.

    Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes"
    (GKD), on the student's own samples (their λ = 1): β = 0 the forward KL(π_t ‖ π_s), β = 1 the reverse
    KL(π_s ‖ π_t), in between the generalized JSD. The gradient is the exact divergence's, through the
    student's logits; the sampled tokens only choose the contexts.

    Args:
        teacher: the frozen teacher (`model.teacher`).
        coef: the term's weight.
        beta: the JSD's β in [0, 1].
    """

    def __init__(self, teacher: nn.Module, coef: float, beta: float):
        check_jsd_beta(beta)
        super().__init__(teacher, coef)
        self.beta = beta

    def loss_term(self, logits, mask, teacher_logits, aggregate) -> RegularizerTerm:
        assert logits is not None, "needs_logits: the module passes the student's logits"
        jsd = aggregate(generalized_jsd(logits, teacher_logits(), self.beta).masked_fill(~mask.bool(), 0.0), mask)
        return RegularizerTerm(self.coef * jsd, {"distill_loss": jsd.detach()})


def exact_reverse_kl(logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """(B, T) KL(π_s ‖ π_t) over the vocabulary at every position; refused in one line if the vocabularies differ.

    Args:
        logits: (B, T, V) student; teacher_logits: (B, T, V) teacher.
    """
    if logits.shape[-1] != teacher_logits.shape[-1]:
        raise ConfigError(
            f"the teacher's logits cover {teacher_logits.shape[-1]} tokens and the policy's {logits.shape[-1]}: "
            "distillation needs one vocabulary (a teacher with the policy's tokenizer and embedding size)"
        )
    return kl_full(logits.detach(), teacher_logits)
