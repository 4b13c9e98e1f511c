"""What a finished search reports: the best trial or the Pareto front, the trial states, what pruning saved.

Written to the sweep folder: `optimization_results.yaml` always, `pareto_front.md` and `.json` for a
multi-objective search (`python -m lit_rlhf.plot <sweep folder>` draws the front from the JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from lit_rlhf.outputs import atomic_write_text
from lit_rlhf.search.study import TRAINING

PARETO_JSON, PARETO_MD = "pareto_front.json", "pareto_front.md"


def state_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """How many trials ended in each state (running ones included, for a study still shared)."""
    counts = {state.name.lower(): 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for trial in trials:
        if trial.state != TrialState.WAITING:
            counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return counts


def pruning_savings(trials: list[FrozenTrial]) -> dict[str, Any]:
    """Training batches (exact) and seconds (estimated at each pruned trial's own pace) that pruning skipped.

    A pruned trial that ran `b` of its `p` planned batches in `s` seconds skipped `p - b` batches,
    about `(p - b) * s / b` seconds. Totals compare with the training every trial ran.
    """
    ran_batches = ran_seconds = skipped_batches = skipped_seconds = 0.0
    pruned = [trial for trial in trials if trial.state == TrialState.PRUNED]
    for trial in trials:
        training = trial.user_attrs.get(TRAINING)
        if not training or trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        ran_batches += training["batches"]
        ran_seconds += training["seconds"] or 0.0
        if trial.state == TrialState.PRUNED and training["planned_batches"]:
            skipped = training["planned_batches"] - training["batches"]
            skipped_batches += skipped
            skipped_seconds += skipped * (training["seconds"] or 0.0) / max(training["batches"], 1)
    return {
        "pruned_trials": len(pruned),
        "trials": sum(trial.state.is_finished() for trial in trials),
        "batches_run": int(ran_batches),
        "batches_skipped": int(skipped_batches),
        "training_seconds_run": round(ran_seconds, 1),
        "training_seconds_saved_estimate": round(skipped_seconds, 1),
    }


def describe_savings(savings: dict[str, Any]) -> str:
    if not savings["pruned_trials"]:
        return f"Pruning stopped none of the {savings['trials']} trials."
    total = savings["training_seconds_run"] + savings["training_seconds_saved_estimate"]
    share = 100 * savings["training_seconds_saved_estimate"] / total if total else 0.0
    return (
        f"Pruning stopped {savings['pruned_trials']} of {savings['trials']} trials early: "
        f"{savings['batches_skipped']} training batches not run "
        f"(the search ran {savings['batches_run']}), about {savings['training_seconds_saved_estimate']:.0f} s "
        f"of training saved, {share:.0f}% of what the trials would have taken unpruned."
    )


def _values(trial: FrozenTrial, metrics: list[str]) -> dict[str, float]:
    return dict(zip(metrics, trial.values))


def pareto_front(study: optuna.Study, metrics: list[str]) -> dict[str, Any]:
    """The Pareto-optimal trials and every completed one, best first on the first objective."""
    directions = [direction.name.lower() for direction in study.directions]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    on_front = {trial.number for trial in study.best_trials}
    sign = -1.0 if directions[0] == "maximize" else 1.0

    def row(trial: FrozenTrial) -> dict[str, Any]:
        return {"trial": trial.number, "values": _values(trial, metrics), "params": trial.params}

    ordered = sorted(complete, key=lambda trial: sign * trial.values[0])
    return {
        "study": study.study_name,
        "metrics": metrics,
        "directions": directions,
        "front": [row(trial) for trial in ordered if trial.number in on_front],
        "trials": [{**row(trial), "on_front": trial.number in on_front} for trial in ordered],
    }


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def front_table(front: dict[str, Any]) -> str:
    metrics, params = front["metrics"], sorted({name for row in front["front"] for name in row["params"]})
    heads = [f"{metric} ({direction[:3]})" for metric, direction in zip(metrics, front["directions"])]
    lines = ["| trial | " + " | ".join(heads + params) + " |", "|---" * (1 + len(heads) + len(params)) + "|"]
    for row in front["front"]:
        cells = [_cell(row["values"][metric]) for metric in metrics]
        cells += [_cell(row["params"].get(name)) for name in params]
        lines.append(f"| {row['trial']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(study: optuna.Study, metrics: list[str], sweep_dir: Path, storage_url: str, prunes: bool) -> None:
    """Log and write the outcome of the search."""
    trials = study.get_trials(deepcopy=False)
    results: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": storage_url,
        "metrics": metrics,
        "directions": [direction.name.lower() for direction in study.directions],
        "trials": state_counts(trials),
    }
    if len(metrics) == 1:
        try:
            best = study.best_trial
        except ValueError:
            print(f"No trial of study '{study.study_name}' completed: no best parameters.", flush=True)
        else:
            results.update(best_trial=best.number, best_params=best.params, best_value=best.value)
            print(f"Best parameters (trial {best.number}): {best.params}", flush=True)
            print(f"Best value ({metrics[0]}): {best.value}", flush=True)
    else:
        front = pareto_front(study, metrics)
        table = front_table(front)
        atomic_write_text(sweep_dir / PARETO_JSON, json.dumps(front, indent=2) + "\n")
        atomic_write_text(sweep_dir / PARETO_MD, table + "\n")
        results["pareto_front"] = front["front"]
        shown = f"{len(front['front'])} of {len(front['trials'])} completed trials"
        print(f"\nPareto front ({shown}) in {sweep_dir}:\n{table}", flush=True)
    if prunes:
        results["pruning"] = pruning_savings(trials)
        print(describe_savings(results["pruning"]), flush=True)
    atomic_write_text(sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(results)))
