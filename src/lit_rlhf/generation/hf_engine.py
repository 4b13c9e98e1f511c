"""`generation=hf`: HF `generate` on the policy itself (the default), with the sampler's log-probs recorded."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList

from lit_rlhf.generation.process_state import seeded_torch_rng
from lit_rlhf.generation.rollout import Rollout
from lit_rlhf.ops.generation import Generation, SamplingConfig, generate


class SampledTokenLogprobs(LogitsProcessor):
    """Records log softmax of the logits HF's sampler is handed, at the token each step then sampled.

    HF runs custom processors before its temperature, top-k and top-p warpers, so these are the raw
    logits' log-probs (the trainer's distribution). Step t's token is only known at step t + 1 (the last
    column of `input_ids`), so one step's (B, V) log-probs wait in `pending`: memory stays O(B·V).
    """

    def __init__(self):
        self.steps: list[torch.Tensor] = []  # (B,) per recorded step
        self.pending: torch.Tensor | None = None  # (B, V) the last step's log-probs

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.pending is not None:
            self.steps.append(self.pending.gather(1, input_ids[:, -1:]).squeeze(1))
        self.pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def of(self, response_ids: torch.Tensor) -> torch.Tensor:
        """(B, R) the log-prob of each response token (HF may run, then undo, steps past the last token)."""
        width = response_ids.shape[1]
        steps = self.steps[:width]
        if len(steps) < width:
            assert self.pending is not None, "a step past the recorded ones follows a recorded step"
            steps.append(self.pending.gather(1, response_ids[:, len(steps) : len(steps) + 1]).squeeze(1))
        return torch.stack(steps, dim=1) if steps else response_ids.new_zeros(response_ids.shape, dtype=torch.float)


class HFEngine:
    """Samples with `lit_rlhf.ops.generation.generate` on the live policy: the same tokens as calling it directly
    for the same RNG state, plus the sampler's log-probs of them.

    Args:
        policy: the trained causal LM (or its peft wrapper); the engine reads its weights as they are.
        stop_token_ids: tokens that end a response.
        pad_token_id: what follows a response's stop token.
    """

    def __init__(self, policy: nn.Module, stop_token_ids: Sequence[int], pad_token_id: int):
        self.policy, self.stop_token_ids, self.pad_token_id = policy, list(stop_token_ids), pad_token_id

    @torch.no_grad()
    def generate(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, sampling: SamplingConfig, seed: int | None = None
    ) -> Rollout:
        recorder = SampledTokenLogprobs()
        with seeded_torch_rng(seed, prompt_ids.device):
            generation: Generation = generate(
                self.policy,
                prompt_ids,
                prompt_mask,
                sampling,
                self.stop_token_ids,
                self.pad_token_id,
                LogitsProcessorList([recorder]),
            )
        logprobs = recorder.of(generation.response_ids).masked_fill(~generation.response_mask, 0.0)
        return Rollout(generation, logprobs)

    def sync_weights(self, policy: nn.Module) -> None:
        """Nothing to copy: HF generate runs on the policy's own weights."""
