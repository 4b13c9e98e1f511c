"""`+experiment=bon_frontier`: best-of-n on the shipped SFT policy and reward model, seeded, to bon.csv."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import CLI_FAST, cli, compose_config, read_metrics
from hydra.utils import instantiate

from lit_rlhf.errors import ConfigError
from lit_rlhf.overoptimization.bon import bon_kl, evaluate

SMALL = ["evaluate.ns=[1,2,4]", "evaluate.samples_per_pass=2", "evaluate.num_prompts=3"]


def test_bon_frontier_writes_bon_csv_and_logs_each_n(tmp_path):
    cfg = compose_config("bon_frontier", tmp_path, SMALL)
    evaluate(cfg)
    with open(tmp_path / "bon.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["n", "kl", "proxy", "gold"]
    assert [int(r["n"]) for r in rows] == [1, 2, 4]
    assert [float(r["kl"]) for r in rows] == pytest.approx([bon_kl(n) for n in (1, 2, 4)], abs=1e-6)
    proxies = [float(r["proxy"]) for r in rows]
    assert proxies == sorted(proxies), "the expected best-of-n proxy reward cannot fall as n grows"
    logged = [row for row in read_metrics(tmp_path) if "bon/gold_reward" in row]
    assert [row["step"] for row in logged] == [1, 2, 4]
    assert [row["bon/reward"] for row in logged] == pytest.approx(proxies, abs=1e-5)


def test_bon_sampling_is_seeded(tmp_path):
    cfg = compose_config("bon_frontier", tmp_path, SMALL)
    tokenizer = instantiate(cfg.model.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    evaluator = instantiate(cfg.evaluate)
    first = evaluator.sample_rewards(tokenizer, datamodule, datamodule.gold_reward)
    again = evaluator.sample_rewards(tokenizer, datamodule, datamodule.gold_reward)
    assert first[0].shape == (3, 4)
    torch.testing.assert_close(first, again)
    assert first[0].std(1).min() > 0, "the samples of a prompt must differ"


def test_bon_frontier_on_data_without_a_gold_reward_stops_with_one_clear_error(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "Review of Film {i}:"}}\n' for i in range(8)))
    cfg = compose_config("bon_frontier", tmp_path, [*SMALL, "data=prompts", f"data.path={prompts}"])
    with pytest.raises(ConfigError, match=r"set one with gold_reward=function gold_reward\.fn="):
        evaluate(cfg)


def gold_of_length(prompts, completions, **columns):
    """A stand-in "true" reward for a user's data."""
    return [float(len(completion)) for completion in completions]


def test_bon_frontier_on_a_users_data_takes_a_gold_reward_function(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "Review of Film {i}, the music:"}}\n' for i in range(8)))
    overrides = [*SMALL, "data=prompts", f"data.path={prompts}", "gold_reward=function"]
    cfg = compose_config("bon_frontier", tmp_path, [*overrides, "gold_reward.fn=test_bon.gold_of_length"])
    metrics = evaluate(cfg)
    assert metrics["bon/gold_reward"] > 0  # the mean completion length of the proxy's picks


@pytest.mark.slow
def test_bon_frontier_from_the_command_line(tmp_path):
    result = cli(["+experiment=bon_frontier", *CLI_FAST, *SMALL], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (bon_csv,) = tmp_path.glob("outputs/bon_frontier/runs/*/bon.csv")
    assert len(bon_csv.read_text().splitlines()) == 4  # header + n = 1, 2, 4
    assert not list(tmp_path.glob("outputs/bon_frontier/runs/*/checkpoints")), "nothing is trained"
