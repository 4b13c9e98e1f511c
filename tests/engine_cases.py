"""The tiny policy and left-padded prompts of the embedded task, shared by the rollout-engine tests."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from lit_rlhf.config import asset_path
from lit_rlhf.data.collate import pad_left
from lit_rlhf.models.loading import load_tokenizer

PROMPTS = [
    "review of alien, about the music:",
    "review of up, about the acting:",
    "review of jaws:",
    "review of the long goodbye, about the pacing and the visuals:",
]


def tiny_policy() -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(asset_path("tiny-sft"), dtype=torch.float32).eval()


def tiny_tokenizer():
    return load_tokenizer(asset_path("tiny-sft"))


def left_padded_prompts(tokenizer, texts=PROMPTS) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) prompt ids padded on the left by the prompt collator's `pad_left`, and their mask."""
    return pad_left([tokenizer(text).input_ids for text in texts], tokenizer.pad_token_id)


def trainer_logprobs(policy, generation) -> torch.Tensor:
    """(B, R) the trainer's log-probs of the response tokens (PPO's old log-probs), 0 after the mask."""
    from lit_rlhf.ops.forward import sequence_logprobs

    with torch.no_grad():
        logprobs, _ = sequence_logprobs(
            policy, generation.sequences, generation.attention_mask, generation.prompt_length - 1
        )
    return logprobs.masked_fill(~generation.response_mask, 0.0)


def optimizer_step(policy, sequences: torch.Tensor, lr: float = 1e-2) -> None:
    """One AdamW step on the sequences' language-model loss: weights that differ from the engine's copy."""
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    policy.train()
    loss = policy(input_ids=sequences, labels=sequences).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    policy.eval()
