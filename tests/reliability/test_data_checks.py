"""Validation before any work (numeric ranges, mandatory values, non-UTF-8 text, too few rows, suspect rows),
the content-keyed token cache, and the data seed: runs at different seeds validate on the same examples."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from conftest import CLI_FAST, cli, compose_config
from hydra.utils import instantiate
from reliability_tools import one_line

from lit_rlhf.checks import check_settings
from lit_rlhf.command import find_user_error
from lit_rlhf.errors import ConfigError, DataError
from lit_rlhf.train import build

JSONL = ["data=jsonl", "data.val_split=null", "data.val_fraction=0.25", "data.batch_size=4", "data.val_batch_size=4"]


def pairs_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def pair(i: int, rejected: str = " No.") -> dict:
    return {"prompt": f"Question {i}?", "chosen": f" Answer {i}.", "rejected": rejected}


def user_error(experiment: str, output: Path, overrides: list[str]):
    with pytest.raises(Exception) as refused:
        build(compose_config(experiment, output, overrides))
    error = find_user_error(refused.value)
    assert error is not None, refused.value
    assert "\n" not in str(error)
    return error


@pytest.mark.parametrize(
    "experiment, override, message",
    [
        ("rm_tiny", "module.optimizer.lr=0", "module.optimizer.lr must be a number > 0, got 0"),
        ("rm_tiny", "module.optimizer.lr=-1e-4", "module.optimizer.lr must be a number > 0, got -0.0001"),
        ("rm_tiny", "module.optimizer.lr=abc", "module.optimizer.lr must be a number > 0, got 'abc'"),
        ("ppo_kl", "module.sampling.max_new_tokens=0", "module.sampling.max_new_tokens must be an integer >= 1, got 0"),
        ("ppo_kl", "module.actor_optimizer.lr=0", "module.actor_optimizer.lr must be a number > 0, got 0"),
        ("rm_tiny", "data.val_fraction=1.5", "data.val_fraction must be a number in (0, 1), got 1.5"),
        ("rm_tiny", "data.batch_size=2.5", "data.batch_size must be an integer >= 1, got 2.5"),
        ("ppo_kl", "module.sampling.top_p=0", "module.sampling.top_p must be a number in (0, 1], got 0"),
        ("dpo", "loss.dpo.beta=0", "loss.dpo.beta must be a number > 0, got 0"),
    ],
)
def test_a_numeric_setting_out_of_range_names_key_range_and_value(tmp_path, experiment, override, message):
    with pytest.raises(ConfigError) as refused:
        check_settings(compose_config(experiment, tmp_path, [override]))
    assert str(refused.value) == message


def test_the_shipped_experiments_pass_the_range_checks(tmp_path):
    from lit_rlhf.config import CONFIG_DIR

    for experiment in sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")):
        check_settings(compose_config(experiment, tmp_path))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["model=hf", "data=task_pairs"],
            "model.name_or_path is not set; set it on the command line with model.name_or_path=<value>",
        ),
        (["data=jsonl"], "data.path is not set; set it on the command line with data.path=<value>"),
    ],
)
def test_a_missing_mandatory_value_names_the_key_and_its_override(tmp_path, overrides, expected):
    assert str(user_error("rm_tiny", tmp_path, overrides)) == expected


@pytest.mark.slow
def test_on_the_command_line_a_missing_value_names_the_group_choice_too(tmp_path):
    result = cli(["+experiment=rm_tiny", *CLI_FAST, "data=jsonl"], cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result.stderr, "error:")
    assert (
        line == "error: data.path is not set (data=jsonl needs it); set it on the command line with data.path=<value>"
    )


def test_text_that_is_not_utf8_names_file_line_and_byte(tmp_path):
    lines = [json.dumps(pair(i)).encode() for i in range(12)]
    lines[5] = b'{"prompt": "Caf\xe9?", "chosen": " yes", "rejected": " no"}'
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    error = user_error("rm_tiny", tmp_path / "run", [*JSONL, f"data.path={data}"])
    assert isinstance(error, DataError)
    assert str(error) == f"{data}:6: not UTF-8 text (byte 0xe9 at byte 16 of the line); save the file as UTF-8"


def test_too_few_rows_explain_the_split(tmp_path):
    data = pairs_file(tmp_path / "one.jsonl", [pair(0)])
    error = user_error("rm_tiny", tmp_path / "run", [*JSONL, f"data.path={data}"])
    assert str(error).startswith("the 'train' split has 1 record(s): holding out data.val_fraction=0.25 of them")
    assert "leaves none for training" in str(error)


def naive_suspect_counts(datamodule) -> tuple[int, int]:
    """Counted again by hand from the items: identical pairs in training, validation rows seen in training."""
    train = [(item.prompt, item.responses) for item in datamodule.train_items]
    val = [(item.prompt, item.responses) for item in datamodule.val_items]
    return sum(responses[0] == responses[1] for _, responses in train), sum(row in set(train) for row in val)


def test_identical_pairs_and_split_duplicates_are_counted_and_warned_or_refused(tmp_path, caplog):
    rows = [pair(i) for i in range(16)] + [pair(i) for i in range(8)]  # 8 rows twice
    rows[3] = pair(3, rejected=" Answer 3.")  # chosen == rejected
    rows[20] = pair(20, rejected=" Answer 20.")
    data = pairs_file(tmp_path / "pairs.jsonl", rows)
    overrides = [*JSONL, f"data.path={data}", "logger=csv"]
    with caplog.at_level(logging.WARNING, logger="lit_rlhf"):
        run = build(compose_config("rm_tiny", tmp_path / "run", overrides))
    identical, duplicated = naive_suspect_counts(run.datamodule)
    assert identical >= 1 and duplicated >= 1, "the hold-out put no duplicate across the split: change the rows"
    counts = run.datamodule.suspect_rows
    assert counts["training rows whose completions are identical"] == identical
    assert counts["validation rows also in the training split"] == duplicated
    [warning] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("suspect data")]
    assert f"{identical} training rows whose completions are identical" in warning
    assert f"{duplicated} validation rows also in the training split" in warning

    error = user_error("rm_tiny", tmp_path / "refused", [*overrides, "refuse_suspect_rows=true"])
    assert isinstance(error, DataError) and str(error).startswith("suspect data: ")


def test_a_rewrite_with_the_same_size_and_time_tokenizes_afresh(tmp_path, monkeypatch):
    data = pairs_file(tmp_path / "pairs.jsonl", [pair(i) for i in range(20)])
    cfg = compose_config("rm_tiny", tmp_path, [*JSONL, f"data.path={data}", f"data.cache_dir={tmp_path / 'cache'}"])
    tokenizer = instantiate(cfg.model.tokenizer)
    first = instantiate(cfg.data, tokenizer=tokenizer)
    first.setup("fit")
    stat = data.stat()
    # Same length (one digit for another), same modification time: only the bytes differ.
    data.write_text(data.read_text().replace("Answer 1.", "Answer 7."))
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (data.stat().st_size, data.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    second = instantiate(cfg.data, tokenizer=tokenizer)
    second.setup("fit")
    responses = {item.responses[0] for item in [*second.train_items, *second.val_items]}
    assert " Answer 7." in responses and " Answer 1." not in responses, "stale rows served from the cache"


@pytest.mark.parametrize("experiment", ["ppo_kl", "rm_tiny"])
def test_two_seeds_validate_on_identical_examples_and_the_data_seed_changes_them(tmp_path, experiment):
    """The embedded task's prompts (PPO) and a held-out split of a JSONL file (reward model)."""
    extra = []
    if experiment == "rm_tiny":
        extra = [*JSONL, f"data.path={pairs_file(tmp_path / 'pairs.jsonl', [pair(i) for i in range(40)])}"]

    def setup(*overrides):
        cfg = compose_config(experiment, tmp_path, [*extra, *overrides])
        datamodule = instantiate(cfg.data, tokenizer=instantiate(cfg.model.tokenizer))
        datamodule.setup("fit")
        return datamodule

    seed0, seed1, other_data = setup("seed=0"), setup("seed=1"), setup("seed=0", "data_seed=1")
    validation = [item.prompt for item in seed0.val_items]
    assert [item.prompt for item in seed1.val_items] == validation
    assert [item.prompt for item in other_data.val_items] != validation
    # The seed still shuffles the training order.
    assert first_training_prompts(seed0) != first_training_prompts(seed1)


def first_training_prompts(datamodule) -> list[str]:
    batch = next(iter(datamodule.train_dataloader()))
    if isinstance(batch, tuple):  # PPO's combined loader: (batches by loader, batch index, loader index)
        batch = batch[0]["prompts"]
    return list(batch.prompts)
