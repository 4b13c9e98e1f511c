"""What one PPO rollout leaves for the update: per-token tensors over the response positions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Experience:
    """A batch of scored rollouts. B = prompts x samples per prompt, R = response positions.

    Attributes:
        sequences, attention_mask: (B, P+R) prompt + response (positions after the stop token masked out).
        response_mask: (B, R) tokens that count: up to and including the first stop token.
        old_logprobs: (B, R) log pi_old(y_t) of the policy that sampled them.
        ref_logprobs: (B, R) log pi_ref(y_t).
        values: (B, R) critic's V(s_t), the state before token t, or None without a critic.
        advantages: (B, R), returns: (B, R) or None.
        scores: (B,) the reward source's score minus the missing-EOS penalty: what the update optimises.
        engine_logprobs: (B, R) log μ(y_t), the rollout engine's log-probs of the tokens it sampled, or None.
        mismatch_weights: (B, R) the `mismatch_correction`'s weight on each token's policy loss, or None (no
            correction): a function of old_logprobs - engine_logprobs (rl/mismatch.py).
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor | None
    advantages: torch.Tensor
    returns: torch.Tensor | None
    scores: torch.Tensor
    engine_logprobs: torch.Tensor | None = None
    mismatch_weights: torch.Tensor | None = None

    @property
    def prompt_length(self) -> int:
        return self.sequences.shape[1] - self.response_mask.shape[1]

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def select(self, index: torch.Tensor) -> Experience:
        """The rows in `index` (a minibatch)."""
        # Each field as it is typed: the Optional ones stay None, the others are tensors and stay tensors.
        rows: dict[str, Any] = {
            field.name: None if (value := getattr(self, field.name)) is None else value[index]
            for field in dataclasses.fields(self)
        }
        return Experience(**rows)
