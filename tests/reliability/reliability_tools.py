"""What the reliability tests share: a callback that holds a real run still until a signal arrives, and
helpers to start such a run on the command line, signal it and read back what it left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

from lit_rlhf import signals
from lit_rlhf.ops.finite import nonfinite_names

HERE = Path(__file__).resolve().parent


class PauseAtBatch(L.Callback):
    """At the start of training batch `index` (0-based, over the whole fit), write `flag` and wait until a stop
    signal has arrived (60 s at most), so the test's signal lands in the middle of a training step."""

    def __init__(self, index: int, flag: str):
        self.index, self.flag = index, Path(flag)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.fit_loop.total_batch_idx != self.index:
            return
        self.flag.write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while signals.received() is None and time.monotonic() < deadline:
            time.sleep(0.02)


def pause_at(index: int, flag: Path) -> list[str]:
    """Overrides that put `PauseAtBatch` into a command-line run."""
    return [
        "+callbacks.pause._target_=reliability_tools.PauseAtBatch",
        f"+callbacks.pause.index={index}",
        f"+callbacks.pause.flag={flag}",
    ]


def cli_env(extra: dict | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    # The same threads as the in-process runs (conftest), so the two compute bit for bit alike.
    env.update(OMP_NUM_THREADS="2", PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]))
    env.update(extra or {})
    return env


def start_cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lit_rlhf.train", *args],
        cwd=cwd,
        env=env or cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def signal_when_paused(process: subprocess.Popen, flag: Path, signum: int, timeout: float = 300) -> tuple[str, str]:
    """Wait for the run to reach its pause, send `signum`, and return its (stdout, stderr) once it ends."""
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            _, err = process.communicate()
            raise AssertionError(f"the run never reached its pause (rc {process.returncode}):\n{err[-3000:]}")
        time.sleep(0.1)
    os.kill(process.pid, signum)
    return process.communicate(timeout=timeout)


def one_line(stderr: str, prefix: str) -> str:
    """The single stderr line starting with `prefix`; no stack trace anywhere."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (lines, stderr[-3000:])
    return lines[0]


def status_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def load_finite_checkpoint(path: Path) -> dict:
    """A checkpoint loaded safely (weights_only), asserted free of NaN and inf."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    broken = nonfinite_names({key: checkpoint[key] for key in ("state_dict", "optimizer_states")})
    assert not broken, broken
    return checkpoint


def leftovers(folder: Path) -> list[Path]:
    """Temporary files or folders a write left behind."""
    return [p for p in folder.rglob("*") if ".tmp" in p.name or ".old" in p.name]
