"""Non-finite gradients and weights: checked before every optimizer step and after every batch; in skip mode
the step is dropped with the weights AND the optimizer state untouched; otherwise one line. No checkpoint or
export ever holds a NaN or inf (loaded back to check). SFT/RM/DPO optimise automatically, PPO manually."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from conftest import compose_config, parameters_of
from reliability_tools import leftovers, load_finite_checkpoint

from lit_rlhf.callbacks.checkpoint import ResumableCheckpoint
from lit_rlhf.callbacks.export import HFExport
from lit_rlhf.command import find_user_error
from lit_rlhf.errors import NonFiniteError
from lit_rlhf.train import build, fit

STAGES = {
    # stage: (experiment, trained model attribute, overrides)
    "reward_model": ("rm_tiny", "model", ["data.batch_size=4", "data.val_batch_size=8"]),
    "ppo": ("ppo_kl", "policy", ["data.batch_size=4", "data.val_batch_size=4", "module.sampling.max_new_tokens=8"]),
}


def poison_gradients(model: torch.nn.Module) -> None:
    """A finite loss whose gradient is NaN: one weight's gradient is replaced by NaN in the backward pass."""
    weight = next(p for p in model.parameters() if p.requires_grad)
    weight.register_hook(lambda gradient: torch.full_like(gradient, math.nan))


def optimizer_states(run) -> list[dict]:
    optimizers = run.trainer.optimizers
    return [optimizer.state_dict()["state"] for optimizer in optimizers]


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_nan_gradient_is_skipped_leaving_weights_and_optimizer_state_untouched(tmp_path, stage, caplog):
    experiment, name, overrides = STAGES[stage]
    run = build(compose_config(experiment, tmp_path, [*overrides, "module.skip_nonfinite_updates=true"]))
    model = getattr(run.module, name)
    poison_gradients(model)
    before = parameters_of(model)
    with caplog.at_level(logging.WARNING, logger="lit_rlhf"):
        fit(run)
    for key, value in model.named_parameters():
        assert torch.equal(value.detach(), before[key]), f"{key} moved on a NaN gradient"
    assert all(state == {} for state in optimizer_states(run)), "the optimizer took a step (moments or counts)"
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping the update")]
    assert skips and all("gradient" in message for message in skips), skips
    load_finite_checkpoint(tmp_path / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_nan_gradient_stops_the_run_in_one_line_and_nothing_is_saved(tmp_path, stage):
    experiment, name, overrides = STAGES[stage]
    run = build(compose_config(experiment, tmp_path, overrides))
    poison_gradients(getattr(run.module, name))
    with pytest.raises(Exception) as stopped:
        fit(run)
    error = find_user_error(stopped.value)
    assert isinstance(error, NonFiniteError) and "\n" not in str(error)
    assert "gradient at step 0" in str(error) and "module.skip_nonfinite_updates=true" in str(error)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists() and not (tmp_path / "export").exists()


def test_weights_that_overflow_stop_the_run_before_any_checkpoint_holds_them(tmp_path):
    # Finite loss, finite (huge) gradients, a plain SGD step: the update overflows float32 to inf.
    overrides = ["data.batch_size=4", "data.val_batch_size=8", "module.optimizer._target_=torch.optim.SGD"]
    overrides += [
        "module.optimizer.lr=1e10",
        "module.scheduler.num_warmup_steps=0",
        "callbacks.checkpoint.every_n_batches=1",
    ]
    run = build(compose_config("rm_tiny", tmp_path, overrides))
    for weight in run.module.model.parameters():
        weight.register_hook(lambda gradient: gradient * 1e30)
    with pytest.raises(Exception) as stopped:
        fit(run)
    error = find_user_error(stopped.value)
    assert isinstance(error, NonFiniteError) and "the weights became non-finite" in str(error), stopped.value
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists() and not (tmp_path / "export").exists()
    assert not leftovers(tmp_path)


def test_a_checkpoint_or_export_holding_a_nan_is_refused(tmp_path):
    callback = ResumableCheckpoint(str(tmp_path), every_n_batches=1)
    checkpoint = {"state_dict": {"w": torch.tensor([1.0, math.nan])}, "optimizer_states": []}
    with pytest.raises(NonFiniteError, match=r"refusing to save a checkpoint with non-finite values \(state_dict.w"):
        callback.on_save_checkpoint(None, None, checkpoint)

    class Module:
        tokenizer = None

        def export_model(self):
            return torch.nn.Linear(2, 1).requires_grad_(False).apply(lambda m: m.weight.fill_(math.inf))

    class Trainer:
        interrupted, is_global_zero = False, True

    with pytest.raises(NonFiniteError, match=r"refusing to export a model with non-finite weights \(weight\)"):
        HFExport(str(tmp_path / "export")).on_fit_end(Trainer(), Module())
    assert not Path(tmp_path / "export").exists()
