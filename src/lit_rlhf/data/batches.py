"""Typed batches the datamodules produce and the LightningModules consume.

Lightning moves dataclass batches to the device field by field; string lists
stay on the host (the gold reward and the sample tables read them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class SFTBatch:
    """Prompt + response sequences, right-padded.

    Attributes:
        input_ids, attention_mask: (B, T).
        loss_mask: (B, T-1) True where the *next* token is a response token
            (aligned with log-probs of input_ids[:, 1:]).
        prompt_input_ids, prompt_attention_mask: (B, P) the prompts alone, left-padded for sampling.
        prompts: the B prompt texts.
        window_tokens: () response tokens (True entries of loss_mask) in this batch's gradient-accumulation
            window: its own count unless the batch was drawn with others (`lit_rlhf.data.windows`).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    prompt_input_ids: torch.Tensor
    prompt_attention_mask: torch.Tensor
    prompts: list[str]
    window_tokens: torch.Tensor


@dataclass
class PreferenceBatch:
    """N completions, flattened group after group (each group best-first), plus the pairs to compare.

    A pairwise record is a group of 2; a K-wise ranking is a group of K that yields
    all K(K-1)/2 pairs, scored with one forward pass (InstructGPT).

    Attributes:
        input_ids, attention_mask: (N, T) right-padded prompt + response.
        response_mask: (N, T-1) True where the next token is a response token.
        better_idx, worse_idx: (P,) indices into the N completions.
        margin: (P,) the data's margin for each pair, NaN where it has none.
        sequence_ids: (N,) dataset-wide ids of the completions (keys of cached reference log-probs).
        prompts, responses: the N texts.
        prompt_input_ids, prompt_attention_mask: (G, P) each group's prompt, left-padded for sampling.
        group_prompts: the G prompt texts.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    better_idx: torch.Tensor
    worse_idx: torch.Tensor
    margin: torch.Tensor
    sequence_ids: torch.Tensor
    prompts: list[str]
    responses: list[str]
    prompt_input_ids: torch.Tensor
    prompt_attention_mask: torch.Tensor
    group_prompts: list[str]


@dataclass
class PromptBatch:
    """Prompts alone, left-padded so that generation appends to every row at the same position.

    Attributes:
        input_ids, attention_mask: (B, P).
        prompts: the B prompt texts.
        columns: each prompt's other columns (the reference answer, ...), for the rewards.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompts: list[str]
    columns: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.columns:
            self.columns = [{} for _ in self.prompts]


@dataclass
class PPOBatch:
    """One PPO iteration's input: the prompts to roll out, and a pretraining batch when PPO-ptx mixes one in."""

    prompts: PromptBatch
    pretrain: SFTBatch | None
