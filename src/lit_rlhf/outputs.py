"""What a command writes: folders it claims with our marker, a lock on its run folder, files written atomically.

Nothing a run did not write is deleted or overwritten. Every folder a command writes into (the run folder,
its checkpoints, an export, the token cache) is new, empty, or holds the marker file `.lit_rlhf` that an
earlier run of ours left there; any other non-empty folder is refused with one line before work starts.
Files and folders are written under a temporary name beside their target and renamed into place, so a
reader (or a killed run) never sees half of one; on failure the temporary is removed and a full or
read-only disk is named in one line. The run folder is locked while a command runs in it, and
`status.json` there says whether that run is running, finished, failed or was stopped by a signal.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from lit_rlhf.errors import OutputError

MARKER = ".lit_rlhf"
LOCK = ".lit_rlhf.lock"
STATUS = "status.json"

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def describe(error: OSError) -> str:
    """A short reason for an I/O failure: full disk, read-only, permission, or the system's own words."""
    known = _REASONS.get(error.errno) if error.errno is not None else None
    return known or error.strerror or str(error)


def io_failure(error: BaseException) -> str | None:
    """The reason, if `error` is a failed read or write: an OSError, or a library's error that carries one
    (safetensors reports a full disk as "... (os error 28)"); None for anything else."""
    if isinstance(error, OSError):
        return describe(error)
    code = re.search(r"\(os error (\d+)\)", str(error))
    if code is None:
        return None
    number = int(code[1])
    return describe(OSError(number, os.strerror(number)))


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def temporary_beside(path: Path | str, what: str) -> Iterator[Path]:
    """A temporary path beside `path` to write into; removed if the block fails (an OSError becomes one line).

    The caller renames it into place (`os.replace`) inside the block, once it is complete.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _remove(temporary)
    try:
        yield temporary
    except BaseException as error:
        _remove(temporary)
        reason = io_failure(error)
        if reason is None:
            raise
        raise OutputError(f"cannot write {what} {path}: {reason}") from error


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    with temporary_beside(path, "the file") as temporary:
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def replace_folder_atomically(path: Path | str, write: Callable[[Path], None], kind: str, setting: str) -> Path:
    """Write a folder with `write(temporary)` and swap it in for `path`, which must be absent or one of ours.

    A failure leaves the earlier folder as it was and no temporary behind. The new folder gets our marker,
    so the next run may replace it in turn.
    """
    path = Path(path).expanduser().resolve()
    if path.exists():
        _require_ours(path, kind, setting)  # checked again here: the folder may have changed since the claim
    _mkdir(path.parent, kind, setting)
    with temporary_beside(path, f"the {kind}") as temporary:
        write(temporary)
        _write_marker(temporary, kind)
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            os.replace(path, old)
            os.replace(temporary, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, path)
    return path


# ----------------------------------------------------------------------------- markers


def has_marker(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def marker_kind(folder: Path) -> str | None:
    """What our marker in `folder` says the folder holds ("run", "export", ...); None without a marker."""
    try:
        return json.loads((folder / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _write_marker(folder: Path, kind: str) -> None:
    record = {"kind": kind, "created": _now(), "by": "lit-rlhf"}
    (folder / MARKER).write_text(json.dumps(record) + "\n")


def _mkdir(folder: Path, kind: str, setting: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the {kind} folder {folder} ({setting}): {describe(error)}") from error


def _foreign_entries(folder: Path, adoptable: Callable[[str], bool]) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.name != MARKER and not adoptable(entry.name))


def _require_ours(folder: Path, kind: str, setting: str, adoptable: Callable[[str], bool] = lambda name: False):
    if not folder.is_dir():
        raise OutputError(f"{setting}={folder} is a file, not a folder; choose a folder for the {kind}")
    if has_marker(folder):
        return
    foreign = _foreign_entries(folder, adoptable)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputError(
            f"refusing to write the {kind} into {folder}: it holds {len(foreign)} entries lit-rlhf did not write "
            f"({shown}) and no {MARKER} marker; nothing was changed. Choose a new or empty folder with {setting}=..."
        )


def check_folder(
    folder: Path | str, kind: str, setting: str, adoptable: Callable[[str], bool] = lambda name: False
) -> Path:
    """Before any work: `folder` may be written later (absent, empty, ours, or holding only `adoptable`
    entries), and the nearest folder that exists is writable. Nothing is created."""
    folder = Path(folder).expanduser().resolve()
    if folder.exists():
        _require_ours(folder, kind, setting, adoptable)
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not os.access(existing, os.W_OK):
        reason = "read-only file system" if _read_only_mount(existing) else "permission denied"
        raise OutputError(f"cannot write the {kind} folder {folder} ({setting}): {existing} is not writable ({reason})")
    return folder


def _read_only_mount(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def claim_folder(
    folder: Path | str, kind: str, setting: str, adoptable: Callable[[str], bool] = lambda name: False
) -> Path:
    """Make `folder` ours: create it with our marker, or accept it when empty, marked, or holding only entries
    `adoptable` recognises (e.g. Hydra's `.hydra/`); refuse any other non-empty folder with one line.

    Args:
        kind: what goes there, for the messages ("export", "checkpoints", ...).
        setting: the override that moves it (`paths.export_dir`), named in the messages.
    """
    folder = Path(folder).expanduser().resolve()
    if folder.exists():
        _require_ours(folder, kind, setting, adoptable)
        if has_marker(folder):
            return folder
    _mkdir(folder, kind, setting)
    try:
        _write_marker(folder, kind)
    except OSError as error:
        raise OutputError(f"cannot write into the {kind} folder {folder} ({setting}): {describe(error)}") from error
    return folder


# ----------------------------------------------------------------------------- the run folder


class RunFolderLock:
    """An exclusive lock on a run folder, held while a command runs in it (`flock`: released if the process dies).

    A second command into the same folder is refused with one line naming the process that holds it.
    """

    def __init__(self, folder: Path | str):
        self.path = Path(folder) / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 4096).decode(errors="replace").strip()
            os.close(fd)
            raise OutputError(
                f"the run folder {self.path.parent} is in use by another run ({owner or 'owner unknown'}); "
                "wait for it to end, or choose another folder with hydra.run.dir=..."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}, since {_now()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock; the file stays (removing it would race a new owner)
            self._fd = None


def read_status(folder: Path | str) -> dict | None:
    """The run folder's `status.json`, or None when no run has written one."""
    path = Path(folder) / STATUS
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def write_status(folder: Path | str, status: str, previous: dict | None = None, **details) -> None:
    """Record how the run stands: running, finished, failed or stopped (by a signal), with details, and the
    record of the attempt before this one (a resumed run's first part, a refused resumption)."""
    record = {"status": status, "updated": _now(), "pid": os.getpid(), **details}
    if previous is not None:
        record["previous"] = {key: value for key, value in previous.items() if key != "previous"}
    atomic_write_text(Path(folder) / STATUS, json.dumps(record, indent=2) + "\n")
