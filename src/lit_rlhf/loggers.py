"""Logger factories. W&B runs offline, silently, when no API key is configured.

A resumed run continues in its run folder (`lit_rlhf.config.run_folder`), and its loggers continue too:
the W&B run of that folder by its id, and `csv/metrics.csv` by appending (Lightning's CSV logger would
delete it).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import wandb
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from lit_rlhf.wandb_history import run_folders

log = logging.getLogger("lit_rlhf")


def has_wandb_credentials() -> bool:
    """An API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def wandb_logger(
    project: str, save_dir: str, name: str | None = None, offline: bool | None = None, **kwargs
) -> WandbLogger:
    """A WandbLogger that never prompts: offline unless credentials exist (or `offline` says otherwise)."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not has_wandb_credentials()
    if offline:
        # Without this, wandb may ask for a key on a TTY or wait on the network.
        os.environ["WANDB_MODE"] = "offline"
        log.info("W&B: no API key, logging offline under %s (view: wandb leet; upload: wandb sync)", save_dir)
    os.makedirs(save_dir, exist_ok=True)
    previous = previous_wandb_run_id(save_dir)
    if previous is not None and "id" not in kwargs:
        log.info("W&B: continuing run %s of %s", previous, save_dir)
        kwargs.update(id=previous, resume="allow")
    return WandbLogger(project=project, save_dir=save_dir, name=name, offline=offline, **kwargs)


def previous_wandb_run_id(save_dir: str) -> str | None:
    """The id of the W&B run an earlier part of this run left in `save_dir` (`wandb/[offline-]run-<time>-<id>`)."""
    parts = run_folders(Path(save_dir) / "wandb")
    return parts[-1][1] if parts else None


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing `metrics.csv` is continued, not deleted."""

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as stream:
            header = next(csv.reader(cast(Iterable[str], stream)), [])  # fsspec's mode "r" is text
        self.metrics_keys = sorted(header)  # the writer keeps its columns sorted
        if header != self.metrics_keys:
            self._rewrite_with_new_header(self.metrics_keys)


class AppendingCSVLogger(CSVLogger):
    """`lightning.pytorch.loggers.CSVLogger` that appends to the metrics file a resumed run left behind."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return cast(ExperimentWriter, self._experiment)  # set only here, to an _AppendingWriter


def close_loggers(loggers: list, status: str, exit_code: int | None = None) -> None:
    """Finalize every logger and end the W&B run, so the next job of a multirun in this process gets its own run.

    A W&B run ends finished only with status "success"; otherwise failed, with `exit_code` (a signal's 143).
    """
    for logger in loggers:
        logger.finalize(status)
    if any(isinstance(logger, WandbLogger) for logger in loggers) and wandb.run is not None:
        wandb.finish(exit_code=0 if status == "success" else exit_code or 1)
