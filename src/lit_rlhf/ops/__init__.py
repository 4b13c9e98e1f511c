"""Tensor helpers every stage uses: masked reductions, log-probs, model forwards and generation.

Nothing here knows about RL, losses or regularizers; those rooms import from here, never the reverse.
Packing (`packing`, `packed_forward`), chunking and the data-parallel reductions (`distributed`) are
the stages' machinery and stay out of the public surface.
"""

from lit_rlhf.ops.aggregation import (
    SeqMeanTokenMean,
    SeqMeanTokenSum,
    SeqMeanTokenSumNorm,
    TokenMean,
    seq_mean_token_mean,
    seq_mean_token_sum,
    seq_mean_token_sum_norm,
    token_mean,
)
from lit_rlhf.ops.forward import last_token_rewards, scalar_head_outputs, sequence_logprobs, sequence_token_logprobs
from lit_rlhf.ops.generation import Generation, SamplingConfig, decode_responses, generate
from lit_rlhf.ops.logprobs import chunked_head_logprobs, entropy_from_logits, token_logprobs
from lit_rlhf.ops.masking import masked_mean, masked_sum, masked_var, masked_whiten, response_mask
from lit_rlhf.ops.moments import RunningMoments

__all__ = [
    "Generation",
    "RunningMoments",
    "SamplingConfig",
    "SeqMeanTokenMean",
    "SeqMeanTokenSum",
    "SeqMeanTokenSumNorm",
    "TokenMean",
    "chunked_head_logprobs",
    "decode_responses",
    "entropy_from_logits",
    "generate",
    "last_token_rewards",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "response_mask",
    "scalar_head_outputs",
    "seq_mean_token_mean",
    "seq_mean_token_sum",
    "seq_mean_token_sum_norm",
    "sequence_logprobs",
    "sequence_token_logprobs",
    "token_logprobs",
    "token_mean",
]
