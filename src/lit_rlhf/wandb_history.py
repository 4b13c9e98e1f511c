"""Read a W&B offline run file (`offline-run-*/run-*.wandb`) without a server or an account.

The file is a LevelDB-style log: a 7-byte file header (":W&B", magic, version), then 32 KiB blocks of
records, each a 7-byte header (checksum, length, kind) and a protobuf `Record`. Records longer than
what is left of a block are split into FIRST/MIDDLE/LAST chunks. wandb ships the protobuf schema but,
since its Go core, no Python reader, so this is the few lines it takes.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

from lit_rlhf.errors import DataError

_FILE_HEADER = struct.Struct("<4sHB")
_RECORD_HEADER = struct.Struct("<IHB")
_BLOCK_BYTES = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What a W&B offline run recorded: identity, config and the logged history rows."""

    run_id: str = ""
    name: str = ""
    group: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    exit_code: int | None = None  # how the run ended (0: finished); None while it runs or if it was killed


# `[offline-]run-<YYYYMMDD_HHMMSS>-<id>`, with `-<n>` appended when a folder of that name exists already.
_RUN_FOLDER = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-([A-Za-z0-9]+)(?:-(\d+))?$")


def run_folders(wandb_dir: Path) -> list[tuple[Path, str]]:
    """(folder, run id) of every W&B run folder in `wandb_dir`, in the order they were started."""
    found = []
    for folder in Path(wandb_dir).glob("*run-*"):
        match = _RUN_FOLDER.match(folder.name)
        if match and folder.is_dir():
            found.append(((match[1], int(match[3] or 0)), folder, match[2]))
    return [(folder, run_id) for _, folder, run_id in sorted(found)]


def record_payloads(path: Path) -> Iterator[bytes]:
    """The serialized records of a `.wandb` file, in order. A truncated tail (a run still writing) is ignored."""
    data = Path(path).read_bytes()
    ident, _magic, _version = _FILE_HEADER.unpack_from(data) if len(data) >= 7 else (b"", 0, 0)
    if ident != b":W&B":
        raise DataError(f"{path}: not a W&B run file (expected a ':W&B' header)")
    position, chunks = _FILE_HEADER.size, []
    while position + _RECORD_HEADER.size <= len(data):
        left_in_block = _BLOCK_BYTES - position % _BLOCK_BYTES
        if left_in_block < _RECORD_HEADER.size:  # the block's zero padding
            position += left_in_block
            continue
        _checksum, length, kind = _RECORD_HEADER.unpack_from(data, position)
        start = position + _RECORD_HEADER.size
        if kind == 0 or start + length > len(data):
            return
        payload, position = data[start : start + length], start + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            chunks = [payload]
        elif kind == _MIDDLE:
            chunks.append(payload)
        elif kind == _LAST:
            yield b"".join([*chunks, payload])
            chunks = []


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def read_offline_run(path: Path) -> OfflineRun:
    """Parse `path`: a `.wandb` file or the `offline-run-*` folder holding one."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if not files:
            raise DataError(f"{path}: no run-*.wandb file in this W&B run folder")
        path = files[0]
    run = OfflineRun()
    for payload in record_payloads(path):
        record = wandb_internal_pb2.Record()  # pyright: ignore[reportAttributeAccessIssue]  # generated at import
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.name, run.group = record.run.run_id, record.run.display_name, record.run.run_group
            run.config.update(_items(record.run.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run
