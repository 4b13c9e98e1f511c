"""The Optuna sweeper's parts, in process: search spaces, overrides that parse back, one-line config errors,
what pruning saved, the Pareto front and its plot. (End to end: test_search_e2e.py.)"""

from __future__ import annotations

import json

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hydra_plugins.lit_rlhf_sweeper._results import front_table, pareto_front, pruning_savings
from hydra_plugins.lit_rlhf_sweeper._search_space import format_value, parse_search_space
from hydra_plugins.lit_rlhf_sweeper._study import make_sampler
from hydra_plugins.lit_rlhf_sweeper.optuna_sweeper import OptunaSweeper
from lit_rlhf import analysis
from lit_rlhf.errors import ConfigError
from lit_rlhf.search.study import TRAINING

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_search_space_reads_hydra_sweeps_and_the_command_line_fixes_a_key():
    params = {
        "module.optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
        "module.clip_eps": "interval(0.05, 0.4)",
        "optimizer": "choice(adam, sgd)",
        "layers": "range(1, 5)",
        "width": "tag(int, log, interval(8, 64))",
        "dropout": "range(0.1, 0.5, 0.1)",
    }
    space = parse_search_space(
        params, ["module.clip_eps=0.2", "+trainer.x=1", "~callbacks.progress_bar"], OverridesParser.create()
    )
    assert space.distributions == {
        "module.optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "optimizer": CategoricalDistribution(["adam", "sgd"]),
        "layers": IntDistribution(1, 4),  # Hydra's range excludes its stop
        "width": IntDistribution(8, 64, log=True),
        "dropout": FloatDistribution(0.1, 0.4, step=0.1),
    }
    # The command line's plain value replaces the searched interval; other overrides pass through as written.
    assert space.fixed == ["module.clip_eps=0.2", "+trainer.x=1", "~callbacks.progress_bar"]
    assert [param.grid for param in space.params if param.name in ("optimizer", "layers")] == [
        ("adam", "sgd"),
        (1, 2, 3, 4),
    ]


@pytest.mark.parametrize("value", [0.001, 1e-07, 3, True, False, "adam", "1e-3", "true", "a b", "it's", "x/y.z"])
def test_a_trial_override_parses_back_to_its_value(value):
    [override] = OverridesParser.create().parse_overrides([f"key={format_value(value)}"])
    parsed = override.value()
    assert parsed == value and type(parsed) is type(value)
    assert not override.is_sweep_override()


