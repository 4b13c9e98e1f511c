"""Reading finished runs back: the W&B offline file reader, the CSV reader, run discovery and the plot's math."""

from __future__ import annotations

from pathlib import Path

import pytest
import wandb

from lit_rlhf import analysis, plot
from lit_rlhf.errors import DataError
from lit_rlhf.runs import RunHistory, load_runs, varying_overrides
from lit_rlhf.sweep import summary_table
from lit_rlhf.wandb_history import read_offline_run


def write_offline_run(root: Path, rows: list[dict], config: dict, group: str = "g") -> Path:
    run = wandb.init(project="p", dir=str(root), mode="offline", group=group, name="n", config=config)
    for row in rows:
        run.log(row)
    run.finish()
    wandb.teardown()  # finish() can return before the W&B service has flushed the file's last blocks
    [folder] = (root / "wandb").glob("offline-run-*")
    return folder


def test_wandb_reader_round_trips_history_and_config_across_block_boundaries(tmp_path):
    # > 32 KiB of records and one record larger than a block: exercises FIRST/MIDDLE/LAST chunks.
    rows = [{"train/kl": step * 0.5, "train/reward": -step, "trainer/global_step": step} for step in range(600)]
    config = {"note": "x" * 70_000, "regularizer": {"kl": {"coef": 0.05}}}
    run = read_offline_run(write_offline_run(tmp_path, rows, config))
    assert run.name == "n" and run.group == "g" and run.run_id
    assert run.config["note"] == "x" * 70_000 and run.config["regularizer"] == {"kl": {"coef": 0.05}}
    history = [{k: v for k, v in row.items() if not k.startswith("_")} for row in run.history]
    assert history == rows


def test_wandb_reader_stops_at_a_truncated_tail_and_rejects_other_files(tmp_path):
    folder = write_offline_run(tmp_path, [{"train/kl": float(step)} for step in range(50)], {})
    [file] = folder.glob("run-*.wandb")
    data = file.read_bytes()
    file.write_bytes(data[: len(data) - 40])  # a run killed mid-write
    rows = read_offline_run(folder).history
    assert 0 < len(rows) <= 50 and [row["train/kl"] for row in rows] == [float(s) for s in range(len(rows))]
    file.write_bytes(b"not a wandb file")
    with pytest.raises(DataError, match="not a W&B run file"):
        read_offline_run(folder)


def write_csv_run(run_dir: Path, lines: list[str], overrides: list[str]) -> None:
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


def test_load_runs_finds_every_run_of_a_sweep_with_its_overrides(tmp_path):
    for job, coef in enumerate(("0.01", "0.1")):
        lines = ["step,train/kl,train/reward,val/kl", "0,1.0,0.5,", "1,2.0,0.7,", f"1,,,{3.0 + job}"]
        write_csv_run(tmp_path / str(job), lines, ["+experiment=ppo_kl", f"regularizer.kl.coef={coef}"])
    runs = load_runs([tmp_path])
    assert [run.source for run in runs] == ["csv", "csv"]
    assert runs[0].series("train/kl") == ([0.0, 1.0], [1.0, 2.0])
    assert runs[1].last("val/kl") == 4.0 and runs[0].last("missing") is None
    assert varying_overrides([run.overrides for run in runs]) == [
        ["regularizer.kl.coef=0.01"],
        ["regularizer.kl.coef=0.1"],
    ]


def test_load_runs_names_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_runs([tmp_path / "nope"])
    with pytest.raises(DataError, match="no runs found"):
        load_runs([tmp_path])
    with pytest.raises(DataError, match="choose one of auto, wandb, csv"):
        load_runs([tmp_path], source="tensorboard")


def history(overrides: list[str], rows: list[dict[str, float]]) -> RunHistory:
    return RunHistory(Path("/runs/x"), overrides, rows, "csv")


def test_frontier_points_prefer_held_out_values_and_sort_by_kl():
    runs = [
        history(["coef=0.1"], [{"train/kl": 9.0, "train/reward": 1.0}, {"val/kl": 2.0, "val/reward": 3.0}]),
        history(["coef=0"], [{"train/kl": 8.0, "train/reward": 5.0, "val/gold_reward": -1.0}]),
        history(["coef=1"], [{"train/reward": 1.0}]),  # never logged a KL: not a frontier point
    ]
    points = analysis.frontier_points(runs)
    assert [(p.label, p.kl, p.proxy, p.gold) for p in points] == [
        ("coef=0.1", 2.0, 3.0, None),
        ("coef=0", 8.0, 5.0, -1.0),
    ]


def test_plot_command_reports_a_bad_path_in_one_line(tmp_path, capsys):
    assert plot.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'}: no such file or directory"


def test_summary_table_lists_every_job_with_what_it_varied():
    records = [
        {"job": 1, "overrides": ["a=1", "b=2"], "status": "FAILED", "metric": "m", "value": None, "error": "boom"},
        {"job": 0, "overrides": ["a=1", "b=1"], "status": "COMPLETED", "metric": "m", "value": 0.5, "error": None},
    ]
    assert summary_table(records).splitlines()[2:] == [
        "| 0 | COMPLETED | m | 0.5 | b=1 |",
        "| 1 | FAILED | m | boom | b=2 |",
    ]
