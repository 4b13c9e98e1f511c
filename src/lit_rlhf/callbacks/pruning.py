"""Pruning: each trial of an Optuna search reports its validations, and the study's pruner may stop it.

Each job of an Optuna search (hydra_plugins/lit_rlhf_sweeper) is one trial, and its job number is the
trial's number. `OptunaPruning` opens that trial in the study's storage and, after every validation
during training, reports the search's first metric at the number of training batches done. The
pruner compares it with the other trials at the same step; a trial behind them raises
`optuna.TrialPruned`, which ends the job and is recorded as pruned. Pruners:

* `median`: stop a trial whose value is worse than the median of earlier trials at the same step;
* `hyperband`: Li et al. 2018, "Hyperband: A Novel Bandit-Based Approach to Hyperparameter Optimization";
* `successive_halving`: Jamieson & Talwalkar 2016, "Non-stochastic Best Arm Identification and
  Hyperparameter Optimization" (asynchronous form, Li et al. 2020, "A System for Massively Parallel
  Hyperparameter Tuning").

The callback also leaves on the trial the last value of every objective (a multi-objective search
takes its values from there) and how many training batches ran and took how long (the sweeper's
account of the compute pruning saved). Optuna is imported on first use: every run imports this
package, few of them search.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from lit_rlhf.errors import ConfigError
from lit_rlhf.search.study import LAST_METRICS, TRAINING, make_pruner, open_storage

log = logging.getLogger("lit_rlhf.search")


def planned_batches(trainer: L.Trainer) -> int | None:
    """The training batches the run is set to take: epochs x batches, cut by max_steps or a batch limit."""
    max_epochs = trainer.max_epochs
    assert max_epochs is not None, "called while fitting: Lightning's fit resolves max_epochs=None to 1000 or -1"
    limits = [trainer.num_training_batches * max_epochs if max_epochs > 0 else math.inf]
    if trainer.max_steps > 0 and trainer.lightning_module.automatic_optimization:
        limits.append(trainer.max_steps * trainer.accumulate_grad_batches)
    # A callback that stops after a number of batches (RunLength, for manually optimised modules).
    # Trainer.callbacks is set by Lightning's callback connector and not declared on the class.
    callbacks: list[L.Callback] = trainer.callbacks  # pyright: ignore[reportAttributeAccessIssue]  # undeclared
    limits += [batches for callback in callbacks if (batches := getattr(callback, "max_batches", None))]
    planned = min(limits)
    return int(planned) if math.isfinite(planned) else None  # an endless run has no plan to save from


class OptunaPruning(L.Callback):
    """Report each validation of this job's trial to Optuna, stop the run when the pruner says so.

    Args:
        storage: the study's RDB URL (the sweeper's `storage`).
        study_name: the study (the sweeper's `study_name`).
        trial_number: this job's trial: its job number (`hydra.job.num`). The study names its metrics;
            the first is reported for pruning.
        pruner: a key of PRUNERS; `none` still reports, so dashboards show the curves.
        pruner_options: pruner name -> its constructor arguments (the sweeper's `pruner_options`), steps in
            training batches.
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_number: int,
        pruner: str,
        pruner_options: dict[str, Any],
    ):
        self.storage_url, self.study_name, self.trial_number = storage, study_name, int(trial_number)
        self.metrics: list[str] = []
        self.pruner = make_pruner(pruner, pruner_options)
        self.prunes = pruner != "none"
        self._trial = None
        self._started: float | None = None
        self._process = f"{socket.gethostname()}:{os.getpid()}"  # which worker ran the trial

    @property
    def trial(self):
        """This job's `optuna.Trial`, opened on first use."""
        if self._trial is None:
            import optuna

            storage = open_storage(self.storage_url)
            try:
                study_id = storage.get_study_id_from_name(self.study_name)
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
            except KeyError:
                raise ConfigError(
                    f"no trial {self.trial_number} in study '{self.study_name}' of {self.storage_url}: "
                    "OptunaPruning runs inside an Optuna search (hparams_search=...)"
                ) from None
            # The random sampler: the sweeper already chose this trial's parameters.
            study = optuna.load_study(
                study_name=self.study_name, storage=storage, pruner=self.pruner, sampler=optuna.samplers.RandomSampler()
            )
            self.metrics = list(study.metric_names or [])
            self._trial = optuna.Trial(study, trial_id)
        return self._trial

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        trial, logged = self.trial, trainer.callback_metrics
        last = {name: float(logged[name]) for name in self.metrics if name in logged}
        trial.set_user_attr(LAST_METRICS, last)
        if trainer.state.fn != TrainerFn.FITTING:
            return  # the step-0 baseline and a final validation are not training progress
        done, planned = trainer.fit_loop.total_batch_idx + 1, planned_batches(trainer)
        seconds = time.monotonic() - self._started if self._started is not None else None
        trial.set_user_attr(
            TRAINING, {"batches": done, "planned_batches": planned, "seconds": seconds, "process": self._process}
        )
        if len(self.metrics) > 1:
            return  # Optuna prunes single-objective studies only (the sweeper refuses a pruner here)
        metric = self.metrics[0]
        if metric not in last:
            if not self.prunes:
                return
            raise ConfigError(f"pruning needs '{metric}' at every validation; logged: {sorted(logged)}")
        trial.report(last[metric], step=done)
        if trial.should_prune():
            import optuna

            message = f"pruned after {done} of {planned or '?'} training batches ({metric}={last[metric]:.4g})"
            log.info("trial %d %s", self.trial_number, message)
            raise optuna.TrialPruned(message)
