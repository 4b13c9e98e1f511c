"""Every experiment composes; multiruns, hyperparameter searches and W&B offline logging work from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_stages_e2e
import yaml
from conftest import FAST, compose_config, logged_names
from hydra import compose, initialize_config_dir

from lit_rlhf.config import CONFIG_DIR
from lit_rlhf.loggers import has_wandb_credentials
from lit_rlhf.train import build, fit

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"+experiment={experiment}"])
    assert cfg.task_name == experiment
    assert cfg.module._target_.startswith("lit_rlhf.modules.")
    assert cfg.data._target_.startswith("lit_rlhf.data.datamodules.")


def test_every_experiment_has_an_end_to_end_run():
    source = Path(test_stages_e2e.__file__).read_text()
    missing = [name for name in EXPERIMENTS if f'"{name}"' not in source]
    assert not missing, f"experiments without a fast end-to-end test: {missing}"


@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_composes(search):
    experiment = yaml.safe_load((CONFIG_DIR / "hparams_search" / f"{search}.yaml").read_text())
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=ppo_kl", f"hparams_search={search}"], return_hydra_config=True)
    assert cfg.optimized_metric == experiment["optimized_metric"]
    assert cfg.hydra.sweeper.params, "a search needs parameters"


def cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m lit_rlhf.train ...` in a directory outside the repository, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "lit_rlhf.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


CLI_FAST = [arg for arg in FAST if not arg.startswith("~")] + [
    "~callbacks.progress_bar",
    "data.batch_size=4",
    "data.val_batch_size=8",
]


def test_multirun_over_experiments_from_another_directory(tmp_path):
    result = cli(["-m", "+experiment=rm_tiny,dpo", *CLI_FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    exports = sorted(tmp_path.glob("outputs/*/multiruns/*/*/export/config.json"))
    assert len(exports) == 2, list(tmp_path.rglob("*"))[:20]


def test_hyperparameter_search_reports_the_best_value(tmp_path):
    args = [
        "+experiment=rm_tiny",
        "hparams_search=rm_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        *CLI_FAST,
    ]
    result = cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [summary] = tmp_path.glob("outputs/rm_tiny/multiruns/*/optimization_results.yaml")
    best = yaml.safe_load(summary.read_text())
    assert 0.0 <= best["best_value"] <= 1.0
    assert set(best["best_params"]) == {"module.optimizer.lr", "module.centering_coef"}


def test_wandb_logs_offline_without_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, so no stored key
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert not has_wandb_credentials()
    overrides = ["logger=wandb", "data.batch_size=4", "data.val_batch_size=8"]
    run = build(compose_config("rm_tiny", tmp_path, [*overrides]))
    fit(run)
    assert list((tmp_path / "wandb").glob("offline-run-*")), "expected an offline W&B run folder"
    assert {"train/loss", "val/gold_accuracy"} <= logged_names(tmp_path)
