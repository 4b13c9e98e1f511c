"""Parallel sweeps keep jobs apart: under hydra/launcher=local_parallel a joblib worker runs job after job in one
process, and each job's loggers, callbacks and globals must start fresh."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import CLI_FAST, cli

from lit_rlhf.wandb_history import read_offline_run

# What only one stage logs: a column of the other stage's in a job's file would be state carried over.
OWN = {"reward model": "val/gold_accuracy", "dpo": "train/dpo_loss"}
STAGE = {"rm_tiny": "reward model", "rm_margin": "reward model", "dpo": "dpo"}


@pytest.mark.slow
def test_jobs_of_a_parallel_sweep_each_write_their_own_aligned_metrics(tmp_path):
    wandb_and_csv = [*CLI_FAST, "logger=wandb"]  # the default logger: W&B (offline) + CSV
    # Three jobs on two worker processes: the third runs in a process that ran one of the first two.
    args = ["-m", "hydra/launcher=local_parallel", *wandb_and_csv, "+experiment=rm_tiny,dpo,rm_margin"]
    result = cli(args, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(tmp_path.glob("outputs/*/multiruns/*/[0-9]*"), key=lambda job: int(job.name))
    assert [job.name for job in jobs] == ["0", "1", "2"]
    processes, run_ids = set(), set()
    for job in jobs:
        stage = STAGE[job.parents[2].name]
        status = json.loads((job / "status.json").read_text())
        assert status["status"] == "finished"
        processes.add(status["pid"])
        with open(job / "csv" / "metrics.csv", newline="") as handle:
            header, *rows = list(csv.reader(handle))
        assert rows and all(len(row) == len(header) for row in rows), f"job {job.name}: misaligned rows"
        other = OWN["dpo" if stage == "reward model" else "reward model"]
        assert OWN[stage] in header and other not in header, (job.name, header)
        steps = [int(row[header.index("step")]) for row in rows]
        assert steps == sorted(steps) and steps[0] == 0, (job.name, steps)
        [wandb_run] = job.glob("wandb/offline-run-*")
        logged = set().union(*read_offline_run(wandb_run).history)
        assert OWN[stage] in logged and other not in logged, (job.name, sorted(logged))
        run_ids.add(read_offline_run(wandb_run).run_id)
    assert len(run_ids) == 3, "each job its own W&B run"
    assert len(processes) < 3, "no worker ran two jobs: the test did not exercise a reused process"


def test_a_job_starts_without_the_previous_jobs_w_and_b_run_or_seed(tmp_path, monkeypatch):
    import os

    import wandb

    from lit_rlhf.command import fresh_job_state

    monkeypatch.setenv("WANDB_MODE", "offline")
    leaked = wandb.init(project="leak", dir=str(tmp_path))  # a job that ended without closing its run
    os.environ["PL_GLOBAL_SEED"] = "7"
    fresh_job_state()
    assert wandb.run is None and leaked is not None
    assert "PL_GLOBAL_SEED" not in os.environ
