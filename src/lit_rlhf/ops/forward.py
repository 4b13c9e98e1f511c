"""Forward passes shared by the stages: per-token log-probs and scalar (reward/value) heads.

Sequences may be left-padded (prompts) and right-padded (responses) at once,
so every forward passes explicit position ids computed from the attention
mask; generation computes them the same way, which keeps rollout-time and
training-time log-probs identical.
"""

from __future__ import annotations

import inspect

import torch
from transformers import PreTrainedModel

from lit_rlhf.errors import ConfigError
from lit_rlhf.ops.logprobs import chunked_head_logprobs, entropy_from_logits, token_logprobs
from lit_rlhf.ops.masking import last_true_index


def transformers_model(model: PreTrainedModel) -> PreTrainedModel:
    """The transformers model inside a peft wrapper (its LoRA layers sit inside it and run), else `model`.

    Forwards call it directly: its `base_model` is the backbone and its forward takes `logits_to_keep`,
    which a peft wrapper's do not.
    """
    get_base_model = getattr(model, "get_base_model", None)  # a peft wrapper's
    return get_base_model() if get_base_model is not None else model


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counting only real tokens; padding gets position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def causal_lm_logits(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, first: int = 0
) -> torch.Tensor:
    """(B, T - first, V) next-token logits of positions first .. T-1: position t predicts token t + 1.

    Only those positions go through the LM head (transformers' `logits_to_keep`), so a prompt's
    positions cost neither the (H x V) projection nor a (B, first, V) tensor, forward or backward.
    """
    model = transformers_model(model)
    keep = {"logits_to_keep": input_ids.shape[1] - first} if first and _keeps_logits(model) else {}
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
        **keep,
    ).logits
    return logits if keep else logits[:, first:]


def _keeps_logits(model: PreTrainedModel) -> bool:
    """Whether the model's forward takes `logits_to_keep` (transformers' causal LMs do; remote code may not)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def sequence_token_logprobs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, first: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of each token from position first + 1 on, given its prefix.

    Args:
        first: the first position whose next token is scored (PPO: prompt length - 1, the response only).

    Returns:
        logprobs (B, T-1-first): log p(input_ids[:, t+1] | input_ids[:, :t+1]) for t = first .. T-2.
        logits (B, T-1-first, V): the logits they came from.
    """
    logits = causal_lm_logits(model, input_ids, attention_mask, first)[:, :-1]
    return token_logprobs(logits, input_ids[:, first + 1 :]), logits


def sequence_logprobs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    first: int = 0,
    with_entropy: bool = False,
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`sequence_token_logprobs`' log-probs (and entropies) without the (B, T, V) logits.

    The backbone's hidden states go through the LM head a chunk of positions at a time
    (`chunked_head_logprobs`); peak memory is one chunk's logits, forward and backward.
    Models whose logits are more than the head's projection (soft-capped or scaled, e.g.
    Gemma 2, Cohere) take the plain path.

    Returns:
        logprobs (B, T-1-first), and entropies (B, T-1-first) or None.
    """
    inner = transformers_model(model)
    head = inner.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or _reshapes_logits(inner.config):
        logprobs, logits = sequence_token_logprobs(model, input_ids, attention_mask, first)
        return logprobs, entropy_from_logits(logits) if with_entropy else None
    hidden = inner.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).last_hidden_state[:, first:-1]  # (B, T-1-first, H)
    return chunked_head_logprobs(hidden, head, input_ids[:, first + 1 :], with_entropy, chunk_tokens)


def _reshapes_logits(config) -> bool:
    """Whether the model transforms the head's output (soft-capping, a logit scale) before returning logits."""
    return any(getattr(config, key, None) not in (None, 1, 1.0) for key in ("final_logit_softcapping", "logit_scale"))


def scalar_head_outputs(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) the scalar head applied at every position of a sequence-classification model.

    The reward is this at a sequence's last real token; a critic reads it at every
    response position (the value of the state before each action).
    """
    model = transformers_model(model)
    head = getattr(model, "score", None)
    if head is None:
        raise ConfigError(
            f"{type(model).__name__} has no `score` head; reward models and critics need an "
            "AutoModelForSequenceClassification of a decoder architecture (Llama, GPT-2, Qwen, Mistral, ...)"
        )
    hidden = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).last_hidden_state
    return head(hidden).squeeze(-1).float()


def last_token_rewards(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) the reward head at each row's last real token (rows may be padded on both sides)."""
    values = scalar_head_outputs(model, input_ids, attention_mask)
    return values.gather(1, last_true_index(attention_mask.bool()).unsqueeze(1)).squeeze(1)
