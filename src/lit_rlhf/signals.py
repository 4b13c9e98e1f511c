"""SIGTERM, SIGINT and SIGUSR1: stop cleanly, never silently, with the shell's exit code (128 + signal).

A command installs these handlers for its whole life. Outside training a signal stops at once: the
`Interrupted` exception unwinds, atomic writes leave nothing half-written. While training runs, the
first signal is only recorded (`received()`), and `lit_rlhf.callbacks.StopOnSignal` saves a
checkpoint at the next step boundary and stops there; a second signal stops at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import ClassVar

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Interrupted(BaseException):
    """The command was stopped by a signal (a BaseException, so no `except Exception` swallows it).

    Args:
        signum: the signal.
        detail: what was kept, e.g. "after training batch 3; checkpoint: <path>".
    """

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(signum, detail)
        self.signum, self.detail = signum, detail

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process killed by the signal: 143, 130, 138


class _State:
    received: int | None = None
    deferred: bool = False
    previous: ClassVar[dict] = {}


def _handle(signum: int, frame) -> None:
    if _State.deferred and _State.received is None:
        _State.received = signum
        name = signal.Signals(signum).name
        # os.write, not print: a handler may run in the middle of another write to stderr.
        notice = f"\n{name}: stopping at the next step boundary, after saving a checkpoint ({name} again: now)\n"
        os.write(2, notice.encode())
        return
    raise Interrupted(signum)


def install() -> None:
    """Route the stop signals to this module (main thread only; elsewhere the defaults stay)."""
    _State.received, _State.deferred = None, False
    with contextlib.suppress(ValueError):  # not the main thread
        _State.previous = {signum: signal.signal(signum, _handle) for signum in STOP_SIGNALS}


def reinstall() -> None:
    """Take the stop signals back after a library replaced a handler (Lightning composes its own for SIGTERM)."""
    if _State.previous:
        for signum in STOP_SIGNALS:
            signal.signal(signum, _handle)


def restore() -> None:
    """Give the signals back the handlers they had before `install`."""
    for signum, handler in _State.previous.items():
        signal.signal(signum, handler)
    _State.previous, _State.deferred = {}, False


def received() -> int | None:
    """The first stop signal received while deferred, or None."""
    return _State.received


def defer(on: bool) -> None:
    """While on, the first signal is recorded, not raised: training stops at its next step boundary."""
    _State.deferred = on


def raise_if_received(detail: str = "") -> None:
    if _State.received is not None:
        raise Interrupted(_State.received, detail)
