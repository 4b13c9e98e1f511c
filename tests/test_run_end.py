"""How a run ends: `trainer.max_steps` counts batches, the last batch is validated, nothing finished is a failure."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import CLI_FAST, cli, compose_config, read_metrics

from lit_rlhf.train import build, fit, optimized_value

PPO_SHORT = ["module.sampling.max_new_tokens=8", "data.batch_size=4", "data.val_batch_size=8"]


def validation_rows(output_dir) -> list[dict]:
    return [row for row in read_metrics(output_dir) if "val/kl" in row or "val/loss" in row]


def test_ppo_max_steps_counts_iterations_and_the_run_ends_validated(tmp_path):
    # The experiment validates every 20 batches: a 3-iteration run never reaches its first validation.
    overrides = [*PPO_SHORT, "trainer.max_steps=3", "trainer.limit_train_batches=60", "trainer.val_check_interval=20"]
    run = build(compose_config("ppo_kl", tmp_path, overrides))
    metrics = fit(run)
    assert run.run_length.batches_done(run.trainer) == 3, "max_steps=3 must mean 3 PPO iterations"
    assert optimized_value(run.cfg, metrics) is not None
    assert len(validation_rows(tmp_path)) == 1, "one validation, at the end"


def test_a_last_batch_already_validated_is_not_validated_twice(tmp_path):
    overrides = [*PPO_SHORT, "trainer.limit_train_batches=2", "trainer.val_check_interval=2"]
    run = build(compose_config("ppo_kl", tmp_path, overrides))
    fit(run)
    assert len(validation_rows(tmp_path)) == 1


def test_validation_interval_beyond_the_epoch_is_clamped_with_a_notice(tmp_path, caplog):
    overrides = [*PPO_SHORT, "trainer.limit_train_batches=2", "trainer.val_check_interval=5"]
    with caplog.at_level(logging.WARNING, logger="lit_rlhf"):
        run = build(compose_config("ppo_kl", tmp_path, overrides))
    notices = [r.getMessage() for r in caplog.records if "val_check_interval" in r.getMessage()]
    assert notices == [
        "trainer.val_check_interval=5 is more than the 2 training batches of an epoch; validating every 2"
    ]
    fit(run)
    assert len(validation_rows(tmp_path)) == 1


def test_an_optimized_metric_that_was_not_logged_is_a_warning(tmp_path, caplog):
    cfg = compose_config("rm_tiny", tmp_path)
    with caplog.at_level(logging.WARNING, logger="lit_rlhf"):
        assert optimized_value(cfg, {"val/loss": 0.5, "train/loss": 0.4}) is None
    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith("optimized_metric 'val/gold_accuracy' was not logged, so this run reports no value")
    assert "val/loss" in message


@pytest.mark.slow
def test_a_run_on_data_without_a_gold_reward_exits_zero(tmp_path):
    """The embedded experiments name a gold metric; on real data the run still finishes and exits 0."""
    rows = [{"prompt": f"Question {i}?", "chosen": " A fine answer.", "rejected": " No."} for i in range(12)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["+experiment=rm_tiny", "data=jsonl", f"data.path={data}", "data.val_split=null", "data.val_fraction=0.25"]
    result = cli([*args, *CLI_FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "optimized_metric 'val/gold_accuracy' was not logged" in result.stdout + result.stderr
    assert list(tmp_path.glob("outputs/rm_tiny/runs/*/export/config.json"))


def test_inside_a_search_a_trial_without_its_metric_is_recorded_as_failed(capsys):
    """The run itself finishes (exit 0, a warning); the search records the trial as failed and says why."""
    import optuna
    from hydra.core.utils import JobReturn, JobStatus
    from optuna.trial import TrialState

    from hydra_plugins.lit_rlhf_sweeper.optuna_sweeper import OptunaSweeper

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    sweeper = OptunaSweeper.__new__(OptunaSweeper)  # only the metric names matter to _tell
    sweeper.metrics = ["val/gold_accuracy"]
    sweeper._tell(study, trial, JobReturn(status=JobStatus.COMPLETED, _return_value=None))
    assert study.trials[0].state == TrialState.FAIL
    assert f"trial {trial.number} gave no value of val/gold_accuracy: recorded as failed" in capsys.readouterr().out
