"""Resume that checks: the checkpoint records the resolved config; changed settings stop with a table unless
named in resume.allow_changes; another stage's checkpoint, a LoRA mismatch, weights that do not fit, and a
missing, empty, truncated or unsafe ckpt_path are one line each, before any model loads. A resumed run
continues its run folder, its W&B run (by id) and its CSV history. Checkpoints load with weights_only."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from lit_rlhf.command import find_user_error
from lit_rlhf.config import run_folder
from lit_rlhf.errors import ConfigError
from lit_rlhf.loggers import AppendingCSVLogger, previous_wandb_run_id
from lit_rlhf.outputs import claim_folder
from lit_rlhf.resume import RECORD, check_weights_fit
from lit_rlhf.train import build, fit

RM = ["data.batch_size=4", "data.val_batch_size=8"]


@pytest.fixture(scope="module")
def rm_checkpoint(tmp_path_factory) -> Path:
    """The last.ckpt of a 2-batch reward-model run."""
    output = tmp_path_factory.mktemp("rm")
    fit(build(compose_config("rm_tiny", output, RM)))
    return output / "checkpoints" / "last.ckpt"


def refusal(experiment: str, output: Path, overrides: list[str]) -> str:
    with pytest.raises(Exception) as refused:
        build(compose_config(experiment, output, overrides))
    error = find_user_error(refused.value)
    assert isinstance(error, ConfigError), refused.value
    return str(error)


def test_the_checkpoint_records_the_resolved_config(rm_checkpoint):
    record = torch.load(rm_checkpoint, map_location="cpu", weights_only=True)[RECORD]
    assert record["stage"] == "RewardModel" and record["adapter"] == "FullFineTuning"
    # The learning rate is set per model (model.learning_rate.reward) and repeated by module.optimizer.lr.
    settings = record["settings"]
    assert record["config"]["module"]["optimizer"]["lr"] == settings["model.learning_rate.reward"]
    assert settings["module.optimizer.lr"] == settings["model.learning_rate.reward"]
    assert "module.optimizer.lr" in record["repeated"] and "model.learning_rate.reward" not in record["repeated"]
    assert settings["data.batch_size"] == 4


def test_changed_settings_stop_with_a_table_unless_named_as_intended(tmp_path, rm_checkpoint):
    changed = [*RM, "module.optimizer.lr=0.01", "data.batch_size=8", f"ckpt_path={rm_checkpoint}"]
    message = refusal("rm_tiny", tmp_path / "a", changed)
    first, *table = message.splitlines()
    assert first.startswith(f"ckpt_path {rm_checkpoint} was trained with other settings (2 differ)")
    assert first.endswith("resume.allow_changes=[data.batch_size,module.optimizer.lr]")
    rows = {row.split()[0]: row.split()[1:] for row in table[1:]}
    assert rows == {"data.batch_size": ["4", "8"], "module.optimizer.lr": ["0.001", "0.01"]}
    # Run length and validation frequency may change freely; named changes are accepted.
    allowed = [*changed, "trainer.max_epochs=2", "trainer.limit_val_batches=2"]
    run = build(compose_config("rm_tiny", tmp_path / "b", [*allowed, "resume.allow_changes=[module.optimizer,data]"]))
    assert run.ckpt_path == str(rm_checkpoint)


def test_another_stage_or_adapter_is_one_line(tmp_path, rm_checkpoint):
    message = refusal("dpo", tmp_path / "a", [f"ckpt_path={rm_checkpoint}"])
    assert "\n" not in message
    assert message == (
        f"ckpt_path {rm_checkpoint} was written by a RewardModel run (task rm_tiny); this run trains a DPOModule: "
        "a checkpoint resumes only the stage that wrote it"
    )
    message = refusal("rm_tiny", tmp_path / "b", [*RM, "adapter=lora", f"ckpt_path={rm_checkpoint}"])
    assert message.endswith("was trained with adapter=none but this run has adapter=lora; resume with adapter=none")


def test_weights_that_do_not_fit_are_one_line(tmp_path, rm_checkpoint):
    # A checkpoint without our record (an older lit-rlhf): only its weights can be checked.
    checkpoint = torch.load(rm_checkpoint, map_location="cpu", weights_only=True)
    del checkpoint[RECORD]
    run = build(compose_config("rm_tiny", tmp_path / "a", [*RM, "adapter=lora"]))
    with pytest.raises(ConfigError) as refused:
        check_weights_fit(run.module, checkpoint, "old.ckpt")
    message = str(refused.value)
    assert "\n" not in message and message.startswith("ckpt_path old.ckpt does not fit this model (")
    assert re.search(r"\d+ unknown, \d+ missing, 0 of another shape", message)


def corrupt(kind: str, folder: Path, rm_checkpoint: Path) -> Path:
    path = folder / f"{kind}.ckpt"
    if kind == "empty":
        path.touch()
    elif kind == "truncated":
        path.write_bytes(rm_checkpoint.read_bytes()[:5000])
    elif kind == "folder":
        path.mkdir()
    elif kind == "unsafe":
        torch.save({"state_dict": {}, "payload": RunsCode(folder / "pwned")}, path)
    return path


class RunsCode:
    """Unpickling this would create a file: what a checkpoint loaded with pickle enabled could do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("missing", "does not exist"),
        ("empty", "is empty (0 bytes): its save never completed"),
        ("truncated", "is not a readable checkpoint (truncated or corrupt"),
        ("folder", "is a folder; point it at a checkpoint file"),
        ("unsafe", "holds objects that safe loading (torch.load weights_only=True) refuses"),
    ],
)
def test_a_bad_ckpt_path_is_one_line_and_runs_no_code(tmp_path, rm_checkpoint, kind, expected):
    path = corrupt(kind, tmp_path, rm_checkpoint)
    message = refusal("rm_tiny", tmp_path / "run", [*RM, f"ckpt_path={path}"])
    assert "\n" not in message and message.startswith(f"ckpt_path {path}") and expected in message
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "run").exists(), "refused before anything was written"


