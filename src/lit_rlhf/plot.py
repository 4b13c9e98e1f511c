"""Turn finished runs into PNG plots: `python -m lit_rlhf.plot PATH... [--out DIR]`.

PATH is a run folder, a multirun (sweep) folder or a W&B `offline-run-*` folder. Two figures:

* `curves.png`: KL and reward over the training steps, one line per run;
* `frontier.png`: each run's final reward against its final KL, proxy and gold side by side,
  the picture of reward-model overoptimization (Gao et al. 2023, "Scaling Laws for Reward Model
  Overoptimization"): how much gold reward each nat of KL buys, and where the proxy stops tracking it.

A multi-objective search's folder (its `pareto_front.json`, e.g. from hparams_search=ppo_pareto) also
gets `pareto_front.png`: every completed trial, the Pareto-optimal ones joined.

Runs with validation histories, and any `bon.csv` (+experiment=bon_frontier) under the paths, also give
`overoptimization.png` and `gao_fits.csv` (lit_rlhf/overoptimization/figure.py): gold reward against sqrt(KL),
best-of-n against PPO, seeds averaged (mean ± sd), with Gao et al.'s fitted forms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402

from lit_rlhf.errors import UserError  # noqa: E402
from lit_rlhf.overoptimization.figure import overoptimization_outputs  # noqa: E402
from lit_rlhf.runs import SOURCES, RunHistory, load_runs, varying_overrides  # noqa: E402

CURVES = {"KL (nats / sequence)": "train/kl", "proxy reward (reward model)": "train/reward"}
# End-of-run values: the held-out validation metrics when a run has them, else the last training value.
FRONTIER_KL = ("val/kl", "train/kl")
FRONTIER_PROXY = ("val/reward", "train/reward")
FRONTIER_GOLD = ("val/gold_reward", "train/gold_reward")


@dataclass
class FrontierPoint:
    label: str
    kl: float
    proxy: float | None
    gold: float | None


def run_labels(runs: list[RunHistory]) -> list[str]:
    """Each run named by the overrides the runs differ in, keys shortened to their last part (`coef=0.05`)."""

    def short(override: str) -> str:
        key, _, value = override.partition("=")
        return f"{key.rsplit('.', 1)[-1]}={value}"

    varied = varying_overrides([run.overrides for run in runs])
    return [", ".join(map(short, overrides)) or run.path.name for run, overrides in zip(runs, varied)]


def _final(run: RunHistory, metrics: tuple[str, ...]) -> float | None:
    for metric in metrics:
        value = run.last(metric)
        if value is not None:
            return value
    return None


def frontier_points(runs: list[RunHistory]) -> list[FrontierPoint]:
    """One point per run that logged a KL, sorted by KL, labelled by the overrides the runs differ in."""
    points = []
    for run, label in zip(runs, run_labels(runs)):
        kl = _final(run, FRONTIER_KL)
        if kl is not None:
            points.append(FrontierPoint(label, kl, _final(run, FRONTIER_PROXY), _final(run, FRONTIER_GOLD)))
    return sorted(points, key=lambda point: point.kl)


def _save_atomically(figure, path: Path) -> None:
    """Write the PNG beside its destination, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".png.tmp")
    os.close(handle)
    try:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a plot is for sharing
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
        plt.close(figure)


def plot_curves(runs: list[RunHistory], path: Path) -> None:
    labels = run_labels(runs)
    figure, axes = plt.subplots(1, len(CURVES), figsize=(6 * len(CURVES), 4))
    for axis, (title, metric) in zip(axes, CURVES.items()):
        for run, label in zip(runs, labels):
            steps, values = run.series(metric)
            if values:
                axis.plot(steps, values, label=label)
        axis.set(title=title, xlabel="trainer/global_step", ylabel=metric)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _save_atomically(figure, path)


def plot_frontier(points: list[FrontierPoint], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    kls = [point.kl for point in points]
    for name, values, marker in (
        ("proxy (reward model)", [point.proxy for point in points], "o"),
        ("gold (held-out task reward)", [point.gold for point in points], "s"),
    ):
        shown = [(kl, value) for kl, value in zip(kls, values) if value is not None]
        if shown:
            axis.plot(*zip(*shown), marker=marker, label=name)
    for point in points:
        axis.annotate(point.label, (point.kl, point.gold if point.gold is not None else point.proxy), fontsize=7)
    axis.set(title="Reward against KL at the end of each run", xlabel="KL(pi || pi_ref), nats / sequence")
    axis.set_ylabel("reward")
    axis.grid(alpha=0.3)
    axis.legend()
    _save_atomically(figure, path)


PARETO_JSON = "pareto_front.json"  # written by the Optuna sweeper (hydra_plugins/lit_rlhf_sweeper/_results.py)


def plot_pareto_front(front: dict, path: Path) -> None:
    """The first objective against the second: every completed trial, the front joined and numbered."""
    (y_name, x_name), (y_goal, x_goal) = front["metrics"][:2], front["directions"][:2]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    others = [row for row in front["trials"] if not row["on_front"]]
    if others:
        axis.scatter(
            [r["values"][x_name] for r in others],
            [r["values"][y_name] for r in others],
            color="0.6",
            label="other trials",
        )
    best = sorted(front["front"], key=lambda row: row["values"][x_name])
    xs, ys = [r["values"][x_name] for r in best], [r["values"][y_name] for r in best]
    axis.plot(xs, ys, marker="o", color="tab:orange", label="Pareto front")
    for index, (row, x, y) in enumerate(zip(best, xs, ys)):  # labels alternate above and below: neighbours stay legible
        axis.annotate(
            f"#{row['trial']}", (x, y), fontsize=7, xytext=(4, 4 if index % 2 else -10), textcoords="offset points"
        )
    axis.set(
        title=f"Pareto front of study {front['study']} ({len(best)} of {len(front['trials'])} trials)",
        xlabel=f"{x_name} ({x_goal})",
        ylabel=f"{y_name} ({y_goal})",
    )
    axis.grid(alpha=0.3)
    axis.legend()
    _save_atomically(figure, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lit_rlhf.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run, multirun or W&B offline-run folders")
    parser.add_argument("--out", default=None, help="where the PNGs go (default: the first PATH)")
    parser.add_argument("--source", choices=SOURCES, default="auto", help="W&B offline files, the CSV, or either")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.paths, args.source)
        out = Path(args.out or args.paths[0])
        plot_curves(runs, out / "curves.png")
        written = [out / "curves.png"]
        points = frontier_points(runs)
        if points:
            plot_frontier(points, out / "frontier.png")
            written.append(out / "frontier.png")
        for folder in map(Path, args.paths):
            if (folder / PARETO_JSON).is_file():
                target = out / "pareto_front.png" if len(args.paths) == 1 else out / f"pareto_front_{folder.name}.png"
                plot_pareto_front(json.loads((folder / PARETO_JSON).read_text()), target)
                written.append(target)
        # Best-of-n (bon.csv) and PPO validation histories, seeds averaged, with Gao et al.'s fits.
        written += overoptimization_outputs(runs, args.paths, out)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(runs)} run(s) read ({', '.join(sorted({run.source for run in runs}))})")
    for point in points:
        proxy, gold = (f"{v:.3f}" if v is not None else "-" for v in (point.proxy, point.gold))
        print(f"  {point.label}: kl {point.kl:.3f}  proxy {proxy}  gold {gold}")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