def _sweeper(**settings) -> OptunaSweeper:
    defaults = dict(
        sampler="tpe",
        seed=0,
        n_startup_trials=2,
        sampler_options={},
        pruner="none",
        pruner_options={},
        direction="maximize",
        metrics=["val/gold_reward"],
        storage="sqlite:///never-created.db",
        study_name="s",
        n_trials=2,
        n_jobs=1,
        params={"a": "interval(0, 1)"},
    )
    sweeper = OptunaSweeper(**{**defaults, **settings})
    sweeper.config = OmegaConf.create({"optimized_metric": "val/gold_reward", "callbacks": {}})
    return sweeper


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sampler": "bayes"}, "error: unknown sampler 'bayes'; choose one of: tpe, cmaes, gp, random, grid"),
        (
            {"pruner": "asha"},
            "error: unknown pruner 'asha'; choose one of: none, median, hyperband, successive_halving",
        ),
        (
            {"pruner": "median", "pruner_options": {"median": {"warmup": 3}}},
            "error: pruner 'median' does not take warmup; it takes: n_startup_trials, n_warmup_steps, interval_steps,"
            " n_min_trials",
        ),
        (
            {"pruner_options": {"asha": {}}},
            "error: hydra.sweeper.pruner_options names no pruner 'asha'; choose among: none, median, hyperband,"
            " successive_halving",
        ),
        (
            {"direction": ["maximize", "minimise"]},
            "error: unknown direction 'minimise'; choose one of: maximize, minimize",
        ),
        (
            {"direction": ["maximize", "minimize"], "metrics": ["val/gold_reward", "val/kl"], "pruner": "median"},
            "error: pruning needs one objective, this search has 2: set hydra.sweeper.pruner=none",
        ),
        (
            {"pruner": "median"},
            "error: pruning needs the OptunaPruning callback in callbacks"
            " (see lit_rlhf/conf/hparams_search/ppo_optuna.yaml)",
        ),
    ],
)
def test_bad_search_settings_are_one_line_before_any_storage_is_opened(
    settings, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        _sweeper(**settings).sweep([])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == message + "\n"
    assert not list(tmp_path.iterdir()), "nothing may be written for a config error"


def test_grid_sampler_takes_discrete_parameters_only():
    parser = OverridesParser.create()
    grid = make_sampler("grid", 0, 0, {}, parse_search_space({"a": "choice(1, 2)", "b": "range(0, 3)"}, [], parser), 1)
    assert isinstance(grid, optuna.samplers.GridSampler)
    with pytest.raises(ConfigError, match=r"sampler 'grid' needs choice.* interval: lr"):
        make_sampler("grid", 0, 0, {}, parse_search_space({"lr": "interval(0.1, 1)"}, [], parser), 1)
    space = parse_search_space({"a": "choice(1, 2)"}, [], parser)
    with pytest.raises(
        ConfigError, match="sampler 'random' does not take n_ei_candidates; it takes no further options"
    ):
        make_sampler("random", 0, 0, {"random": {"n_ei_candidates": 3}}, space, 1)
    # Only the chosen sampler's entry applies: switching sampler never hands it another's options.
    tpe = make_sampler("tpe", 0, 0, {"tpe": {"n_ei_candidates": 3}, "random": {}}, space, 1)
    assert tpe._n_ei_candidates == 3
    assert isinstance(
        make_sampler("random", 0, 0, {"tpe": {"n_ei_candidates": 3}}, space, 1), optuna.samplers.RandomSampler
    )


def _trial(state: TrialState, batches: int, planned: int, seconds: float):
    return create_trial(
        state=state,
        value=None if state == TrialState.PRUNED else 1.0,
        intermediate_values={batches: 1.0},
        user_attrs={TRAINING: {"batches": batches, "planned_batches": planned, "seconds": seconds}},
    )


def test_pruning_savings_count_the_skipped_batches_at_each_trials_pace():
    trials = [
        _trial(TrialState.COMPLETE, 10, 10, 20.0),
        _trial(TrialState.PRUNED, 2, 10, 5.0),  # skipped 8 batches at 2.5 s each: 20 s
        _trial(TrialState.PRUNED, 5, 10, 5.0),  # skipped 5 at 1 s each: 5 s
    ]
    assert pruning_savings(trials) == {
        "pruned_trials": 2,
        "trials": 3,
        "batches_run": 17,
        "batches_skipped": 13,
        "training_seconds_run": 30.0,
        "training_seconds_saved_estimate": 25.0,
    }


def test_pareto_front_keeps_the_undominated_trials_and_plots_them(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    # (gold reward, kl): (1.5, 3.0) is beaten by (2.0, 2.0) on both; the other three trade one for the other.
    for values in [(1.0, 1.0), (2.0, 2.0), (1.5, 3.0), (0.5, 0.5)]:
        study.add_trial(
            create_trial(
                values=list(values), params={"coef": values[1] / 10}, distributions={"coef": FloatDistribution(0, 1)}
            )
        )
    front = pareto_front(study, ["val/gold_reward", "val/kl"])
    assert [row["trial"] for row in front["front"]] == [1, 0, 3]  # best gold reward first
    assert [row["on_front"] for row in front["trials"]] == [True, False, True, True]  # trials 1, 2, 0, 3
    table = front_table(front)
    assert table.splitlines()[0] == "| trial | val/gold_reward (max) | val/kl (min) | coef |"
    assert table.splitlines()[2] == "| 1 | 2 | 2 | 0.2 |"
    (tmp_path / "pareto_front.json").write_text(json.dumps(front))
    analysis.plot_pareto_front(front, tmp_path / "pareto_front.png")
    assert (tmp_path / "pareto_front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
