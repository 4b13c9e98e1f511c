"""The over-optimization figure: gold (and proxy) reward against d = sqrt(KL) for best-of-n and PPO runs.

* best-of-n: each `bon.csv` found under the paths (`+experiment=bon_frontier`);
* PPO: every validation of every run (val/kl, val/reward, val/gold_reward), runs that differ only in their
  seed averaged: mean ± sd (sample standard deviation over the seeds) at each validation;
* fits: Gao et al. 2023's forms, the best-of-n form to best-of-n, the RL form to each PPO group and to all
  PPO points together, on gold reward relative to the start (n = 1, or the run's step-0 validation).

`python -m lit_rlhf.plot` draws it as `overoptimization.png` and writes the coefficients to `gao_fits.csv`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lit_rlhf.analysis.figures import plt, save_figure
from lit_rlhf.overoptimization.bon import BON_CSV, BonRow, read_bon_csv
from lit_rlhf.overoptimization.fits import GaoFit, fit_gao
from lit_rlhf.runs import RunHistory, group_by_all_but_seed, varying_overrides

VAL = ("val/kl", "val/reward", "val/gold_reward")


@dataclass
class SeedGroup:
    """Runs that differ only in their seed; arrays are (S, V): seed s's v-th validation (cut to the shortest)."""

    label: str
    d: np.ndarray
    proxy: np.ndarray
    gold: np.ndarray

    @property
    def seeds(self) -> int:
        return self.d.shape[0]


def validation_points(run: RunHistory) -> np.ndarray:
    """(V, 3) kl, proxy, gold of each validation that logged all three, in logging order."""
    rows = [[row[name] for name in VAL] for row in run.rows if all(name in row for name in VAL)]
    return np.array(rows, dtype=float).reshape(-1, 3)


def _short(override: str) -> str:
    key, _, value = override.partition("=")
    return f"{key.rsplit('.', 1)[-1]}={value}"


def seed_groups(runs: list[RunHistory]) -> list[SeedGroup]:
    """PPO runs with validation histories, grouped by every override except the seed."""
    runs = [run for run in runs if len(validation_points(run))]
    groups = group_by_all_but_seed([run.overrides for run in runs])
    labels = varying_overrides([list(key) for key in groups])
    result = []
    for (key, members), varied in zip(groups.items(), labels):
        histories = [validation_points(runs[i]) for i in members]
        length = min(len(h) for h in histories)
        stacked = np.stack([h[:length] for h in histories])  # (S, V, 3)
        # One group: named by all its overrides but the seed; several: by those they differ in.
        label = ", ".join(_short(o) for o in (varied if len(groups) > 1 else key)) or runs[members[0]].path.name
        d = np.sqrt(np.clip(stacked[..., 0], 0.0, None))
        result.append(SeedGroup(label, d, stacked[..., 1], stacked[..., 2]))
    return result


def find_bon(paths: list[str | Path]) -> list[tuple[Path, list[BonRow]]]:
    found = []
    for path in map(Path, paths):
        files = [path] if path.name == BON_CSV else sorted(path.rglob(BON_CSV))
        found += [(file, read_bon_csv(file)) for file in files]
    return found


def gao_fits(bon: list[tuple[Path, list[BonRow]]], groups: list[SeedGroup]) -> list[tuple[str, GaoFit]]:
    """(what was fitted, fit): both forms to each best-of-n curve, each PPO group and all PPO points."""
    datasets = []
    for path, rows in bon:
        d = np.sqrt([r.kl for r in rows])
        gold = np.array([r.gold for r in rows])
        datasets.append((f"bon {path.parent.name}", d, gold - gold[np.argmin(d)]))
    ppo = []
    for group in groups:
        # Relative to each run's own first validation (step 0, the policy before training).
        d, gold = group.d.ravel(), (group.gold - group.gold[:, :1]).ravel()
        datasets.append((f"ppo {group.label}", d, gold))
        ppo.append((d, gold))
    if len(ppo) > 1:
        datasets.append(("ppo all", np.concatenate([d for d, _ in ppo]), np.concatenate([g for _, g in ppo])))
    fits = []
    for name, d, gold in datasets:
        for form in ("bon", "rl"):
            try:
                fits.append((name, fit_gao(form, d, gold)))
            except ValueError:
                continue  # fewer than two distinct KLs: nothing to fit
    return fits


