"""Lightning's gradient accumulation in the reward model and DPO: batch 8 × 1 and batch 2 × 4 give the same
weights after one optimizer step. Plain SGD without clipping, so a wrongly scaled or weighted gradient shows
(Adam's first step is nearly sign(g) and would hide a scale error)."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config

from lit_rlhf.train import build, fit

# No warm-up: its first step has learning rate 0.
SGD = [
    "module.optimizer._target_=torch.optim.SGD",
    "module.optimizer.lr=0.5",
    "module.scheduler.num_warmup_steps=0",
    "trainer.gradient_clip_val=null",
]


@pytest.mark.parametrize(
    ("experiment", "extra"),
    [
        ("rm_tiny", []),
        ("dpo", ["module.val_sample_batches=0", "regularizer/nll=chosen"]),
        # SFT: each batch is normalised by its accumulation window's response tokens (lit_rlhf.data.windows).
        ("sft_tiny", ["module.val_sample_batches=0", "~module.optimizer.betas"]),
    ],
)
def test_batch_8_equals_batch_2_accumulated_4_times(tmp_path, experiment, extra):
    weights = {}
    for batch_size, accumulate in ((8, 1), (2, 4)):
        overrides = [
            *SGD,
            *extra,
            f"data.batch_size={batch_size}",
            f"trainer.accumulate_grad_batches={accumulate}",
            f"trainer.limit_train_batches={accumulate}",
            "trainer.limit_val_batches=0",
            "validate_after_fit=false",
        ]
        run = build(compose_config(experiment, tmp_path / f"{batch_size}x{accumulate}", overrides))
        model = run.module.model if experiment == "rm_tiny" else run.module.policy
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        fit(run)
        assert run.trainer.global_step == 1, "one optimizer step each"
        weights[accumulate] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (weights[1] - before).abs().max() > 1e-4, "the step must move the weights"
    torch.testing.assert_close(weights[4], weights[1], rtol=0, atol=1e-6)
