"""Turn finished runs into PNG plots: `python -m lit_rlhf.plot PATH... [--out DIR]`.

PATH is a run folder, a multirun (sweep) folder or a W&B `offline-run-*` folder. Two figures:

* `curves.png`: KL and reward over the training steps, one line per run;
* `frontier.png`: each run's final reward against its final KL, proxy and gold side by side,
  the picture of reward-model overoptimization (Gao et al. 2023, "Scaling Laws for Reward Model
  Overoptimization"): how much gold reward each nat of KL buys, and where the proxy stops tracking it.

A multi-objective search's folder (its `pareto_front.json`, e.g. from hparams_search=ppo_pareto) also
gets `pareto_front.png`: every completed trial, the Pareto-optimal ones joined.

Runs with validation histories, and any `bon.csv` (+experiment=bon_frontier) under the paths, also give
`overoptimization.png` and `gao_fits.csv` (lit_rlhf/analysis/overoptimization.py): gold reward against sqrt(KL),
best-of-n against PPO, seeds averaged (mean ± sd), with Gao et al.'s fitted forms.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lit_rlhf.analysis import (
    PARETO_JSON,
    frontier_points,
    overoptimization_outputs,
    plot_curves,
    plot_frontier,
    plot_pareto_front,
)
from lit_rlhf.errors import UserError
from lit_rlhf.runs import SOURCES, load_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lit_rlhf.plot", description=(__doc__ or "").split("\n\n")[0])
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
