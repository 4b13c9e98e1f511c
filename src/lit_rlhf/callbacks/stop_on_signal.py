"""SIGTERM, SIGINT, SIGUSR1 during training: a checkpoint at the next step boundary, then a clean stop.

`lit_rlhf.signals` records the first signal while training runs. After each training batch every rank
takes the largest signal any rank received (so all ranks stop after the same step), and the checkpoint
callback saves `last.ckpt` unless it just did. Once Lightning has logged that batch's metrics,
`signals.Interrupted` ends the fit (at the next batch, validation, epoch end or training end): no
further step, validation or export, and `lit_rlhf.command` exits with 128 + the signal (143, 130, 138),
the run reported stopped.

On SLURM (Lightning's `SLURMEnvironment`, auto-requeue on), the requeue signal (SIGUSR1, sent by
`#SBATCH --signal=B:USR1@90`) also requeues the job with `scontrol requeue`; the requeued job continues
from the checkpoint with `ckpt_path=last` in the same run folder.
"""

from __future__ import annotations

import logging
import os
import subprocess

import lightning as L
from lightning.fabric.plugins.environments.slurm import SLURMEnvironment

from lit_rlhf import signals
from lit_rlhf.callbacks.checkpoint import ResumableCheckpoint
from lit_rlhf.ops.distributed import max_over_ranks

log = logging.getLogger("lit_rlhf")


def slurm_requeue_signal(trainer: L.Trainer) -> int | None:
    """The signal that asks Lightning's SLURM environment to requeue this job, or None off SLURM."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if environment is None:  # one device: the strategy has none; the trainer's connector still detected it
        environment = trainer._accelerator_connector.cluster_environment
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
        assert environment.requeue_signal is not None, "Lightning defaults it to SIGUSR1 (off Windows)"
        return int(environment.requeue_signal)
    return None


def requeue_slurm_job() -> str:
    """`scontrol requeue` this job (an array task by its array id); returns what happened, for the message."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID", "")
    if not job:
        return "not requeued (no SLURM_JOB_ID)"
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"requeue of SLURM job {job} failed ({error})"
    if result.returncode != 0:
        return f"requeue of SLURM job {job} failed ({result.stderr.strip() or result.returncode})"
    return f"SLURM job {job} requeued"


class StopOnSignal(L.Callback):
    """Turn a recorded stop signal into a checkpoint and `signals.Interrupted` at the next step boundary."""

    def __init__(self):
        self.pending: signals.Interrupted | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning put its own SIGTERM handler in front of ours when the fit began (it would abort a
        # validation half-way, with no checkpoint).
        signals.reinstall()
        signals.defer(True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signals.defer(False)
        self.stop_if_pending()  # last among the callbacks: the end-of-training checkpoint is written, no export

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        signals.defer(False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        signum = int(max_over_ranks(signals.received() or 0))
        if not signum:
            return
        done = trainer.fit_loop.total_batch_idx + 1
        callbacks = trainer.callbacks  # pyright: ignore[reportAttributeAccessIssue]  # set by Lightning, undeclared
        checkpoint = next((c for c in callbacks if isinstance(c, ResumableCheckpoint)), None)
        if checkpoint is None:
            kept = "no checkpoint (the checkpoint callback is off)"
        else:
            if checkpoint.saved_after != done:
                checkpoint.save(trainer)
            path = checkpoint.last_path.resolve()
            kept = f"checkpoint: {path}; continue with ckpt_path={path}"
        detail = f"after training batch {done}; {kept}"
        if signum == slurm_requeue_signal(trainer):
            outcome = requeue_slurm_job() if trainer.is_global_zero else "requeued by rank 0"
            detail += f"; {outcome}"
        signals.defer(False)
        self.pending = signals.Interrupted(signum, detail)

    def stop_if_pending(self) -> None:
        if self.pending is not None:
            stop, self.pending = self.pending, None
            raise stop

    # The step's metrics are logged after on_train_batch_end; the first of these hooks comes after that.
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.stop_if_pending()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop_if_pending()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop_if_pending()
