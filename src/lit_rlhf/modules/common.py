"""Small helpers the stage modules share by composition (the modules never inherit from each other)."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from typing import TypeVar, cast

import torch
from torch import nn
from torchmetrics import Metric

from lit_rlhf.errors import NonFiniteError
from lit_rlhf.ops.distributed import every_rank
from lit_rlhf.ops.finite import gradients_finite
from lit_rlhf.ops.generation import Generation, SamplingConfig, decode_responses, generate
from lit_rlhf.rewards import as_reward

log = logging.getLogger("lit_rlhf")

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def build_optimizer(
    optimizer_factory, parameters, scheduler_factory=None, num_training_steps: int | float | None = None
):
    """Bind a Hydra `_partial_` optimizer (and optional scheduler) to parameters, in Lightning's return format."""
    optimizer = optimizer_factory(params=[p for p in parameters if p.requires_grad])
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer, num_training_steps=num_training_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def freeze(model: ModuleT) -> ModuleT:
    """Eval mode and no gradients: reference and reward models never train."""
    model.eval()
    model.requires_grad_(False)
    return model


def frozen_gold(gold_reward):
    """The gold reward as a frozen `Reward` (a plain function becomes a one-component one), or None."""
    return freeze(as_reward(gold_reward)) if gold_reward is not None else None


def without_frozen(state_dict: dict, prefixes: tuple[str, ...]) -> dict:
    """A checkpoint's weights without the frozen models under `prefixes`: they are rebuilt from their paths."""
    return {key: value for key, value in state_dict.items() if not key.startswith(prefixes)}


def with_frozen(module: nn.Module, state_dict: dict, prefixes: tuple[str, ...]) -> None:
    """Put the module's own frozen weights back into a checkpoint that left them out, so strict loading
    checks every trained weight and nothing else."""
    state_dict.update({key: value for key, value in module.state_dict().items() if key.startswith(prefixes)})


def disable_dropout(model: nn.Module) -> None:
    """RL needs the same distribution at rollout and update time, so dropout is switched off (as TRL does)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def handle_nonfinite(what: str, step: int, skip: bool, hint: str = "") -> None:
    """Stop the run with a message naming the step (and `hint`, a further remedy), or warn that the update
    is skipped."""
    if not skip:
        raise NonFiniteError(
            f"non-finite {what} at step {step}; nothing was trained on it. "
            f"Lower the learning rate{hint}, or set module.skip_nonfinite_updates=true to skip such updates"
        )
    log.warning("skipping the update at step %d: non-finite %s", step, what)


def finite_or_skip(what: str, step: int, skip: bool, *tensors: torch.Tensor, hint: str = "") -> bool:
    """True when every tensor is finite on every rank; otherwise stop the run, or warn and return False
    (skip this update). All ranks decide together, so none steps while another skips."""
    if every_rank(all_finite(*tensors)):
        return True
    handle_nonfinite(what, step, skip, hint)
    return False


def finite_gradients_or_skip(what: str, step: int, skip: bool, parameters: Sequence[nn.Parameter]) -> bool:
    """Before an optimizer step: True when every gradient is finite on every rank; otherwise stop the run, or
    warn and return False, and the caller drops the step (a finite loss can still give a NaN gradient)."""
    if every_rank(gradients_finite(parameters)):
        return True
    handle_nonfinite(what, step, skip)
    return False


def configure_optimizer(module, parameters):
    """`configure_optimizers` of a one-optimizer stage: its `optimizer_factory` and `scheduler_factory`."""
    steps = fit_optimizer_steps(module.trainer) if module.scheduler_factory is not None else None
    return build_optimizer(module.optimizer_factory, parameters, module.scheduler_factory, steps)


def fit_optimizer_steps(trainer) -> int | float:
    """The optimizer steps of the whole fit, as `trainer.estimated_stepping_batches` counts them.

    Counted on a loader of the datamodule's own: `estimated_stepping_batches` sets up the trainer's training
    loader before a checkpoint is restored, and a resumed run then never loads the loader's saved position
    and restarts its epoch (Lightning #20550).
    """
    if trainer.max_epochs == -1:
        return float("inf") if trainer.max_steps == -1 else trainer.max_steps
    if trainer.datamodule is None:
        return trainer.estimated_stepping_batches
    batches = len(trainer.datamodule.train_dataloader())
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif limit is not None:
        batches = int(batches * limit)
    steps = math.ceil(batches / trainer.accumulate_grad_batches) * max(trainer.max_epochs, 1)
    return min(steps, trainer.max_steps) if trainer.max_steps != -1 else steps


def log_learning_rate(module, batch_size: int) -> None:
    """`train/lr` of the (first) optimizer."""
    module.log("train/lr", module.optimizers().param_groups[0]["lr"], batch_size=batch_size)


class MetricDict(nn.ModuleDict):
    """A ModuleDict of torchmetrics metrics that says so to a type checker (a ModuleDict's items are Modules)."""

    def __getitem__(self, key: str) -> Metric:
        return cast(Metric, super().__getitem__(key))


def log_updated_metrics(module, metrics: nn.ModuleDict, prefix: str, prog_bar: Sequence[str] = ()) -> None:
    """Log `prefix/name` for every metric that received values this epoch.

    A metric with no data source (e.g. the gold reward on real data) is never updated,
    so it is not logged rather than logged as a meaningless 0.
    """
    for name, metric in metrics.items():
        if metric.update_called:
            module.log(f"{prefix}/{name}", metric, prog_bar=name in prog_bar)


class StdMetric(Metric):
    """The population standard deviation of every value seen, over all ranks (sums of values and squares)."""

    total: torch.Tensor  # the states add_state registers
    squares: torch.Tensor
    count: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        for name in ("total", "squares", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        values = values.detach().double().flatten()
        self.total += values.sum()
        self.squares += (values**2).sum()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        mean = self.total / self.count
        return (self.squares / self.count - mean**2).clamp(min=0).sqrt().float()


def update_scored(metric: Metric, values: torch.Tensor, scored: torch.Tensor) -> None:
    """Update `metric` with the values of the scored rows (a reward's unscored rows are no data); none, no update."""
    values = values.detach().flatten()[scored.to(values.device).flatten()]
    if values.numel():
        metric.update(values)


def update_finite(metric: Metric, values: torch.Tensor) -> None:
    """Update `metric` with the values that are not NaN (a gold reward's unscored rows); none, no update."""
    update_scored(metric, values, ~torch.isnan(values))


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


def seeded_samples(
    policy: nn.Module,
    tokenizer,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    sampling: SamplingConfig,
    stop_token_ids: Sequence[int],
    seed: int,
) -> tuple[Generation, list[str]]:
    """Validation samples: responses to held-out prompts drawn with a fixed seed, and their texts."""
    with seeded_rng(seed, prompt_ids.device):
        generation = generate(policy, prompt_ids, prompt_mask, sampling, stop_token_ids, tokenizer.pad_token_id)
    return generation, decode_responses(tokenizer, generation)


def gold_of_samples(
    policy: nn.Module,
    tokenizer,
    sampling: SamplingConfig,
    gold_reward,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    prompts: Sequence[str],
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gold reward (B,) and length (B,) of seeded validation samples, for `val/gold_reward`."""
    generation, responses = seeded_samples(
        policy, tokenizer, prompt_ids, prompt_mask, sampling, [tokenizer.eos_token_id], seed
    )
    gold = gold_reward(prompts, responses).to(prompt_ids.device, torch.float32)
    return gold, generation.response_mask.sum(-1).float()
