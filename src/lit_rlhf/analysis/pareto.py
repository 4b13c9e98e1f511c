"""The Pareto front of a multi-objective search (`pareto_front.json`, e.g. from hparams_search=ppo_pareto)."""

from __future__ import annotations

from pathlib import Path

from lit_rlhf.analysis.figures import plt, save_figure

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
    save_figure(figure, path)