def test_a_resumed_run_continues_its_folder_w_and_b_run_and_csv_history(tmp_path):
    run_dir = claim_folder(tmp_path / "run", "run", "hydra.run.dir")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert run_folder(str(checkpoint), "new") == str(run_dir)
    assert run_folder(str(tmp_path / "copied" / "last.ckpt"), "new") == "new"  # not in a run folder of ours
    assert run_folder("last", "new") == "new"

    (run_dir / "wandb" / "offline-run-20261201_101010-abc123").mkdir(parents=True)
    (run_dir / "wandb" / "offline-run-20261202_090000-abc123").mkdir()
    (run_dir / "wandb" / "offline-run-20261202_090000-abc123-1").mkdir()  # W&B's name for a second start that second
    assert previous_wandb_run_id(str(run_dir)) == "abc123"
    assert previous_wandb_run_id(str(tmp_path / "elsewhere")) is None

    for part, metrics in enumerate(({"train/loss": 1.0}, {"train/loss": 0.5, "val/loss": 0.7})):
        logger = AppendingCSVLogger(save_dir=str(run_dir), name="csv", version="")
        logger.log_metrics(metrics, step=part)
        logger.finalize("success")
    with open(run_dir / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["step"], row["train/loss"], row["val/loss"]) for row in rows] == [
        ("0", "1.0", ""),
        ("1", "0.5", "0.7"),
    ]


def test_a_resumed_w_and_b_run_continues_its_id_and_reads_back_as_one_history(tmp_path, monkeypatch):
    import wandb

    from lit_rlhf.loggers import close_loggers, wandb_logger
    from lit_rlhf.runs import load_runs

    monkeypatch.setenv("WANDB_MODE", "offline")
    ids = []
    for steps in ((0, 1), (2, 3)):  # the run, then its resumption in the same folder
        logger = wandb_logger(project="p", save_dir=str(tmp_path), offline=True)
        for step in steps:
            logger.log_metrics({"train/loss": float(step), "trainer/global_step": step})
        ids.append(logger.experiment.id)
        close_loggers([logger], "success")
        wandb.teardown()  # let the W&B service flush the file before it is read
    assert ids[0] == ids[1] and len(list(tmp_path.glob("wandb/offline-run-*"))) == 2
    [run] = load_runs([tmp_path], "wandb")
    assert [row["train/loss"] for row in run.rows] == [0.0, 1.0, 2.0, 3.0]
