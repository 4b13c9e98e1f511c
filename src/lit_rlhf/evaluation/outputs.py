"""What evaluate and generate write: JSON and JSON-lines files, written whole or not at all, and a table."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable


def write_atomically(path: Path, lines: Iterable[str]) -> None:
    """Write `lines` to a temporary file beside `path`, then rename it over `path`: a crash or a kill never
    leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            for line in lines:
                stream.write(line)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, value) -> None:
    write_atomically(path, [json.dumps(value, indent=2, ensure_ascii=False), "\n"])


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    write_atomically(path, (json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in records))


def print_table(metrics: dict[str, float]) -> None:
    """Metric names and values, aligned, on the terminal."""
    width = max(len(name) for name in metrics)
    print(f"{'metric':<{width}}  value")
    for name, value in metrics.items():
        print(f"{name:<{width}}  {value:.4f}")
