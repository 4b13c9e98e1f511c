"""Every experiment composes; multiruns, hyperparameter searches and W&B offline logging work from any directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_arith_task
import test_bon
import test_stages_e2e
import yaml
from conftest import CLI_FAST, cli, compose_config, logged_names
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lit_rlhf.config import CONFIG_DIR
from lit_rlhf.data import RecordDataModule
from lit_rlhf.loggers import has_wandb_credentials
from lit_rlhf.train import build, fit

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(experiment, tmp_path):
    """Every object the experiment names is built: a wrong target or argument fails here, not at a user's run."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"+experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.task_name == experiment
    run = build(cfg)
    assert type(run.module).__module__.startswith("lit_rlhf.modules.")
    assert isinstance(run.datamodule, RecordDataModule)
    assert run.module.batch_type is run.datamodule.batch_type


@pytest.mark.slow
def test_a_multirun_over_a_glob_of_experiments(tmp_path):
    """`glob(rm_*)` expands to every matching experiment, and each one trains and exports on the command line,
    from a directory outside the repository.

    Every experiment's own run is in test_stages_e2e (in one process); this checks the expansion and the
    sweep summary on the fastest family, instead of re-running all of them (about 200 s) here.
    """
    result = cli(["-m", "+experiment=glob(rm_*)", *CLI_FAST], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    [summary] = tmp_path.glob("outputs/*/multiruns/*/sweep_summary.json")
    jobs = json.loads(summary.read_text())
    ran = sorted(
        override.split("=", 1)[1] for job in jobs for override in job["overrides"] if "experiment=" in override
    )
    expected = [name for name in EXPERIMENTS if name.startswith("rm_")]
    assert len(expected) >= 3 and ran == expected, (ran, expected)
    assert all(job["status"] == "COMPLETED" for job in jobs), jobs
    exports = sorted(tmp_path.glob("outputs/*/multiruns/*/*/export/config.json"))
    assert len(exports) == len(expected), list(tmp_path.rglob("*"))[:20]


def test_every_experiment_has_an_end_to_end_run():
    # Training stages in test_stages_e2e (sft_arith in test_arith_task); best-of-n (no training) in test_bon.
    source = "".join(Path(module.__file__).read_text() for module in (test_stages_e2e, test_bon, test_arith_task))
    missing = [name for name in EXPERIMENTS if f'"{name}"' not in source]
    assert not missing, f"experiments without a fast end-to-end test: {missing}"


# The experiment each search is written for.
SEARCH_EXPERIMENT = {
    "ppo_optuna": "ppo_kl",
    "ppo_pareto": "ppo_kl",
    "dpo_optuna": "dpo",
    "rm_optuna": "rm_tiny",
    "sft_optuna": "sft_tiny",
}


@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_composes_and_searches_existing_keys(search):
    assert search in SEARCH_EXPERIMENT, f"add {search} to SEARCH_EXPERIMENT"
    written = yaml.safe_load((CONFIG_DIR / "hparams_search" / f"{search}.yaml").read_text())
    overrides = [f"+experiment={SEARCH_EXPERIMENT[search]}", f"hparams_search={search}"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert cfg.optimized_metric == written["optimized_metric"]
    assert cfg.hydra.sweeper.params, "a search needs parameters"
    # A typo in a searched key would only fail at the first trial; catch it here.
    missing = [key for key in cfg.hydra.sweeper.params if OmegaConf.select(cfg, key, default="MISSING") == "MISSING"]
    assert not missing, f"{search} searches keys the config does not have: {missing}"


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


def builds_on(experiment: str) -> set[str]:
    """The experiment and every experiment its defaults list patches, transitively."""
    defaults = yaml.safe_load((CONFIG_DIR / "experiment" / f"{experiment}.yaml").read_text()).get("defaults", [])
    parents = [entry for entry in defaults if isinstance(entry, str) and entry != "_self_"]
    return {experiment}.union(*(builds_on(parent) for parent in parents))


PPO_FAMILY = [name for name in EXPERIMENTS if "ppo_kl" in builds_on(name)]


def test_the_ppo_family_is_found():
    assert {"ppo_kl", "grpo", "gspo", "remax", "ppo_nokl"} <= set(PPO_FAMILY) and "dpo" not in PPO_FAMILY


@pytest.mark.parametrize("experiment", PPO_FAMILY)
def test_every_ppo_family_experiment_takes_the_adaptive_controller(experiment, tmp_path):
    """`regularizer/kl/controller=adaptive` starts from `regularizer.kl.coef`; only `none` refuses a controller."""
    overrides = ["regularizer/kl/controller=adaptive", "regularizer.kl.coef=0.07"]
    if experiment == "ppo_nokl":
        with pytest.raises(Exception, match="controller"):
            instantiate(compose_config(experiment, tmp_path, overrides).regularizer.kl)
        return
    kl = instantiate(compose_config(experiment, tmp_path, overrides).regularizer.kl)
    assert type(kl.controller).__name__ == "AdaptiveKLController" and kl.coef == pytest.approx(0.07)
