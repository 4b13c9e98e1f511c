"""What every lit-rlhf command does around its work (`python -m lit_rlhf.train`, and the commands to come).

`run_command(cfg, work)` inside a `@hydra.main` function:

* starts the job fresh: a joblib worker (`hydra/launcher=local_parallel`) runs many jobs in one process,
  and nothing of the previous job (a W&B run, Lightning's seed variables, torch flags) may leak in;
* claims and locks the run folder (`lit_rlhf.outputs`): a folder holding what lit-rlhf did not write,
  or another live run, is refused with one line; `status.json` there says how the run ended;
* turns SIGTERM, SIGINT and SIGUSR1 into a clean stop (`lit_rlhf.signals`) with exit code 128 + signal
  (143, 130, 138), reported in one line and never as finished;
* prints a `UserError`, or a mandatory `???` value left unset, as one line (exit code 2) naming the key
  and the override that sets it, instead of a stack trace. Inside a multirun the error is re-raised for
  Hydra to record the failed job, and the sweep goes on; a signal ends the whole sweep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from lit_rlhf import signals
from lit_rlhf.errors import ConfigError, UserError
from lit_rlhf.outputs import RunFolderLock, claim_folder, read_status, write_status

log = logging.getLogger("lit_rlhf")
T = TypeVar("T")

# What Hydra writes into a run folder before the command starts: its config record and the job's log.
HYDRA_ENTRIES = re.compile(r"^(\.hydra|.*\.log)$")
_MISSING = re.compile(r"Missing mandatory value: ([\w.\[\]-]+)")


def launch_rank() -> int:
    """This process's rank among the processes of one run (torchrun, SLURM, Lightning's own launcher); 0 alone."""
    for variable in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return 0


def fresh_job_state() -> None:
    """Undo what an earlier job in this process left behind (joblib's workers run job after job)."""
    import wandb

    if wandb.run is not None:  # a job that ended before closing its loggers
        wandb.finish(exit_code=1)
    for variable in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        os.environ.pop(variable, None)
    torch.use_deterministic_algorithms(False)
    torch.set_grad_enabled(True)


def find_user_error(error: BaseException | None) -> UserError | None:
    """The UserError behind `error`, if any (Hydra and OmegaConf wrap what targets and resolvers raise).

    A mandatory value left `???` becomes a ConfigError naming the key and the override that sets it.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        if isinstance(error, (MissingMandatoryValue, InterpolationToMissingValueError)):
            return missing_value_error(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def missing_value_error(error: Exception) -> ConfigError:
    """'data.path is not set (data=jsonl needs it); set it with data.path=<value>'."""
    match = _MISSING.search(str(error))
    key = match[1] if match else getattr(error, "full_key", None) or "a mandatory value"
    group = key.split(".")[0]
    choice = None
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
    needed_by = f" ({group}={choice} needs it)" if choice else ""
    return ConfigError(f"{key} is not set{needed_by}; set it on the command line with {key}=<value>")


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Only the one-line errors of `run_command` (no run folder, signals or status): a UserError or an unset
    `???` value ends the process with one line and exit code 2; inside a multirun it fails the job alone."""
    try:
        yield
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None:
            raise
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise user_error from None
        print(f"error: {user_error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def claim_run_folder(run_dir: Path) -> Path:
    """Our run folder: new, marked as ours, or holding only what Hydra wrote there just now."""
    return claim_folder(run_dir, "run", "hydra.run.dir", adoptable=lambda name: bool(HYDRA_ENTRIES.match(name)))


def run_command(cfg: DictConfig, work: Callable[[DictConfig], T], command: str) -> T | None:
    """Run `work(cfg)` as a command: fresh state, a claimed and locked run folder, signals, one-line errors.

    Args:
        command: names the command in `status.json` ("train", "evaluate", ...).

    Outside a Hydra command (a notebook calling `lit_rlhf.train.train` on a config `lit_rlhf.compose` made),
    the run folder is `cfg.paths.output_dir`, and a user error or a signal is raised to the caller instead of
    ending the process.
    """
    fresh_job_state()
    signals.install()
    from_command_line = HydraConfig.initialized()
    multirun = from_command_line and HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = Path(HydraConfig.get().runtime.output_dir if from_command_line else cfg.paths.output_dir)
    leading = launch_rank() == 0  # other ranks share rank 0's folder, lock and status
    lock = RunFolderLock(run_dir)
    status, owned = {"command": command}, False  # status.json is written only into a folder this run holds
    try:
        if leading:
            claim_run_folder(run_dir)
            lock.acquire()
            owned = True
            status["previous"] = read_status(run_dir)  # an earlier attempt in this folder, kept one level deep
            write_status(run_dir, "running", **status)
        result = work(cfg)
        if owned:
            write_status(run_dir, "finished", **status)
        return result
    except signals.Interrupted as stop:
        if owned:
            write_status(run_dir, "stopped", **status, signal=stop.name, exit_code=stop.exit_code, detail=stop.detail)
        if not from_command_line:
            raise
        print(f"stopped by {stop.name}{' ' + stop.detail if stop.detail else ''}", file=sys.stderr, flush=True)
        raise SystemExit(stop.exit_code) from None  # ends a whole multirun too
    except Exception as error:
        user_error = find_user_error(error)
        if owned:
            write_status(run_dir, "failed", **status, error=str(user_error or f"{type(error).__name__}: {error}"))
        if user_error is None:
            raise  # a bug: its stack trace is what helps
        if multirun or not from_command_line:
            # Hydra records the failed job and the sweep goes on; the sweep summary names it. A notebook
            # gets the one-line error as an exception.
            raise user_error from None
        print(f"error: {user_error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except BaseException as error:  # e.g. SystemExit from a library: never left looking like a live run
        if owned:
            write_status(run_dir, "failed", **status, error=f"{type(error).__name__}: {error}")
        raise
    finally:
        lock.release()
        signals.restore()
