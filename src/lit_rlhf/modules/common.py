"""Small helpers the stage modules share by composition (the modules never inherit from each other)."""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Sequence

import torch
from torch import nn

from lit_rlhf.errors import NonFiniteError
from lit_rlhf.rl.rollout import Generation, SamplingConfig, decode_responses, generate

log = logging.getLogger("lit_rlhf")


def build_optimizer(optimizer_factory, parameters, scheduler_factory=None, num_training_steps: int | None = None):
    """Bind a Hydra `_partial_` optimizer (and optional scheduler) to parameters, in Lightning's return format."""
    optimizer = optimizer_factory(params=[p for p in parameters if p.requires_grad])
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer, num_training_steps=num_training_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: reference and reward models never train."""
    model.eval()
    model.requires_grad_(False)
    return model


def disable_dropout(model: nn.Module) -> None:
    """RL needs the same distribution at rollout and update time, so dropout is switched off (as TRL does)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def handle_nonfinite(what: str, step: int, skip: bool) -> None:
    """Stop the run with a message naming the step, or warn that the update is skipped."""
    if not skip:
        raise NonFiniteError(
            f"non-finite {what} at step {step}; nothing was trained on it. "
            "Lower the learning rate, or set module.skip_nonfinite_updates=true to skip such updates"
        )
    log.warning("skipping the update at step %d: non-finite %s", step, what)


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device):
    """Sample with a fixed seed without disturbing the training RNG stream.

    Validation then compares checkpoints on identical random draws, and a resumed
    run sees the same training randomness as an uninterrupted one.
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def sample_and_score(
    policy: nn.Module,
    tokenizer,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    prompts: Sequence[str],
    sampling: SamplingConfig,
    score_texts: Callable[[Sequence[str], Sequence[str]], torch.Tensor],
) -> tuple[Generation, list[str], torch.Tensor]:
    """Sample responses to held-out prompts and score their texts (e.g. with the task's gold reward)."""
    generation = generate(policy, prompt_ids, prompt_mask, sampling, [tokenizer.eos_token_id], tokenizer.pad_token_id)
    responses = decode_responses(tokenizer, generation)
    scores = score_texts(prompts, responses).to(prompt_ids.device, torch.float32)
    return generation, responses, scores
