"""What evaluate and generate write: JSON and JSON-lines files, written whole or not at all, and a table."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from lit_rlhf.outputs import atomic_write_text


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in records))


def print_table(metrics: dict[str, float]) -> None:
    """Metric names and values, aligned, on the terminal."""
    width = max(len(name) for name in metrics)
    print(f"{'metric':<{width}}  value")
    for name, value in metrics.items():
        print(f"{name:<{width}}  {value:.4f}")
