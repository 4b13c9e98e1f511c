"""Sweeps that survive a failed job, and the summary at their end.

The sweepers (hydra_plugins/lit_rlhf_sweeper) run every job even when some fail; `SweepSummary` writes one
record per job (`sweep_job.json` in the job's folder, so it works across launcher processes and
cluster nodes), reports each failure with its overrides as it happens, and at the end prints every
job's overrides (those that vary), status and metric, writes `sweep_summary.json` and `.md`, and exits non-zero if a
job failed. A trial of an Optuna search that its pruner stopped (`optuna.TrialPruned`) is PRUNED, not
failed. Every job that finished keeps its outputs.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from lit_rlhf.errors import UserError
from lit_rlhf.outputs import atomic_write_text
from lit_rlhf.runs import group_by_all_but_seed, varying_overrides

log = logging.getLogger("lit_rlhf.sweep")

JOB_RECORD = "sweep_job.json"


def summary_table(records: list[dict]) -> str:
    """A markdown table of the jobs in job order, showing the overrides the jobs differ in."""
    records = sorted(records, key=lambda r: r["job"])
    lines = ["| job | status | metric | value | overrides |", "|---|---|---|---|---|"]
    for record, varied in zip(records, varying_overrides([r["overrides"] for r in records])):
        value = record["value"] if record["value"] is not None else record["error"] or ""
        overrides = " ".join(varied or record["overrides"])
        lines.append(f"| {record['job']} | {record['status']} | {record['metric'] or ''} | {value} | {overrides} |")
    return "\n".join(lines)


def seed_group_table(records: list[dict]) -> str:
    """Completed jobs grouped by every override except the seed: mean ± sd of the metric over the seeds.

    Empty unless some group holds more than one job (a sweep with `seed=0,1,2`).
    """
    done = sorted((r for r in records if r["status"] == "COMPLETED" and r["value"] is not None), key=lambda r: r["job"])
    groups = group_by_all_but_seed([r["overrides"] for r in done])
    if all(len(members) < 2 for members in groups.values()):
        return ""
    shared = varying_overrides([list(key) for key in groups])
    lines = ["| overrides (all but the seed) | jobs | metric | mean | sd |", "|---|---|---|---|---|"]
    for (key, members), varied in zip(groups.items(), shared):
        values = [done[i]["value"] for i in members]
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        jobs = ",".join(str(done[i]["job"]) for i in members)
        overrides = " ".join(varied or key) or "(none)"
        lines.append(f"| {overrides} | {jobs} | {done[members[0]]['metric'] or ''} | {mean:.4g} | {sd:.3g} |")
    return "\n".join(lines)


def _is_pruned(outcome: object) -> bool:
    """True for the `optuna.TrialPruned` a pruned trial's job ends with (Optuna is imported only by searches)."""
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(outcome, optuna.TrialPruned)


def job_records(sweep_dir: Path) -> list[Path]:
    """The record files of this sweep's jobs.

    A sweep over several experiments (`+experiment=glob(*)`) puts each job under its own task's folder,
    `outputs/<task>/multiruns/<start time>/<job>`, while the sweep's own folder is named by the primary
    config's task: its siblings of the same start time are searched too.
    """
    folders = {sweep_dir}
    if len(sweep_dir.parents) >= 3 and sweep_dir.parent.name == "multiruns":
        folders |= set(sweep_dir.parents[2].glob(f"*/multiruns/{sweep_dir.name}"))
    return sorted(path for folder in folders for path in folder.rglob(JOB_RECORD))


class SweepSummary(Callback):
    """Per-job records and the end-of-sweep summary (multiruns only)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return
        num, overrides = hydra_cfg.job.num, list(job_return.overrides or [])
        record = {"job": num, "overrides": overrides, "metric": config.optimized_metric, "value": None, "error": None}
        outcome = job_return._return_value  # the return value, or the exception of a failed job
        if job_return.status == JobStatus.COMPLETED:
            record.update(status="COMPLETED", value=float(outcome) if isinstance(outcome, (int, float)) else None)
        elif _is_pruned(outcome):
            record.update(status="PRUNED", error=str(outcome))
        else:
            message = str(outcome) if isinstance(outcome, UserError) else f"{type(outcome).__name__}: {outcome}"
            record.update(status="FAILED", error=message)
            # A bug (not a config or data error) keeps its traceback, in the console and the job's log.
            log.error(
                "job %d failed (%s): %s",
                num,
                " ".join(overrides),
                message,
                exc_info=None if isinstance(outcome, UserError) else outcome,
            )
        output_dir = Path(hydra_cfg.runtime.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / JOB_RECORD, json.dumps(record, indent=2))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        records = [json.loads(path.read_text()) for path in job_records(sweep_dir)]
        if not records:
            return
        sweep_dir.mkdir(parents=True, exist_ok=True)
        table = summary_table(records)
        by_seed = seed_group_table(records)
        if by_seed:
            table += "\n\nOver seeds (sd: sample standard deviation):\n" + by_seed
        atomic_write_text(
            sweep_dir / "sweep_summary.json", json.dumps(sorted(records, key=lambda r: r["job"]), indent=2)
        )
        atomic_write_text(sweep_dir / "sweep_summary.md", table + "\n")
        failed = [record for record in records if record["status"] == "FAILED"]
        pruned = sum(record["status"] == "PRUNED" for record in records)
        counts = f"{len(records)} jobs, " + (f"{pruned} pruned, " if pruned else "") + f"{len(failed)} failed"
        print(f"\nSweep summary ({counts}) in {sweep_dir}:\n{table}", flush=True)
        if failed:
            print(f"error: {len(failed)} of {len(records)} jobs failed; the others' outputs are kept", file=sys.stderr)
            sys.exit(1)
