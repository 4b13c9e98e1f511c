"""Signals sent to real command-line runs: a checkpoint at the next step boundary, exit 128 + signal, one line,
the run reported stopped (status.json, W&B), nothing half-written; then the run continues in its own folder
from that checkpoint to the weights of a run never interrupted, bit for bit (PPO after SIGTERM, DPO after
SIGINT). SIGUSR1 under Lightning's SLURM environment also requeues the job, and `ckpt_path=last` continues it."""

from __future__ import annotations

import csv
import signal
import stat
from pathlib import Path

import pytest
import torch
from conftest import CLI_FAST, compose_config
from reliability_tools import (
    cli_env,
    leftovers,
    load_finite_checkpoint,
    one_line,
    pause_at,
    signal_when_paused,
    start_cli,
    status_of,
)

from lit_rlhf.train import build, fit

# Three training batches, no closing validation (the weights are what is compared).
SHORT = ["trainer.limit_train_batches=3", "validate_after_fit=false"]
STAGES = {
    # stage: (experiment, overrides, signal, the CSV column of a training step). PPO continues on the command
    # line (the run folder found from ckpt_path), DPO in-process (faster; the same build and fit).
    "ppo": ("ppo_kl", ["module.sampling.max_new_tokens=8", *SHORT], signal.SIGTERM, "train/reward"),
    "dpo": ("dpo", ["module.val_sample_batches=0", *SHORT], signal.SIGINT, "train/loss"),
}


def training_steps(run_dir: Path, column: str) -> list[int]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get(column)]


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_signalled_run_stops_at_a_step_and_continues_to_the_uninterrupted_weights(tmp_path, stage):
    experiment, overrides, signum, column = STAGES[stage]
    reference = build(
        compose_config(experiment, tmp_path / "reference", ["data.batch_size=4", "data.val_batch_size=8", *overrides])
    )
    fit(reference)
    expected = reference.module.state_dict()

    run_dir, flag = tmp_path / "run", tmp_path / "paused"
    args = [f"+experiment={experiment}", *CLI_FAST, *overrides]
    process = start_cli([*args, f"hydra.run.dir={run_dir}", *pause_at(1, flag)], cwd=tmp_path)
    _, stderr = signal_when_paused(process, flag, signum)

    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum  # 143 for SIGTERM, 130 for SIGINT
    line = one_line(stderr, "stopped by")
    checkpoint_path = run_dir / "checkpoints" / "last.ckpt"
    assert line.startswith(f"stopped by {name} after training batch 2; checkpoint: {checkpoint_path}")
    status = status_of(run_dir)
    assert (status["status"], status["signal"], status["exit_code"]) == ("stopped", name, 128 + signum)
    checkpoint = load_finite_checkpoint(checkpoint_path)
    assert checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"] == 2
    assert not (run_dir / "export").exists(), "a stopped run exports nothing"
    assert not leftovers(run_dir)
    assert training_steps(run_dir, column) == [0, 1], "the checkpointed step's metrics were logged"

    if stage == "ppo":
        # The same command with ckpt_path (no run folder named): it continues in the folder holding the checkpoint.
        resumed = start_cli([*args, f"ckpt_path={checkpoint_path}"], cwd=tmp_path)
        _, stderr = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, stderr[-3000:]
        status = status_of(run_dir)
        assert status["status"] == "finished" and status["previous"]["status"] == "stopped"
    else:
        in_process = ["data.batch_size=4", "data.val_batch_size=8", *overrides, f"ckpt_path={checkpoint_path}"]
        fit(build(compose_config(experiment, run_dir, in_process)))
    assert training_steps(run_dir, column) == [0, 1, 2], "one history, each step once"
    final = load_finite_checkpoint(checkpoint_path)["state_dict"]
    assert final.keys() <= expected.keys() and final
    for key, value in final.items():
        assert torch.equal(value, expected[key]), f"{key} differs from the uninterrupted run"
    export = run_dir / "export"
    assert (export / "model.safetensors").exists() and not list(export.glob("*.bin"))


@pytest.mark.slow
def test_slurm_requeue_signal_checkpoints_requeues_and_the_requeued_job_continues(tmp_path):
    # Lightning's SLURM environment (auto-requeue) with a stand-in scontrol that records its arguments.
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "rm", "SLURM_JOB_ID": "4242", "SLURM_NODELIST": "node1"}
    slurm.update(SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0")
    env = cli_env({**slurm, "PATH": f"{scontrol.parent}:{cli_env()['PATH']}"})
    run_dir, flag = tmp_path / "slurm-4242", tmp_path / "paused"
    overrides = ["trainer.limit_train_batches=3", "ckpt_path=last"]
    process = start_cli(
        ["+experiment=rm_tiny", *CLI_FAST, *overrides, f"hydra.run.dir={run_dir}", *pause_at(1, flag)], tmp_path, env
    )
    _, stderr = signal_when_paused(process, flag, signal.SIGUSR1)

    assert process.returncode == 128 + signal.SIGUSR1
    line = one_line(stderr, "stopped by")
    assert line.startswith("stopped by SIGUSR1 after training batch 2;") and line.endswith("SLURM job 4242 requeued")
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    load_finite_checkpoint(run_dir / "checkpoints" / "last.ckpt")

    # The requeued job: same command, same folder; ckpt_path=last finds the checkpoint and trains the last batch.
    requeued = build(compose_config("rm_tiny", run_dir, ["data.batch_size=4", "data.val_batch_size=8", *overrides]))
    assert requeued.ckpt_path == str(run_dir / "checkpoints" / "last.ckpt")
    fit(requeued)
    assert requeued.trainer.fit_loop.epoch_loop.batch_progress.total.processed == 3


def test_w_and_b_records_a_signalled_run_as_failed_with_its_exit_code(tmp_path, monkeypatch):
    import wandb

    from lit_rlhf.loggers import close_loggers, wandb_logger
    from lit_rlhf.wandb_history import read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    codes = {}
    for status, exit_code in (("success", None), ("failed", 128 + signal.SIGTERM)):  # as fit() closes them
        logger = wandb_logger(project="p", save_dir=str(tmp_path / status), offline=True)
        logger.log_metrics({"train/loss": 1.0})
        close_loggers([logger], status, exit_code)
        wandb.teardown()
        [run] = (tmp_path / status).glob("wandb/offline-run-*")
        codes[status] = read_offline_run(run).exit_code
    assert codes == {"success": 0, "failed": 143}
