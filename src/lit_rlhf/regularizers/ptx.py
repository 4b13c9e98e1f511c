"""The pretraining-gradient mix: keep the policy a good model of a pretraining corpus."""

from __future__ import annotations

from lit_rlhf.data.batches import SFTBatch
from lit_rlhf.errors import ConfigError
from lit_rlhf.ops.forward import sequence_token_logprobs
from lit_rlhf.ops.masking import masked_mean
from lit_rlhf.regularizers.term import RegularizerTerm


class PretrainMix:
    """Adds gamma * NLL(x) for x from the pretraining corpus, i.e. maximises gamma * E[log pi(x)].

    Ouyang et al. 2022, "Training language models to follow instructions with human
    feedback" (PPO-ptx); seed 000's objective with the pretraining term.

    Args:
        coef: gamma.
    """

    def __init__(self, coef: float):
        if coef < 0:
            raise ConfigError(f"regularizer.ptx.coef must be >= 0, got {coef}")
        self.coef = coef

    def loss_term(self, policy, batch: SFTBatch | None) -> RegularizerTerm:
        if batch is None:
            raise ConfigError(
                "regularizer/ptx=mix needs a pretraining corpus: set data.pretrain_source (data=task_prompts ships one)"
            )
        logprobs, _ = sequence_token_logprobs(policy, batch.input_ids, batch.attention_mask)
        nll = -masked_mean(logprobs, batch.loss_mask)
        return RegularizerTerm(self.coef * nll, {"ptx_nll": nll.detach()})


class NoPretrainMix:
    """No pretraining term (the policy is not run on a corpus, and with ptx=none the data loads none)."""

    def loss_term(self, policy, batch: SFTBatch | None) -> RegularizerTerm:
        return RegularizerTerm.zero(next(policy.parameters()))
