"""Optuna searches on the command line at tiny scale: pruning a deliberately bad region, a search killed with
SIGKILL and restarted, two parallel workers on one two-objective study and its Pareto front.

The trials are SFT (or reward-model) runs of 2 training batches, validated after each one, on the shipped
tiny assets; a study is read back from the SQLite file the search wrote."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import cli, read_metrics
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from lit_rlhf import plot
from lit_rlhf.search.study import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Two training batches per trial, each followed by a validation (the steps a pruner sees), no exports.
TINY = [
    "logger=csv",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.val_check_interval=1",
    "trainer.log_every_n_steps=1",
    "validate_before_fit=false",
    "data.batch_size=4",
    "data.val_batch_size=8",
    "~callbacks.progress_bar",
    "~callbacks.checkpoint",
    "~callbacks.export",
    "+trainer.enable_progress_bar=false",
]
# SFT from scratch: no warm-up and no sampled validation, so the NLL falls from the first step on.
SFT = ["+experiment=sft_tiny", "hparams_search=sft_optuna", *TINY]
SFT += ["module.scheduler.num_warmup_steps=0", "module.val_sample_batches=0"]
GOOD_LR, BAD_LR = 1e-2, 1e-7  # BAD_LR leaves the from-scratch policy where it started


@pytest.fixture(autouse=True)
def _one_thread_per_trial(monkeypatch):
    # Tiny models on a shared 2-core machine: one torch thread per process is several times faster than two
    # threads competing with other processes (and 2 workers x 1 thread fill the 2 cores).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def sweep_dir_of(root: Path, task: str) -> Path:
    [sweep] = (root / "outputs" / task / "multiruns").iterdir()
    return sweep


def load(sweep: Path, name: str) -> optuna.Study:
    # open_storage: SQLite waits for the search's write lock instead of failing.
    return optuna.load_study(study_name=name, storage=open_storage(f"sqlite:///{sweep / 'optuna.db'}"))


@pytest.mark.slow
def test_trials_in_a_bad_region_are_pruned_and_recorded_as_pruned(tmp_path):
    # Random draws from {good, bad} learning rates, seeded so that the first two trials are good: the median
    # pruner waits for 2 finished trials, then stops every bad one at its first validation.
    args = [*SFT, f"module.optimizer.lr=choice({GOOD_LR},{BAD_LR})", "hydra.sweeper.sampler=random"]
    args += [
        "hydra.sweeper.seed=6",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.pruner_options.median.n_startup_trials=2",
    ]
    result = cli(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir_of(tmp_path, "sft_tiny")
    trials = load(sweep, "sft_tiny").trials
    lrs = [trial.params["module.optimizer.lr"] for trial in trials]
    assert len(trials) == 6 and lrs[:2] == [GOOD_LR, GOOD_LR], f"the seed no longer draws good trials first: {lrs}"
    assert BAD_LR in lrs[2:] and GOOD_LR in lrs[2:], lrs
    for trial, lr in zip(trials, lrs):
        if lr == BAD_LR and trial.number >= 2:
            assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1], trial
        else:
            assert trial.state == TrialState.COMPLETE and list(trial.intermediate_values) == [1, 2], trial
    pruned = [trial.number for trial in trials if trial.state == TrialState.PRUNED]

    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["job"] for job in summary if job["status"] == "PRUNED"] == pruned
    assert all("pruned after 1 of 2 training batches" in summary[n]["error"] for n in pruned)
    assert f"Sweep summary (6 jobs, {len(pruned)} pruned, 0 failed)" in result.stdout
    # Each pruned trial skipped 1 of its 2 batches: what the search reports as saved.
    assert f"Pruning stopped {len(pruned)} of 6 trials early: {len(pruned)} training batches not run" in result.stdout
    results = (sweep / "optimization_results.yaml").read_text()
    assert f"pruned: {len(pruned)}" in results and f"batches_skipped: {len(pruned)}" in results


@pytest.mark.slow
def test_a_search_killed_after_two_trials_continues_to_six_without_rerunning_them(tmp_path):
    args = [*SFT, "hydra.sweeper.n_trials=6", "hydra.sweeper.pruner=none", "hydra.sweeper.n_startup_trials=3"]
    args += [f"hydra.sweep.dir={tmp_path / 'search'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    first = subprocess.Popen(
        [sys.executable, "-m", "lit_rlhf.train", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "killed.err").open("w"),
        start_new_session=True,
    )
    sweep, deadline = tmp_path / "search", time.monotonic() + 300
    try:
        while True:  # until 2 trials are done and the third is running
            assert first.poll() is None, (tmp_path / "killed.err").read_text()[-3000:]
            assert time.monotonic() < deadline, "trial 2 never started"
            states = []
            if (sweep / "optuna.db").exists():
                # KeyError: no study yet; SQLAlchemyError: its tables are being created.
                with contextlib.suppress(KeyError, SQLAlchemyError):
                    states = [trial.state for trial in load(sweep, "sft_tiny").get_trials(deepcopy=False)]
            if states[:3] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]:
                break
            time.sleep(0.2)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = load(sweep, "sft_tiny").trials[:2]
    records = {n: (sweep / str(n) / "sweep_job.json").stat().st_mtime_ns for n in (0, 1)}

    result = cli(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 of 6 trials finished" in result.stdout and "rerunning interrupted trial(s) [2]" in result.stdout
    trials = load(sweep, "sft_tiny").trials
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 6
    for old, new in zip(before, trials):  # the first two were not rerun
        assert (new.datetime_complete, new.values, new.params) == (old.datetime_complete, old.values, old.params)
    assert {n: (sweep / str(n) / "sweep_job.json").stat().st_mtime_ns for n in (0, 1)} == records
    assert re.findall(r"\t#(\d+) : ", result.stdout) == ["2", "3", "4", "5"]  # the jobs Hydra launched
    assert len({tuple(sorted(trial.params.items())) for trial in trials}) == 6
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["job"] for job in summary] == list(range(6))


@pytest.mark.slow
def test_two_parallel_workers_share_a_two_objective_study_and_write_its_pareto_front(tmp_path):
    # The joblib launcher's 2 worker processes: the sweeper asks 2 trials at a time (its n_jobs follows the
    # launcher's); each worker leaves its trial's validations in the same SQLite study. The reward model is
    # scored on two objectives: the lowest held-out loss and the widest held-out reward margin.
    args = ["+experiment=rm_tiny", "hparams_search=rm_optuna", *TINY, "hydra/launcher=local_parallel"]
    args += ["optimized_metric=val/loss", "hydra.sweeper.metrics=[val/loss,val/reward_margin]"]
    args += ["hydra.sweeper.direction=[minimize,maximize]", "hydra.sweeper.pruner=none", "hydra.sweeper.n_trials=4"]
    args += ["module.scheduler.num_warmup_steps=0"]
    result = cli(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 trial(s) at a time" in result.stdout
    sweep = sweep_dir_of(tmp_path, "rm_tiny")
    study = load(sweep, "rm_tiny")
    trials = study.trials
    assert [trial.number for trial in trials] == list(range(4))
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 4
    assert len({tuple(sorted(trial.params.items())) for trial in trials}) == 4
    workers = {trial.user_attrs["training"]["process"] for trial in trials}
    sweeper = {trial.user_attrs["sweeper_process"] for trial in trials}
    assert len(sweeper) == 1 and len(workers) >= 2 and not workers & sweeper, (workers, sweeper)

    front = json.loads((sweep / "pareto_front.json").read_text())
    assert front["metrics"] == ["val/loss", "val/reward_margin"] and front["directions"] == ["minimize", "maximize"]
    assert sorted(row["trial"] for row in front["front"]) == sorted(trial.number for trial in study.best_trials)
    assert len(front["trials"]) == 4 and front["front"]
    # The second objective is each trial's last validation, as its CSV logged it.
    for row in front["trials"]:
        margins = [r["val/reward_margin"] for r in read_metrics(sweep / str(row["trial"])) if "val/reward_margin" in r]
        assert row["values"]["val/reward_margin"] == pytest.approx(margins[-1])
    table = (sweep / "pareto_front.md").read_text()
    assert table.startswith("| trial | val/loss (min) | val/reward_margin (max) |")
    assert "Pareto front (" in result.stdout and table.splitlines()[2] in result.stdout
    assert plot.main([str(sweep), "--source", "csv"]) == 0
    assert (sweep / "pareto_front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Hydra and the sweeper as `python -m lit_rlhf.train` runs them, without importing torch: no trial starts.
HYDRA_APP = """
import hydra
from lit_rlhf.config import CONFIG_DIR, register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg):
    raise AssertionError("no trial may start")


main()
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["+experiment=rm_tiny", "hparams_search=rm_optuna", "hydra.sweeper.sampler=bayes"],
            "error: unknown sampler 'bayes'; choose one of: tpe, cmaes, gp, random, grid",
        ),
        (  # the reward model's search on the SFT stage: a key every trial would miss
            ["+experiment=sft_tiny", "hparams_search=rm_optuna"],
            "error: trial 0 does not compose: Could not override 'module.centering_coef'. To append to your config use",
        ),
    ],
)
def test_a_bad_search_stops_with_one_line_without_a_stack_trace(tmp_path, args, message):
    result = subprocess.run(
        [sys.executable, "-c", HYDRA_APP, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
