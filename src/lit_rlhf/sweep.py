"""Sweeps that survive a failed job, and the summary at their end.

The sweeper (hydra_plugins/lit_rlhf_sweeper) runs every job even when some fail; `SweepSummary` writes one
record per job (`sweep_job.json` in the job's folder, so it works across launcher processes and
cluster nodes), reports each failure with its overrides as it happens, and at the end prints every
job's overrides (those that vary), status and metric, writes `sweep_summary.json` and `.md`, and exits non-zero if a
job failed. Every job that finished keeps its outputs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from lit_rlhf.errors import UserError
from lit_rlhf.runs import varying_overrides

log = logging.getLogger("lit_rlhf.sweep")

JOB_RECORD = "sweep_job.json"


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.chmod(temporary, 0o644)  # mkstemp makes it private
    os.replace(temporary, path)


def summary_table(records: list[dict]) -> str:
    """A markdown table of the jobs in job order, showing the overrides the jobs differ in."""
    records = sorted(records, key=lambda r: r["job"])
    lines = ["| job | status | metric | value | overrides |", "|---|---|---|---|---|"]
    for record, varied in zip(records, varying_overrides([r["overrides"] for r in records])):
        value = record["value"] if record["value"] is not None else record["error"] or ""
        overrides = " ".join(varied or record["overrides"])
        lines.append(f"| {record['job']} | {record['status']} | {record['metric'] or ''} | {value} | {overrides} |")
    return "\n".join(lines)


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
        write_atomically(output_dir / JOB_RECORD, json.dumps(record, indent=2))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        records = [json.loads(path.read_text()) for path in sweep_dir.rglob(JOB_RECORD)]
        if not records:
            return
        table = summary_table(records)
        write_atomically(
            sweep_dir / "sweep_summary.json", json.dumps(sorted(records, key=lambda r: r["job"]), indent=2)
        )
        write_atomically(sweep_dir / "sweep_summary.md", table + "\n")
        failed = [record for record in records if record["status"] != "COMPLETED"]
        print(f"\nSweep summary ({len(records)} jobs, {len(failed)} failed) in {sweep_dir}:\n{table}", flush=True)
        if failed:
            print(f"error: {len(failed)} of {len(records)} jobs failed; the others' outputs are kept", file=sys.stderr)
            sys.exit(1)
