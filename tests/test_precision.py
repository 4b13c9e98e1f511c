"""trainer.precision=bf16-mixed in every stage; log-probs, values, KL and advantages stay float32; frozen models
in bfloat16 by model.frozen_dtype."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config
from test_lora import _one_thread  # noqa: F401  (autouse)

from lit_rlhf.train import build, fit

BF16 = ["trainer.precision=bf16-mixed", "data.batch_size=4", "data.val_batch_size=8"]
STAGES = {
    "sft_tiny": ["module.val_sample_batches=0"],
    "rm_tiny": [],
    "dpo": ["module.val_sample_batches=0"],
    "ppo_kl": ["module.sampling.max_new_tokens=8"],
}


@pytest.mark.parametrize("experiment", sorted(STAGES))
def test_every_stage_trains_in_bf16_mixed(tmp_path, experiment):
    run = build(compose_config(experiment, tmp_path, [*BF16, *STAGES[experiment]]))
    assert run.trainer.precision == "bf16-mixed"
    # The trained model's linear layers must compute in bf16 in the training steps (autocast applied), not
    # merely run with the flag set: a precision setting that were ignored leaves them float32.
    trained = run.module.model if experiment == "rm_tiny" else run.module.policy
    linear = next(m for m in trained.modules() if isinstance(m, torch.nn.Linear))
    training_dtypes = set()
    linear.register_forward_hook(
        lambda _module, _inputs, output: training_dtypes.add(output.dtype) if torch.is_grad_enabled() else None
    )
    metrics = fit(run)
    assert training_dtypes == {torch.bfloat16}, training_dtypes
    logged = [name for name in ("train/loss", "train/policy_loss", "val/loss", "train/kl") if name in metrics]
    assert logged and all(math.isfinite(metrics[name]) for name in logged), metrics


def test_ppo_rollout_under_bf16_autocast_keeps_float32(tmp_path):
    run = build(compose_config("ppo_kl", tmp_path, [*BF16, *STAGES["ppo_kl"]]))
    module = run.module
    run.datamodule.setup("fit")
    batch = run.datamodule.on_before_batch_transfer(next(iter(run.datamodule.train_dataloader()))[0], 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # The LM head's and the value head's matmuls do run in bf16 here.
        assert module.policy(input_ids=batch.prompts.input_ids).logits.dtype == torch.bfloat16
        experience, metrics, _, _ = module.rollout(batch.prompts)
    for name in ("old_logprobs", "ref_logprobs", "values", "advantages", "returns", "scores"):
        assert getattr(experience, name).dtype == torch.float32, name
    assert metrics["kl"].dtype == torch.float32


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_frozen_models_are_held_in_the_configured_dtype(tmp_path, dtype):
    module = build(compose_config("ppo_kl", tmp_path, [f"model.frozen_dtype={dtype}"])).module
    expected = getattr(torch, dtype)
    assert {p.dtype for p in module.reference.copy.parameters()} == {expected}
    assert {p.dtype for p in module.reward.components["model"].model.parameters()} == {expected}
    assert {p.dtype for p in module.policy.parameters()} == {torch.float32}, "the trained models stay float32"
