"""Bad input never loses work: one clear message naming the file and line (or the valid choices), no stack
trace from the internals, and nothing written half-way."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import changed, compose_config, parameters_of, read_metrics

from lit_rlhf.errors import ConfigError, DataError, NonFiniteError, UserError
from lit_rlhf.losses.dpo import SigmoidLoss
from lit_rlhf.train import build, find_user_error, fit

SMALL = [
    "data.batch_size=4",
    "data.val_batch_size=4",
    "data.max_length=64",
    "data.max_prompt_length=32",
    "data.val_fraction=0.2",
]
JSONL = ["data=jsonl", *SMALL]
HH = ["data=hh_rlhf", "data.val_split=null", *SMALL]


def pair(i: int) -> dict:
    return {"prompt": f"Question {i}?", "chosen": f" Answer {i}.", "rejected": " No."}


def hh_pair(i: int) -> dict:
    prompt = f"\n\nHuman: Question {i}?\n\nAssistant:"
    return {"chosen": prompt + f" Answer {i}.", "rejected": prompt + " No."}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def user_error_of(cfg) -> UserError:
    """Build and fit `cfg`, which must fail with a UserError somewhere in the exception chain."""
    with pytest.raises(Exception) as info:
        fit(build(cfg))
    error = find_user_error(info.value)
    assert error is not None, f"no UserError behind {info.value!r}"
    assert "\n" not in str(error), "one message, on one line"
    return error


def assert_nothing_written(output_dir: Path) -> None:
    leftovers = [p for p in output_dir.rglob("*") if "ckpt" in p.name or "export" in p.name]
    assert not leftovers, f"a failed run left {leftovers}"


# ----------------------------------------------------------------------------- data files


@pytest.mark.parametrize("data", [JSONL, HH], ids=["jsonl", "hh_rlhf"])
def test_missing_data_file(tmp_path, data):
    missing = tmp_path / "nowhere" / "pairs.jsonl"
    error = user_error_of(compose_config("rm_tiny", tmp_path, [*data, f"data.path={missing}"]))
    assert isinstance(error, DataError)
    assert str(error) == f"data file not found: {missing}"
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    "data, bad_line, message",
    [
        (JSONL, '{"prompt": "q", chosen: " a", "rejected": " b"}', "not valid JSON"),
        # A line cut short (a partial write): the JSON error sits at the very end of the line.
        (JSONL, '{"prompt": "q", "chosen": " a", "rejected": ', "not valid JSON"),
        (JSONL, json.dumps({"prompt": "q", "chosen": " a"}), "record has no field 'rejected'"),
        (JSONL, json.dumps({"prompt": "q", "chosen": "  ", "rejected": " b"}), "chosen response is empty"),
        (HH, '{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: yo", rejected}', "not valid JSON"),
        (HH, '{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: yo", ', "not valid JSON"),
        (HH, json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: yo"}), "record has no field 'rejected'"),
        (
            HH,
            json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant:", "rejected": "\n\nHuman: hi\n\nAssistant: no"}),
            "chosen response is empty",
        ),
    ],
    ids=[
        "jsonl-malformed",
        "jsonl-truncated",
        "jsonl-missing-field",
        "jsonl-empty-response",
        "hh-malformed",
        "hh-truncated",
        "hh-missing-field",
        "hh-empty-response",
    ],
)
def test_bad_record_names_file_and_line(tmp_path, data, bad_line, message):
    row = pair if data is JSONL else hh_pair
    # The bad record is on line 4; line 3 is blank (blank lines hold no record but still count).
    lines = [json.dumps(row(0)), json.dumps(row(1)), "", bad_line, *(json.dumps(row(i)) for i in range(2, 10))]
    file = write_lines(tmp_path / "pairs.jsonl", lines)
    error = user_error_of(compose_config("rm_tiny", tmp_path, [*data, f"data.path={file}"]))
    assert isinstance(error, DataError)
    assert str(error).startswith(f"{file}:4: ") and message in str(error)
    assert_nothing_written(tmp_path)


def test_skip_invalid_drops_counts_and_reports_once_then_trains(tmp_path, caplog):
    lines = [json.dumps(pair(i)) for i in range(12)]
    lines.insert(2, json.dumps({"prompt": "q", "chosen": " a"}))  # line 3
    lines.insert(6, json.dumps({"prompt": "q", "chosen": " a", "rejected": ""}))  # line 7
    file = write_lines(tmp_path / "pairs.jsonl", lines)
    run = build(compose_config("rm_tiny", tmp_path, [*JSONL, f"data.path={file}", "data.skip_invalid=true"]))
    before = parameters_of(run.module.model)
    with caplog.at_level(logging.WARNING, logger="lit_rlhf"):
        fit(run)
    reports = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(reports) == 1, reports
    assert reports[0].startswith(f"skipped 2 of 14 records in {file}")
    assert "first at line 3: record has no field 'rejected'" in reports[0]
    datamodule = run.datamodule
    assert len(datamodule.train_items) + len(datamodule.val_items) == 12
    assert changed(before, run.module.model)


def test_over_long_sequences_are_truncated_counted_and_reported_once(tmp_path, caplog):
    long_answer = " " + " ".join(f"word{i} and then some more text {i * 7}" for i in range(40))
    rows = [pair(i) for i in range(10)]
    for i in (1, 4, 8):
        rows[i] = {**rows[i], "chosen": long_answer}
    file = write_lines(tmp_path / "pairs.jsonl", [json.dumps(row) for row in rows])
    run = build(compose_config("rm_tiny", tmp_path, [*JSONL, f"data.path={file}"]))
    with caplog.at_level(logging.WARNING, logger="lit_rlhf"):
        run.datamodule.setup("validate")
        run.datamodule.setup("fit")  # a second setup (validate, then fit) must not report again
    reports = [r.getMessage() for r in caplog.records if r.getMessage().startswith("truncated")]
    counts = {}
    for report in reports:
        match = re.match(r"truncated (\d+) of (\d+) (train|validation) preference completions to fit 64 tokens", report)
        assert match, report
        assert match[3] not in counts, f"{match[3]} reported twice"
        counts[match[3]] = (int(match[1]), int(match[2]))
    datamodule = run.datamodule
    assert sum(cut for cut, _ in counts.values()) == 3
    assert sum(total for _, total in counts.values()) == 2 * 10
    examples = [e for item in datamodule.train_items + datamodule.val_items for e in item.examples]
    assert all(len(e.ids) <= 64 for e in examples)
    assert sum(e.truncated for e in examples) == 3


# ----------------------------------------------------------------------------- models and configs


def test_missing_model_path(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    overrides = ["model=hf", f"model.name_or_path={missing}", "data=task_pairs"]
    error = user_error_of(compose_config("rm_tiny", tmp_path, overrides))
    assert isinstance(error, ConfigError)
    assert str(error) == f"model path does not exist: {missing}"
    assert_nothing_written(tmp_path)


def test_data_of_the_wrong_batch_type(tmp_path):
    error = user_error_of(compose_config("dpo", tmp_path, ["data=task_prompts"]))
    assert isinstance(error, ConfigError)
    assert "DPOModule trains on PreferenceBatches but the data config produces PPOBatches" in str(error)
    assert "data=" in str(error)
    assert_nothing_written(tmp_path)


# ----------------------------------------------------------------------------- the command line


def run_cli(tmp_path: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "lit_rlhf.train", *overrides, "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_unknown_choice_lists_the_options(tmp_path):
    result = run_cli(tmp_path, ["+experiment=rm_tiny", "regularizer/kl=bogus"])
    assert result.returncode != 0
    assert "Could not find 'regularizer/kl/bogus'" in result.stderr
    options = re.search(r"Available options in 'regularizer/kl':\n((?:\t.*\n)+)", result.stderr)
    assert options, result.stderr
    assert options[1].split() == ["in_loss", "in_reward", "in_score", "none"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("problem", ["missing file", "malformed line"])
@pytest.mark.slow
def test_cli_bad_data_prints_one_error_line(tmp_path, problem):
    file = tmp_path / "pairs.jsonl"
    if problem == "malformed line":
        write_lines(file, [json.dumps(pair(0)), "{not json", json.dumps(pair(1))])
        expected = f"error: {file}:2: not valid JSON"
    else:
        expected = f"error: data file not found: {file}"
    result = run_cli(tmp_path, ["+experiment=rm_tiny", "data=jsonl", f"data.path={file}"])
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), errors
    assert "Traceback" not in result.stderr
    assert_nothing_written(tmp_path / "run")


# ----------------------------------------------------------------------------- non-finite values

PPO_TEXT_REWARD = [
    "reward=function",
    "reward.fn=lit_rlhf.task.gold_reward.GoldReward",
    "data.batch_size=4",
    "data.val_batch_size=4",
    "module.sampling.max_new_tokens=8",
]


def nan_reward(prompts, responses, **columns) -> torch.Tensor:
    return torch.full((len(responses),), math.nan)


class NaNLoss:
    uses_margin = False

    def __call__(self, chosen, rejected, margin=None):
        return (chosen - rejected) * math.nan


def train_metrics(output_dir: Path) -> list[float]:
    return [value for row in read_metrics(output_dir) for name, value in row.items() if name.startswith("train/")]


def build_ppo_with_nan_reward(tmp_path, overrides=()):
    run = build(compose_config("ppo_kl", tmp_path, [*PPO_TEXT_REWARD, *overrides]))
    assert run.module.reward.names == ["function"]
    run.module.reward.components["function"].fn = nan_reward
    return run


def build_reward_model_with_nan_loss(tmp_path, overrides=()):
    run = build(compose_config("rm_tiny", tmp_path, ["data.batch_size=4", "data.val_batch_size=8", *overrides]))
    run.module.loss_fn = NaNLoss()
    return run


class NaNDPOLoss(SigmoidLoss):
    def __init__(self):
        super().__init__(beta=0.1, label_smoothing=0.0)

    def __call__(self, pairs):
        return (pairs.policy_chosen - pairs.policy_rejected) * math.nan


def build_dpo_with_nan_loss(tmp_path, overrides=()):
    overrides = ["data.batch_size=4", "data.val_batch_size=8", "module.val_sample_batches=0", *overrides]
    run = build(compose_config("dpo", tmp_path, overrides))
    run.module.loss_fn = NaNDPOLoss()
    return run


BUILDERS = {
    "ppo": (build_ppo_with_nan_reward, "policy", "reward or advantage"),
    "reward_model": (build_reward_model_with_nan_loss, "model", "reward-model loss"),
    "dpo": (build_dpo_with_nan_loss, "policy", "DPO loss"),
}


@pytest.mark.parametrize("stage", list(BUILDERS))
def test_nonfinite_stops_the_run_naming_the_step(tmp_path, stage):
    make, _, what = BUILDERS[stage]
    with pytest.raises(Exception) as info:
        fit(make(tmp_path))
    error = find_user_error(info.value)
    assert isinstance(error, NonFiniteError), repr(info.value)
    assert f"non-finite {what} at step 0" in str(error)
    assert "module.skip_nonfinite_updates=true" in str(error)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("stage", list(BUILDERS))
def test_nonfinite_updates_are_skipped_when_configured(tmp_path, stage, caplog):
    make, model_name, what = BUILDERS[stage]
    run = make(tmp_path, ["module.skip_nonfinite_updates=true"])
    model = getattr(run.module, model_name)
    before = parameters_of(model)
    with caplog.at_level(logging.WARNING, logger="lit_rlhf"):
        fit(run)
    assert not changed(before, model), "a skipped update must not touch the parameters"
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping the update")]
    assert len(skips) == 2 and all(what in message for message in skips), skips
    assert all(math.isfinite(value) for value in train_metrics(tmp_path))