def write_fits(fits: list[tuple[str, GaoFit]], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["data", "form", "alpha", "beta", "rmse"])
        for name, fit in fits:
            writer.writerow([name, fit.form, f"{fit.alpha:.6g}", f"{fit.beta:.6g}", f"{fit.rmse:.4g}"])


def plot_overoptimization(bon, groups: list[SeedGroup], fits: list[tuple[str, GaoFit]], path: Path) -> None:
    figure, (gold_axis, proxy_axis) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    fitted = {name: fit for name, fit in fits if fit.form == ("bon" if name.startswith("bon") else "rl")}
    for path_, rows in bon:
        color = next(colors)
        d = np.sqrt([r.kl for r in rows])
        name = f"bon {path_.parent.name}"
        label = "best-of-n (n = " + ",".join(str(r.n) for r in rows) + ")"
        gold_axis.plot(d, [r.gold for r in rows], "o-", color=color, label=label)
        proxy_axis.plot(d, [r.proxy for r in rows], "o-", color=color, label=label)
        if name in fitted:
            fit, grid = fitted[name], np.linspace(0, d.max() * 1.05, 100)
            base = rows[int(np.argmin(d))].gold
            gold_axis.plot(
                grid, base + fit(grid), "--", color=color, label=f"fit d(α−βd): α={fit.alpha:.2f}, β={fit.beta:.2f}"
            )
    for group in groups:
        color = next(colors)
        sd = (lambda a: a.std(0, ddof=1)) if group.seeds > 1 else (lambda a: np.zeros(a.shape[1]))
        d = group.d.mean(0)
        label = f"PPO {group.label} ({group.seeds} seed{'s' if group.seeds > 1 else ''})"
        for axis, values in ((gold_axis, group.gold), (proxy_axis, group.proxy)):
            axis.errorbar(
                d,
                values.mean(0),
                xerr=sd(group.d),
                yerr=sd(values),
                fmt="s-",
                color=color,
                capsize=2,
                label=label,
                alpha=0.85,
            )
        name = f"ppo {group.label}"
        if name in fitted:
            fit, grid = fitted[name], np.linspace(0, group.d.max() * 1.05, 100)
            base = float(group.gold[:, 0].mean())
            gold_axis.plot(
                grid, base + fit(grid), ":", color=color, label=f"fit d(α−β log d): α={fit.alpha:.2f}, β={fit.beta:.2f}"
            )
    gold_axis.set(title="Gold reward (the task's truth)", xlabel="sqrt(KL) (nats^1/2)", ylabel="gold reward")
    proxy_axis.set(title="Proxy reward (the reward model)", xlabel="sqrt(KL) (nats^1/2)", ylabel="proxy reward")
    for axis in (gold_axis, proxy_axis):
        axis.grid(alpha=0.3)
    gold_axis.legend(fontsize=7)
    figure.suptitle("Over-optimization: best-of-n against PPO (Gao et al. 2023); PPO: mean ± sd over seeds")
    save_figure(figure, path)


def overoptimization_outputs(runs: list[RunHistory], paths: list[str | Path], out: Path) -> list[Path]:
    """Draw `overoptimization.png` and write `gao_fits.csv` when the paths hold best-of-n or PPO validations."""
    bon, groups = find_bon(paths), seed_groups(runs)
    if not bon and not groups:
        return []
    fits = gao_fits(bon, groups)
    plot_overoptimization(bon, groups, fits, out / "overoptimization.png")
    write_fits(fits, out / "gao_fits.csv")
    print("Gao et al. fits (gold − gold at KL 0, d = sqrt(KL)):")
    for name, fit in fits:
        shape = "d(α − β d)" if fit.form == "bon" else "d(α − β log d)"
        print(f"  {name}: {shape}  α {fit.alpha:.3f}  β {fit.beta:.3f}  rmse {fit.rmse:.3f}")
    for group in groups:
        last = group.gold[:, -1]
        spread = f" ± {last.std(ddof=1):.2f}" if group.seeds > 1 else ""
        kl = group.d[:, -1] ** 2
        print(f"  PPO {group.label} ({group.seeds} seeds): final kl {kl.mean():.2f}, gold {last.mean():.2f}{spread}")
    return [out / "overoptimization.png", out / "gao_fits.csv"]
