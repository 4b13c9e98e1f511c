"""Training curves and the end-of-run frontier of a set of runs (`python -m lit_rlhf.plot`).

* `curves.png`: KL and reward over the training steps, one line per run;
* `frontier.png`: each run's final reward against its final KL, proxy and gold side by side,
  the picture of reward-model overoptimization (Gao et al. 2023, "Scaling Laws for Reward Model
  Overoptimization"): how much gold reward each nat of KL buys, and where the proxy stops tracking it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lit_rlhf.analysis.figures import plt, save_figure
from lit_rlhf.runs import RunHistory, varying_overrides

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
    save_figure(figure, path)


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
    save_figure(figure, path)
