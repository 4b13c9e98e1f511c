"""On-policy distillation on the embedded task at several seeds: wall time, KL to the teacher, gold reward.

Runs `python -m lit_rlhf.train +experiment=E seed=S logger=csv` for each experiment and seed (one after
the other, each on one thread), then writes a markdown table of the held-out metrics and a figure of their
curves. The issue #29 target: `distill` cuts `val/kl_to_teacher_exact` by >= 50% and closes >= half of the
gap between the student's `val/gold_reward` and the teacher's (`val/teacher_gold_reward`, same prompts,
same seed) within 5 minutes. Usage:

    python benchmarks/distill_seeds.py --experiments distill gkd --seeds 0 1 2 \
        --runs /tmp/distill_runs --figure docs/results/distillation.png
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

KL, GOLD, TEACHER_GOLD = "val/kl_to_teacher_exact", "val/gold_reward", "val/teacher_gold_reward"


def run(experiment: str, seed: int, folder: Path, extra: list[str]) -> tuple[float, float]:
    """Train one run into `folder` on one thread; returns its wall time and CPU time in seconds (a finished
    run found there is reused: NaN, NaN)."""
    status = folder / "status.json"
    if status.exists() and json.loads(status.read_text())["status"] == "finished":
        return float("nan"), float("nan")
    command = [sys.executable, "-m", "lit_rlhf.train", f"+experiment={experiment}", f"seed={seed}", "logger=csv"]
    command += [f"hydra.run.dir={folder}", *extra]
    # One thread: the CPU time is then what the run takes on one idle core, whatever else the machine runs.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    (folder / "timing.json").write_text(json.dumps({"wall_seconds": wall, "cpu_seconds": cpu}))
    return wall, cpu


def validation_rows(folder: Path) -> list[dict[str, float]]:
    """The CSV rows that hold the held-out metrics, in step order."""
    with open(folder / "csv" / "metrics.csv") as handle:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
    return [row for row in rows if KL in row]


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    first, last = rows[0], rows[-1]
    gap = last[TEACHER_GOLD] - first[GOLD]
    return {
        "kl_start": first[KL],
        "kl_end": last[KL],
        "kl_cut": 1 - last[KL] / first[KL],
        "gold_start": first[GOLD],
        "gold_end": last[GOLD],
        "teacher_gold": last[TEACHER_GOLD],
        "gap_closed": (last[GOLD] - first[GOLD]) / gap,
    }


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def table(results: dict[tuple[str, int], tuple[dict[str, float], list[dict[str, float]]]]) -> str:
    lines = [
        "| experiment | seed | CPU time (1 thread) | wall time | `val/kl_to_teacher_exact` start → end (cut) "
        "| `val/gold_reward` start → end | `val/teacher_gold_reward` | gap closed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (experiment, seed), (timing, rows) in results.items():
        s = summary(rows)
        lines.append(
            f"| `{experiment}` | {seed} | {minutes(timing['cpu_seconds'])} | {minutes(timing['wall_seconds'])} "
            f"| {s['kl_start']:.2f} → {s['kl_end']:.2f} ({s['kl_cut']:.0%}) "
            f"| {s['gold_start']:.2f} → {s['gold_end']:.2f} | {s['teacher_gold']:.2f} | {s['gap_closed']:.0%} |"
        )
    return "\n".join(lines)


def figure(results, path: Path) -> None:
    fig, (kl_axis, gold_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {}
    for (experiment, seed), (_, rows) in results.items():
        color = colors.setdefault(experiment, f"C{len(colors)}")
        steps = [row["step"] + (1 if index else 0) for index, row in enumerate(rows)]
        label = experiment if seed == min(s for e, s in results if e == experiment) else None
        kl_axis.plot(steps, [row[KL] for row in rows], "o-", color=color, alpha=0.7, label=label)
        gold_axis.plot(steps, [row[GOLD] for row in rows], "o-", color=color, alpha=0.7, label=label)
    # The teacher's own samples depend on each run's sampling seed: one dashed line per distinct value.
    for number, teacher in enumerate(sorted({rows[0][TEACHER_GOLD] for _, rows in results.values()})):
        label = "teacher (its samples at each run's seed)" if number == 0 else None
        gold_axis.axhline(teacher, color="black", linestyle="--", linewidth=0.8, label=label)
    kl_axis.set(yscale="log", xlabel="iteration", ylabel="nats / response", title="held-out KL(student ‖ teacher)")
    gold_axis.set(xlabel="iteration", ylabel="gold reward", title="held-out gold reward")
    kl_axis.legend()
    gold_axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=["distill"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, required=True, help="a folder for the run folders")
    parser.add_argument("--figure", type=Path, default=None, help="where the PNG goes")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run")
    args = parser.parse_args(argv)
    results = {}
    for experiment in args.experiments:
        for seed in args.seeds:
            folder = args.runs / f"{experiment}-seed{seed}"
            run(experiment, seed, folder, args.overrides)
            timing = json.loads((folder / "timing.json").read_text())
            results[experiment, seed] = (timing, validation_rows(folder))
            print(f"{experiment} seed {seed}: {timing}", flush=True)
    print(table(results))
    if args.figure is not None:
        figure(results, args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
