"""Analysis of finished runs: the figures and fits `python -m lit_rlhf.plot` writes.

* `curves`: KL and reward over training, and each run's end point on the reward-KL frontier;
* `pareto`: the Pareto front of a multi-objective search;
* `overoptimization`: best-of-n against PPO, seeds averaged, with Gao et al. 2023's fits;
* `figures`: matplotlib without a display, PNGs written atomically.

The top room: it reads what the stages wrote, and nothing in lit_rlhf below the commands imports it.
"""

from lit_rlhf.analysis.curves import FrontierPoint, frontier_points, plot_curves, plot_frontier, run_labels
from lit_rlhf.analysis.figures import save_figure
from lit_rlhf.analysis.overoptimization import gao_fits, overoptimization_outputs, plot_overoptimization, seed_groups
from lit_rlhf.analysis.pareto import PARETO_JSON, plot_pareto_front

__all__ = [
    "PARETO_JSON",
    "FrontierPoint",
    "frontier_points",
    "gao_fits",
    "overoptimization_outputs",
    "plot_curves",
    "plot_frontier",
    "plot_overoptimization",
    "plot_pareto_front",
    "run_labels",
    "save_figure",
    "seed_groups",
]
