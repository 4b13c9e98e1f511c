"""The study behind a search: its sampler, its storage, and which of its trials this process runs.

A trial belongs to the sweeper process that asked for it (`host:pid` in its user attributes). A
search killed mid-trial leaves that trial RUNNING; the next sweeper on the same host finds its owner
gone, takes it over and runs it again under the same number, so a restarted search neither loses nor
repeats a trial. Trials owned by a live process (another worker sharing the study) are left alone.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from lit_rlhf.errors import ConfigError
from lit_rlhf.search.study import build_with_options, options_of

from ._search_space import SearchSpace

SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,  # Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization"
    "cmaes": optuna.samplers.CmaEsSampler,  # Hansen 2016, "The CMA Evolution Strategy: A Tutorial"
    "gp": optuna.samplers.GPSampler,  # Gaussian-process Bayesian optimisation
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,  # every combination of choice(...) / range(...) values, in random order
}
# Samplers that model the results, after `n_startup_trials` random ones.
MODEL_BASED = {"tpe", "cmaes", "gp"}
OWNER = "sweeper_process"


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_gone(owner: str | None) -> bool:
    """True if `owner` (host:pid) was a process on this host that no longer runs."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's process (or none recorded): its liveness is unknown here
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def make_sampler(
    name: str, seed: int | None, n_startup_trials: int, options_by_name: dict, space: SearchSpace, n_objectives: int
):
    """The Optuna sampler called `name`, with its seed and its entry of `options_by_name`; a grid search gets
    its grid from `space`."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{name}'; choose one of: {', '.join(SAMPLERS)}")
    if name == "cmaes" and n_objectives > 1:
        raise ConfigError("sampler 'cmaes' optimizes one objective; for several use tpe, gp, random or grid")
    fixed: dict[str, Any] = {"seed": seed}
    if name in MODEL_BASED:
        fixed["n_startup_trials"] = n_startup_trials
    if name == "grid":
        continuous = [param.name for param in space.params if param.grid is None]
        if continuous:
            raise ConfigError(
                f"sampler 'grid' needs choice(...) or range(...) for every parameter; interval: {', '.join(continuous)}"
            )
        fixed["search_space"] = {param.name: list(param.grid) for param in space.params}
    options = options_of("sampler", name, options_by_name, SAMPLERS)
    return build_with_options("sampler", name, SAMPLERS[name], options, **fixed)


def grid_size(space: SearchSpace) -> int:
    size = 1
    for param in space.params:
        size *= len(param.grid)
    return size


def trials_in(storage, name: str) -> int:
    """How many trials the stored study `name` holds (0 if there is none yet)."""
    try:
        return len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
    except KeyError:
        return 0


def open_study(storage, name: str, sampler, directions: list[str], metrics: list[str]) -> optuna.Study:
    """Create the study, or load it to continue; a stored study must optimize the same metrics the same way.

    The study keeps the metric names: each trial's OptunaPruning callback reads them from there, and
    optuna-dashboard shows them.
    """
    study = optuna.create_study(
        storage=storage, study_name=name, sampler=sampler, directions=directions, load_if_exists=True
    )
    stored = [direction.name.lower() for direction in study.directions]
    if study.metric_names is None and stored == directions:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metrics)
    if (stored, study.metric_names) != (directions, metrics):
        raise ConfigError(
            f"study '{name}' in {storage.url} is to {_goal(stored, study.metric_names)}, this search to "
            f"{_goal(directions, metrics)}: choose another hydra.sweeper.study_name or storage"
        )
    return study


def _goal(directions: list[str], metrics: list[str] | None) -> str:
    return " and ".join(f"{d} {m}" for d, m in zip(directions, metrics or ["?"] * len(directions)))


@dataclass
class Counts:
    finished: int  # complete, pruned or failed: what counts towards n_trials
    running: int  # asked and not told, by any process (including trials this one is about to rerun)


def count(study: optuna.Study) -> Counts:
    trials = study.get_trials(deepcopy=False)
    return Counts(
        finished=sum(trial.state.is_finished() for trial in trials),
        running=sum(trial.state == TrialState.RUNNING for trial in trials),
    )


@dataclass(frozen=True)
class Pending:
    """A trial this process is to run: its number (= its job number) and its parameters."""

    number: int
    params: dict[str, Any]


def adopt_orphans(study: optuna.Study) -> list[Pending]:
    """RUNNING trials whose sweeper died on this host: now this process's, to run again."""
    orphans = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if owner_is_gone(trial.user_attrs.get(OWNER))
    ]
    for trial in orphans:
        study._storage.set_trial_user_attr(trial._trial_id, OWNER, this_process())
    return [Pending(trial.number, dict(trial.params)) for trial in orphans]


def ask(study: optuna.Study, space: SearchSpace) -> Pending:
    """A new trial, its parameters sampled, owned by this process."""
    trial = study.ask(fixed_distributions=space.distributions)
    trial.set_user_attr(OWNER, this_process())
    return Pending(trial.number, dict(trial.params))
