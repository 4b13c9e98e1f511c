"""A reward model with its own tokenizer: it scores the decoded texts, re-tokenized its way.

Most public reward models do not share the policy's tokenizer. Their token ids then mean
nothing to the policy's vocabulary (and vice versa), so PPO, RLOO and GRPO decode each
response and tokenize prompt + response again, as reward-model training data is tokenized
here (`lit_rlhf.data.tokenization`): the prompt with the tokenizer's special tokens, the
response without, then EOS when the response had stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from lit_rlhf.models.loading import load_tokenizer


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether two tokenizers map every token to the same id and share their special tokens."""
    specials = ("bos_token_id", "eos_token_id", "pad_token_id")
    return a.get_vocab() == b.get_vocab() and all(getattr(a, name) == getattr(b, name) for name in specials)


def own_tokenizer(reward_model, policy_tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved with `reward_model` when it differs from the policy's; None when the ids can be shared.

    None also for a model without a tokenizer of its own: one built from a config, or a local
    folder holding no tokenizer files (it was trained on the policy's ids). An ensemble (a list)
    reads the policy's ids.
    """
    path = getattr(getattr(reward_model, "config", None), "name_or_path", "")
    if not path or (Path(path).is_dir() and not (Path(path) / "tokenizer_config.json").exists()):
        return None
    tokenizer = load_tokenizer(path)
    return None if same_tokenizer(tokenizer, policy_tokenizer) else tokenizer


def reward_model_inputs(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str], has_stop: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) right-padded ids and attention mask of prompt + response in the reward model's tokenizer.

    Args:
        prompts, responses: the B texts (responses decoded without their stop token).
        has_stop: (B,) whether each response ended with a stop token (then the RM's EOS is appended).
    """
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    rows = [
        p + r + ([tokenizer.eos_token_id] if stop else [])
        for p, r, stop in zip(prompt_ids, response_ids, has_stop.tolist())
    ]
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask
