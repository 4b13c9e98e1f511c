"""Sweeps end to end at tiny scale: a KL-coefficient multirun logged to W&B offline and plotted, an Optuna
search on DPO, a sweep with a job that fails on purpose, `glob(...)` over experiments, and the launchers."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import CLI_FAST, cli
from hydra import compose, initialize_config_dir

from lit_rlhf import analysis, plot
from lit_rlhf.config import CONFIG_DIR
from lit_rlhf.runs import load_runs
from lit_rlhf.wandb_history import read_offline_run

KL_COEFS = ("0", "0.05", "0.2")


def sweep_dir_of(root: Path, task: str) -> Path:
    [sweep] = (root / "outputs" / task / "multiruns").iterdir()
    return sweep


def test_kl_sweep_gives_one_grouped_wandb_run_per_job_and_plots_the_frontier(tmp_path):
    wandb_fast = [arg for arg in CLI_FAST if arg != "logger=csv"]  # the default logger: W&B (offline) + CSV
    args = ["-m", "+experiment=ppo_kl", *wandb_fast, f"regularizer.kl.coef={','.join(KL_COEFS)}"]
    result = cli(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir_of(tmp_path, "ppo_kl")

    runs = [read_offline_run(next((sweep / str(job) / "wandb").glob("offline-run-*"))) for job in range(3)]
    assert len({run.run_id for run in runs}) == 3, "each job must get its own W&B run"
    assert len({run.group for run in runs}) == 1 and runs[0].group.startswith("ppo_kl-")
    assert [run.name for run in runs] == ["ppo_kl-0", "ppo_kl-1", "ppo_kl-2"]
    for run, coef in zip(runs, KL_COEFS):
        assert run.config["regularizer"]["kl"]["coef"] == float(coef)  # the resolved config
        logged = set().union(*run.history)
        assert {"train/kl", "train/reward", "val/gold_reward"} <= logged, sorted(logged)

    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary] == ["COMPLETED"] * 3
    assert all(job["metric"] == "val/gold_reward" and job["value"] is not None for job in summary)

    assert plot.main([str(sweep), "--source", "wandb"]) == 0
    assert (sweep / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sweep / "curves.png").stat().st_size > 0
    [one] = load_runs([next((sweep / "1" / "wandb").glob("offline-run-*"))])
    assert one.source == "wandb" and f"regularizer.kl.coef={KL_COEFS[1]}" in one.overrides
    points = analysis.frontier_points(load_runs([sweep], "wandb"))
    assert sorted(point.label for point in points) == [f"coef={c}" for c in KL_COEFS]
    assert all(point.proxy is not None and point.gold is not None for point in points)


def test_optuna_search_on_dpo_prints_the_best_parameters(tmp_path):
    args = [
        "+experiment=dpo",
        "hparams_search=dpo_optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_startup_trials=2",
        *CLI_FAST,
    ]
    result = cli(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Best parameters" in result.stdout + result.stderr
    sweep = sweep_dir_of(tmp_path, "dpo")
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"loss.dpo.beta", "module.optimizer.lr", "regularizer.nll.coef"}
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert len(summary) == 4 and best["best_value"] == max(job["value"] for job in summary)


def test_a_failed_job_is_reported_and_the_others_keep_their_results(tmp_path):
    # Two processes at once (joblib), the middle job with an impossible batch size.
    args = ["-m", "hydra/launcher=local_parallel", "+experiment=rm_tiny", *CLI_FAST, "data.batch_size=4,-1,8"]
    result = cli(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 3 jobs failed" in result.stderr
    # Reported as it happens (the job's log goes to the console), with its overrides and the error.
    [report] = [line for line in (result.stdout + result.stderr).splitlines() if "job 1 failed" in line]
    assert "data.batch_size=-1" in report and "data.batch_size must be an integer >= 1, got -1" in report
    sweep = sweep_dir_of(tmp_path, "rm_tiny")
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert "batch_size" in summary[1]["error"]
    assert "| 1 | FAILED |" in (sweep / "sweep_summary.md").read_text()
    for job in (0, 2):
        assert (sweep / str(job) / "export" / "config.json").exists()
        assert summary[job]["metric"] == "val/gold_accuracy" and 0.0 <= summary[job]["value"] <= 1.0


def test_launcher_configs_compose():
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        slurm = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
        local = compose("train", overrides=["hydra/launcher=local_parallel"], return_hydra_config=True).hydra.launcher
    assert slurm._target_.endswith("submitit_launcher.SlurmLauncher") and slurm.gpus_per_node == 1
    assert local._target_.endswith("joblib_launcher.JoblibLauncher") and local.n_jobs == 2
