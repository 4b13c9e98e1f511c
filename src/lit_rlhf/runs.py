"""Find finished runs on disk and read their metric histories, from W&B offline files or the CSV mirror.

A path may be a run's output folder, a multirun folder holding many, or a W&B `offline-run-*`
folder. Each run's overrides come from Hydra's `.hydra/overrides.yaml`, so a sweep's points can be
labelled by what was swept.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from lit_rlhf.errors import DataError
from lit_rlhf.wandb_history import read_offline_run, run_folders

SOURCES = ("auto", "wandb", "csv")


@dataclass
class RunHistory:
    """One run's logged rows; `rows` hold only the metrics each step logged (no empty cells)."""

    path: Path
    overrides: list[str]
    rows: list[dict[str, float]]
    source: str

    def series(self, metric: str) -> tuple[list[float], list[float]]:
        """(steps, values) of `metric`, in logging order; steps are Lightning's `trainer/global_step` (or `step`)."""
        steps, values = [], []
        for index, row in enumerate(self.rows):
            if metric in row:
                steps.append(row.get("trainer/global_step", row.get("step", index)))
                values.append(row[metric])
        return steps, values

    def last(self, metric: str) -> float | None:
        _, values = self.series(metric)
        return values[-1] if values else None


def _numeric(row: dict) -> dict[str, float]:
    numbers = {}
    for key, value in row.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not key.startswith("_") and math.isfinite(number):
            numbers[key] = number
    return numbers


def read_csv_rows(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [_numeric({k: v for k, v in row.items() if v not in ("", None)}) for row in csv.DictReader(handle)]


def _overrides_of(run_dir: Path) -> list[str]:
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.exists() else []


def _is_wandb_run_dir(path: Path) -> bool:
    return path.name.startswith(("offline-run-", "run-")) and path.parent.name == "wandb" and path.is_dir()


def _load_run(run_dir: Path, source: str) -> RunHistory | None:
    """The run in `run_dir`: an output folder, or one W&B `offline-run-*` folder inside one."""
    if _is_wandb_run_dir(run_dir):
        rows = [_numeric(row) for row in read_offline_run(run_dir).history]
        return RunHistory(run_dir, _overrides_of(run_dir.parent.parent), rows, "wandb")
    wandb_runs = run_folders(run_dir / "wandb")
    csv_file = run_dir / "csv" / "metrics.csv"
    if source in ("auto", "wandb") and wandb_runs:
        # A run folder holds one W&B run, in one part per resumption (the same id, started later); should it
        # hold other runs too, the latest run's parts are read, in order.
        latest_id = wandb_runs[-1][1]
        parts = [folder for folder, run_id in wandb_runs if run_id == latest_id]
        rows = [_numeric(row) for part in parts for row in read_offline_run(part).history]
        return RunHistory(run_dir, _overrides_of(run_dir), rows, "wandb")
    if source in ("auto", "csv") and csv_file.exists():
        return RunHistory(run_dir, _overrides_of(run_dir), read_csv_rows(csv_file), "csv")
    return None


def _candidate_dirs(path: Path) -> list[Path]:
    """Run folders at or under `path`: those holding a `csv/metrics.csv` or a `wandb/` folder."""
    if _is_wandb_run_dir(path):
        return [path]
    found = {p.parent.parent for p in path.rglob("csv/metrics.csv")}
    found |= {p.parent.parent for p in path.rglob("wandb/*run-*") if p.is_dir()}
    return sorted(found)


def load_runs(paths: list[str | Path], source: str = "auto") -> list[RunHistory]:
    """Every run found under `paths`, in path order. Raises DataError naming what is missing."""
    if source not in SOURCES:
        raise DataError(f"unknown source '{source}'; choose one of {', '.join(SOURCES)}")
    runs = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError(f"{path}: no such file or directory")
        loaded = [run for run in (_load_run(d, source) for d in _candidate_dirs(path)) if run is not None]
        if not loaded:
            raise DataError(f"{path}: no runs found (expected csv/metrics.csv or wandb/offline-run-* under it)")
        runs.extend(loaded)
    return runs


def without_seed(overrides: list[str]) -> list[str]:
    """The overrides except the seed's (`seed=1`, `+seed=1`): what a group of repeated runs shares."""
    return [o for o in overrides if o.partition("=")[0].lstrip("+~") != "seed"]


def group_by_all_but_seed(override_lists: list[list[str]]) -> dict[tuple[str, ...], list[int]]:
    """Indices of the runs grouped by their overrides except the seed, in first-seen order."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, overrides in enumerate(override_lists):
        groups.setdefault(tuple(sorted(without_seed(overrides))), []).append(index)
    return groups


def varying_overrides(override_lists: list[list[str]]) -> list[list[str]]:
    """For each run's overrides, those not shared by every run: what a sweep varied."""
    counts: dict[str, int] = {}
    for overrides in override_lists:
        for override in set(overrides):
            counts[override] = counts.get(override, 0) + 1
    return [[o for o in overrides if counts[o] < len(override_lists)] for overrides in override_lists]
