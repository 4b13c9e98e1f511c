"""Forward passes over packed rows (`lit_rlhf.ops.packing`), read back per sequence.

Each returns what its padded peer in `lit_rlhf.ops.forward` returns, for the tokens a loss reads:
log-probs at the target positions, rewards at each sequence's last real token.
"""

from __future__ import annotations

import inspect
from typing import cast

import torch
from torch import Tensor
from transformers import PreTrainedModel

from lit_rlhf.errors import ConfigError
from lit_rlhf.ops.forward import _reshapes_logits, position_ids_from_mask, transformers_model
from lit_rlhf.ops.logprobs import chunked_head_logprobs
from lit_rlhf.ops.masking import last_true_index
from lit_rlhf.ops.packing import PackedLayout, additive_mask, attention_allowed, pack_values

# Attention implementations that read a custom (B, 1, T, T) mask as given: sdpa as bool, eager as additive floats.
# flash_attention_* take only a 2D padding mask, flex_attention a BlockMask.
MASKED_ATTENTION = ("sdpa", "eager")


def check_takes_packed_rows(model: PreTrainedModel, option: str) -> None:
    """Raise ConfigError unless the model can run packed rows: a custom 4D mask, explicit positions, one window.

    Args:
        option: the config key that asked for packing, named in the message.
    """
    inner = transformers_model(model)
    config, name = inner.config, type(inner).__name__
    implementation = getattr(config, "_attn_implementation", None)
    problem = None
    if implementation not in MASKED_ATTENTION:
        problem = (
            f"its attention ({implementation}) cannot take a custom 4D attention mask; "
            f"load it with attn_implementation in {list(MASKED_ATTENTION)}"
        )
    elif "position_ids" not in inspect.signature(inner.base_model.forward).parameters:
        problem = "its forward takes no position_ids"
    elif getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        problem = "it uses sliding-window attention, which a custom 4D mask would override"
    elif _reshapes_logits(config) or not isinstance(inner.get_output_embeddings(), (torch.nn.Linear, type(None))):
        problem = "its logits are more than a linear LM head (soft-capping or a logit scale)"
    if problem is not None:
        raise ConfigError(f"{option}=true needs packed rows, but {name} cannot run them: {problem}. Set {option}=false")


def _attention_mask(inner: PreTrainedModel, layout: PackedLayout) -> Tensor:
    """(R, 1, L, L) the mask in the form the model's attention reads (see MASKED_ATTENTION)."""
    allowed = attention_allowed(layout)
    if inner.config._attn_implementation == "sdpa":
        return allowed
    embedding_weight = cast(Tensor, inner.get_input_embeddings().weight)  # nn.Module types it Tensor | Module
    return additive_mask(allowed, embedding_weight.dtype)


def packed_hidden(model: PreTrainedModel, layout: PackedLayout, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(R * L, H) final hidden states of the packed rows, flat: index them with `layout.place`.

    Args:
        input_ids, attention_mask: (N, T) the padded batch the layout was made from.
    """
    inner = transformers_model(model)
    rows, width = layout.shape
    pad_id = inner.config.pad_token_id or 0
    hidden = inner.base_model(
        input_ids=pack_values(input_ids, layout, pad_id),  # (R, L)
        attention_mask=_attention_mask(inner, layout),  # (R, 1, L, L)
        # Each token keeps the position it has in its padded row: a response continues from its prompt.
        position_ids=pack_values(position_ids_from_mask(attention_mask), layout, 0),  # (R, L)
        use_cache=False,
    ).last_hidden_state  # (R, L, H)
    return hidden.reshape(rows * width, -1)


def target_places(layout: PackedLayout, target_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The packed places of the positions whose next token is scored, and those (n, t) positions.

    Args:
        target_mask: (N, T-1) True where token t + 1 of sequence n is scored (predicted at position t).

    Returns:
        places (M,) flat indices into the packed hidden states, and targets (M, 2) their (n, t).
    """
    targets = target_mask.nonzero()  # (M, 2)
    return layout.place[targets[:, 0], targets[:, 1]], targets


def packed_sequence_logprobs(
    model: PreTrainedModel, layout: PackedLayout, input_ids: Tensor, attention_mask: Tensor, target_mask: Tensor
) -> Tensor:
    """(N, T-1) `sequence_logprobs`' log-probs at the targets (0 elsewhere), from one pass over packed rows.

    Only the M target positions go through the LM head (a chunk at a time, as `sequence_logprobs`).

    Args:
        input_ids, attention_mask: (N, T) the padded batch the layout was made from.
        target_mask: (N, T-1) the positions a loss reads (response or loss mask).
    """
    hidden = packed_hidden(model, layout, input_ids, attention_mask)
    places, targets = target_places(layout, target_mask)
    labels = input_ids[targets[:, 0], targets[:, 1] + 1]  # (M,)
    head = transformers_model(model).get_output_embeddings()
    assert isinstance(head, torch.nn.Linear), "a causal LM's head, linear (check_takes_packed_rows)"
    logprobs, _ = chunked_head_logprobs(hidden[places][None], head, labels[None], False, None)  # (1, M)
    unpacked = logprobs.new_zeros(target_mask.shape)
    return unpacked.index_put((targets[:, 0], targets[:, 1]), logprobs[0])


def last_token_places(layout: PackedLayout, attention_mask: Tensor) -> Tensor:
    """(N,) packed places of each sequence's last real token, where a reward is read."""
    last = last_true_index(attention_mask.bool())
    return layout.place.gather(1, last[:, None]).squeeze(1)
