"""Evaluation metrics against brute force, and `evaluate` / `generate` on the shipped tiny models."""

from __future__ import annotations

import itertools
import json

import pytest
from conftest import compose_named

from lit_rlhf.evaluation.metrics import maj_at_k, majority_answer, pass_at_k, win_rate


@pytest.mark.parametrize("n, correct", [(1, 0), (1, 1), (4, 0), (4, 1), (5, 2), (6, 3), (6, 6)])
def test_pass_at_k_equals_the_share_of_k_subsets_holding_a_right_sample(n, correct):
    samples = [True] * correct + [False] * (n - correct)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(samples, k))
        brute = sum(any(subset) for subset in subsets) / len(subsets)
        assert pass_at_k(n, correct, k) == pytest.approx(brute)


def test_pass_at_1_is_the_share_of_right_samples_and_bad_k_is_refused():
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_vote_counts_answers_and_breaks_ties_by_first_seen():
    assert majority_answer(["7", "8", "8", None]) == 1
    assert majority_answer(["7", "8", "8", "7"]) == 0  # a tie: the answer seen first
    assert majority_answer([None, None]) is None
    # maj@k judges the majority of the first k only: ["7" wrong, "8" right, "8" right, "7" wrong].
    correct = [0.0, 1.0, 1.0, 0.0]
    assert maj_at_k(["7", "8", "8", "7"], correct, k=1) == 0.0
    assert maj_at_k(["7", "8", "8", "7"], correct, k=3) == 1.0
    assert maj_at_k([None, None, "8", "7"], correct, k=2) == 0.0  # no answer to vote for: wrong


def test_win_rate_counts_ties_as_half():
    # win, tie, loss, win -> (1 + 0.5 + 0 + 1) / 4
    assert win_rate([2.0, 1.0, 0.0, 5.0], [1.0, 1.0, 3.0, -1.0]) == pytest.approx(0.625)
    with pytest.raises(ValueError):
        win_rate([1.0], [])


def test_evaluate_measures_the_shipped_policy_against_itself(tmp_path):
    """The SFT policy against itself as the reference: KL 0 and every pair a tie (win rate 0.5), and the
    reward, gold reward and samples written to the run folder."""
    from lit_rlhf.config import asset_path
    from lit_rlhf.evaluate import evaluate

    cfg = compose_named(
        "evaluate",
        tmp_path,
        ["num_prompts=6", "samples_per_prompt=2", "ks=[1,2]", f"reference.name_or_path={asset_path('tiny-sft')}"],
    )
    metrics = evaluate(cfg).metrics
    assert metrics["eval/prompts"] == 6 and metrics["eval/samples"] == 12
    assert metrics["eval/kl_k1"] == pytest.approx(0.0, abs=1e-5) and metrics["eval/kl"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["eval/win_rate"] == 0.5
    assert {"eval/reward", "eval/reward/model", "eval/gold_reward", "eval/response_length"} <= set(metrics)
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 12 and {"prompt", "completion", "reward", "reward/model", "gold_reward"} <= set(samples[0])
