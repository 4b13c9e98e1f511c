"""OptunaSweeper: Hydra searches on Optuna's ask-and-tell API (Optuna >= 4).

Each round asks the study for up to `n_jobs` trials, hands their overrides to the launcher (one job
per trial, numbered as the trial, so job folder `<n>` is trial `n`), and tells the study how each
ended: with its metric values, pruned (the job raised `optuna.TrialPruned`, see
`lit_rlhf.callbacks.OptunaPruning`) or failed (any other error: the search goes on, and
`lit_rlhf.sweep.SweepSummary` reports it). The search stops once the study holds `n_trials` finished
trials, counting those of earlier runs and of other processes sharing the study, so the same command
restarted after a kill continues where it stopped. Selected by lit_rlhf/conf/hydra/sweeper/optuna.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from lit_rlhf.errors import ConfigError

DIRECTIONS = ("maximize", "minimize")


class OptunaSweeper(Sweeper):
    """Ask Optuna for trials, launch them as Hydra jobs, tell it the results (see the module docstring)."""

    def __init__(
        self,
        sampler: str,
        seed: int | None,
        n_startup_trials: int,
        sampler_options: dict,
        pruner: str,
        pruner_options: dict,
        direction: str | list[str],
        metrics: list[str],
        storage: str,
        study_name: str,
        n_trials: int,
        n_jobs: int,
        params: dict | None,
    ):
        self.sampler, self.seed, self.n_startup_trials = sampler, seed, n_startup_trials
        self.sampler_options = _plain(sampler_options)
        self.pruner = pruner
        self.pruner_options = _plain(pruner_options)
        self.directions = [str(d).lower() for d in ([direction] if isinstance(direction, str) else direction)]
        self.metrics = [str(metric) for metric in metrics]
        self.storage_url, self.study_name = str(storage), str(study_name)
        self.n_trials, self.n_jobs = int(n_trials), int(n_jobs)
        self.params = _plain(params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        try:
            return self._search(arguments)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)  # one line, no stack trace
            sys.exit(2)

    def _check(self) -> None:
        """Settings that need no study: fail on them before a storage or a trial is touched."""
        from lit_rlhf.search.study import make_pruner

        from ._study import SAMPLERS

        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{self.sampler}'; choose one of: {', '.join(SAMPLERS)}")
        make_pruner(self.pruner, self.pruner_options)  # an unknown name, option or options entry
        bad = [direction for direction in self.directions if direction not in DIRECTIONS]
        if bad:
            raise ConfigError(f"unknown direction '{bad[0]}'; choose one of: {', '.join(DIRECTIONS)}")
        if len(self.metrics) != len(self.directions):
            raise ConfigError(
                f"hydra.sweeper.metrics names {len(self.metrics)} metric(s) ({', '.join(self.metrics)}) for "
                f"{len(self.directions)} direction(s): one direction per metric"
            )
        if self.config.optimized_metric is None or self.metrics[0] != self.config.optimized_metric:
            raise ConfigError(
                f"hydra.sweeper.metrics must start with optimized_metric ({self.config.optimized_metric}), "
                f"the value each trial returns; got {self.metrics}"
            )
        if self.pruner != "none" and len(self.metrics) > 1:
            raise ConfigError(
                f"pruning needs one objective, this search has {len(self.metrics)}: set hydra.sweeper.pruner=none"
            )
        if (self.pruner != "none" or len(self.metrics) > 1) and not self._has_trial_callback():
            reason = "pruning" if self.pruner != "none" else "a multi-objective search"
            raise ConfigError(
                f"{reason} needs the OptunaPruning callback in callbacks "
                "(see lit_rlhf/conf/hparams_search/ppo_optuna.yaml)"
            )
        if self.n_trials < 1 or self.n_jobs < 1:
            raise ConfigError(f"n_trials and n_jobs must be >= 1, got {self.n_trials} and {self.n_jobs}")

    def _has_trial_callback(self) -> bool:
        nodes = (self.config.get("callbacks") or {}).values()
        return any(str(node.get("_target_", "")).endswith("OptunaPruning") for node in nodes if node is not None)

    def _search(self, arguments: list[str]) -> list[JobReturn]:
        from lit_rlhf.search.study import open_storage

        from . import _results, _study
        from ._search_space import parse_search_space

        self._check()
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = parse_search_space(self.params, arguments, parser)
        if not space.params:
            raise ConfigError("the search has no parameters: declare them in hydra.sweeper.params or as sweeps")
        # The sampler's options, checked before anything is written (it is built again below, seeded for the study).
        _study.make_sampler(
            self.sampler, self.seed, self.n_startup_trials, self.sampler_options, space, len(self.metrics)
        )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        storage = open_storage(self.storage_url)
        # A resumed study (or one shared with other processes) continues the seed, so no sample repeats.
        earlier = _study.trials_in(storage, self.study_name)
        seed = None if self.seed is None else self.seed + earlier
        sampler = _study.make_sampler(
            self.sampler, seed, self.n_startup_trials, self.sampler_options, space, len(self.metrics)
        )
        n_trials = self.n_trials
        if self.sampler == "grid" and _study.grid_size(space) < n_trials:
            n_trials = _study.grid_size(space)
            print(f"grid search: {n_trials} combinations, so n_trials = {n_trials}", flush=True)
        study = _study.open_study(storage, self.study_name, sampler, self.directions, self.metrics)
        pending = _study.adopt_orphans(study)
        counts = _study.count(study)
        print(
            f"Optuna study '{self.study_name}' in {self.storage_url}: {counts.finished} of {n_trials} trials "
            f"finished; sampler {self.sampler}, pruner {self.pruner}, {self.n_jobs} trial(s) at a time"
            + (f"; rerunning interrupted trial(s) {[p.number for p in pending]}" if pending else ""),
            flush=True,
        )
        print(f"(stopped? the same command with hydra.sweep.dir={sweep_dir} continues this search)", flush=True)

        returns: list[JobReturn] = []
        while True:
            counts = _study.count(study)
            free = n_trials - counts.finished - counts.running  # pending trials count as running
            batch, pending = pending[: self.n_jobs], pending[self.n_jobs :]
            while len(batch) < self.n_jobs and free > 0:
                batch.append(_study.ask(study, space))
                free -= 1
            if not batch:
                break
            returns += self._run(study, space, batch)
        others = _study.count(study).running
        if others:
            print(f"{others} trial(s) of the study still run in other processes", flush=True)
        _results.report(study, self.metrics, sweep_dir, self.storage_url, prunes=self.pruner != "none")
        return returns

    def _run(self, study, space, batch: list) -> list[JobReturn]:
        """Launch the batch's trials (consecutive numbers together, job number = trial number) and tell each."""
        returns = []
        for group in _consecutive(batch):
            overrides = [space.overrides(_params_of(trial, space)) for trial in group]
            self._check_composes(study, group, overrides)
            jobs = self.launcher.launch(overrides, initial_job_idx=group[0].number)
            trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
            for pending, job in zip(group, jobs):
                self._tell(study, trials[pending.number], job)
            returns += jobs
        return returns

    def _check_composes(self, study, group: list, overrides: list[list[str]]) -> None:
        """Compose each trial's config before launching: an override that does not apply (a misspelt key)
        would fail every trial alike, so it stops the search with one line instead."""
        from hydra.errors import HydraException
        from optuna.trial import TrialState

        for trial, trial_overrides in zip(group, overrides):
            try:
                self.validate_batch_is_legal([trial_overrides])
            except HydraException as error:
                for pending in group:
                    _tell(study, pending.number, state=TrialState.FAIL)
                reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
                raise ConfigError(f"trial {trial.number} does not compose: {reason}") from None

    def _tell(self, study, trial, job: JobReturn) -> None:
        import optuna
        from optuna.trial import TrialState

        from lit_rlhf.search.study import LAST_METRICS

        outcome = job._return_value  # the return value, or the exception of a failed job
        if job.status == JobStatus.COMPLETED:
            recorded = trial.user_attrs.get(LAST_METRICS, {})
            values = [outcome] + [recorded.get(metric) for metric in self.metrics[1:]]
            missing = [m for m, v in zip(self.metrics, values) if not isinstance(v, (int, float))]
            if missing:
                print(f"trial {trial.number} gave no value of {', '.join(missing)}: recorded as failed", flush=True)
                _tell(study, trial.number, state=TrialState.FAIL)
            else:
                _tell(study, trial.number, values=[float(v) for v in values])
        elif isinstance(outcome, optuna.TrialPruned):
            _tell(study, trial.number, state=TrialState.PRUNED)
        else:
            _tell(study, trial.number, state=TrialState.FAIL)


def _plain(mapping) -> dict:
    """A config node (or a dict, or None) as a plain dict."""
    return OmegaConf.to_container(mapping) if OmegaConf.is_config(mapping) else dict(mapping or {})


def _tell(study, number: int, **outcome: Any) -> None:
    try:
        study.tell(number, skip_if_finished=True, **outcome)
    except RuntimeError as error:
        # The grid sampler calls study.stop() after its last point, which only works inside study.optimize;
        # the state is stored before it raises, and the loop above stops by itself.
        if "Study.stop" not in str(error):
            raise


def _consecutive(batch: list) -> list[list]:
    groups: list[list] = []
    for trial in batch:
        if groups and trial.number == groups[-1][-1].number + 1:
            groups[-1].append(trial)
        else:
            groups.append([trial])
    return groups


def _params_of(trial, space) -> dict[str, Any]:
    missing = [param.name for param in space.params if param.name not in trial.params]
    if missing:
        raise ConfigError(
            f"trial {trial.number} was asked without {', '.join(missing)}: the search space changed since; "
            "use a new hydra.sweeper.study_name"
        )
    return trial.params
