"""What every rollout engine returns, and what every engine does: sample, and take the policy's weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from lit_rlhf.ops.generation import Generation, SamplingConfig, concatenate_generations


@dataclass(frozen=True)
class Rollout:
    """Sampled responses and the engine's log-probs of the tokens it sampled.

    Attributes:
        generation: the prompts and responses (sequences, attention_mask, response_ids, response_mask,
            has_stop), exactly as `lit_rlhf.ops.generation.generate` returns them.
        logprobs: (B, R) log μ(y_t | prompt, y_<t) of each sampled token, 0 after the response mask. μ is the
            engine's softmax of the model's raw logits: no temperature, top-k or top-p, the distribution the
            trainer scores (`lit_rlhf.ops.forward.sequence_logprobs`, PPO's old log-probs).
    """

    generation: Generation
    logprobs: torch.Tensor

    def select(self, rows: slice | torch.Tensor) -> Rollout:
        """The rollouts in `rows`."""
        return Rollout(self.generation.select(rows), self.logprobs[rows])


def concatenate_rollouts(parts: Sequence[Rollout], pad_token_id: int) -> Rollout:
    """One Rollout from row chunks sampled separately (`concatenate_generations`; log-probs right-padded with 0)."""
    width = max(part.logprobs.shape[1] for part in parts)
    logprobs = torch.cat([nn.functional.pad(part.logprobs, (0, width - part.logprobs.shape[1])) for part in parts])
    return Rollout(concatenate_generations([part.generation for part in parts], pad_token_id), logprobs)


class GenerationEngine(Protocol):
    """Samples responses to left-padded prompts; a stage does not know which engine runs.

    `generate` draws from the global torch RNG when `seed` is None (a training rollout inside the
    iteration's seeded RNG), else from `seed` alone (validation), and leaves every other RNG as it was.
    `sync_weights` makes the engine sample from `policy`'s current weights: call it after each optimizer
    phase, before the next rollout.
    """

    def generate(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, sampling: SamplingConfig, seed: int | None = None
    ) -> Rollout: ...

    def sync_weights(self, policy: nn.Module) -> None: ...
