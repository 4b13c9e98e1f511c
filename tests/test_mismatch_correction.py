"""The train/inference mismatch corrections (TIS, IcePop masking, their sequence-level forms) on hand-computed
ratios, and each `mismatch_correction` choice building its object."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lit_rlhf.config import CONFIG_DIR
from lit_rlhf.errors import ConfigError
from lit_rlhf.rl.mismatch import (
    NoCorrection,
    RatioBandMask,
    TruncatedImportanceSampling,
    logprob_gap_metrics,
    truncated_ratio,
)

# Ratios π_old/μ of 3 responses; row 1 and 2 have 2 tokens, the third position is padding.
RATIOS = torch.tensor([[4.0, 0.6, 1.0], [1.5, 1.5, 1.0], [1.2, 0.9, 1.0]])
MASK = torch.tensor([[True, True, True], [True, True, False], [True, True, False]])


def logprobs_with_ratios() -> tuple[torch.Tensor, torch.Tensor]:
    """Engine log-probs, and trainer log-probs = engine + log ratio; garbage on padding that must be ignored."""
    engine = torch.log(torch.tensor([[0.1, 0.5, 0.2], [0.3, 0.05, 0.7], [0.6, 0.4, 0.9]]))
    trainer = engine + torch.log(RATIOS)
    trainer = trainer.masked_fill(~MASK, 100.0)
    return trainer, engine


def test_token_tis_truncates_each_ratio_at_the_cap():
    trainer, engine = logprobs_with_ratios()
    weights, metrics = TruncatedImportanceSampling(cap=2.0, level="token")(trainer, engine, MASK)
    # min(r, 2): 4 -> 2, the others are below 2; padding 0.
    expected = torch.tensor([[2.0, 0.6, 1.0], [1.5, 1.5, 0.0], [1.2, 0.9, 0.0]])
    torch.testing.assert_close(weights, expected)
    assert float(metrics["rollout/truncated_fraction"]) == pytest.approx(1 / 7)  # one of 7 tokens above 2


def test_token_mask_drops_tokens_outside_the_band():
    trainer, engine = logprobs_with_ratios()
    weights, metrics = RatioBandMask(cap=2.0, level="token")(trainer, engine, MASK)
    # [1/2, 2]: only 4.0 is outside.
    expected = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    torch.testing.assert_close(weights, expected)
    assert float(metrics["rollout/masked_fraction"]) == pytest.approx(1 / 7)


def test_sequence_tis_truncates_the_product_of_the_token_ratios():
    trainer, engine = logprobs_with_ratios()
    weights, metrics = TruncatedImportanceSampling(cap=2.0, level="sequence")(trainer, engine, MASK)
    # Products: 4 * 0.6 * 1 = 2.4 -> 2; 1.5 * 1.5 = 2.25 -> 2; 1.2 * 0.9 = 1.08 stays.
    expected = torch.tensor([[2.0, 2.0, 2.0], [2.0, 2.0, 0.0], [1.08, 1.08, 0.0]])
    torch.testing.assert_close(weights, expected)
    assert float(metrics["rollout/truncated_fraction"]) == pytest.approx(5 / 7)  # rows 0 and 1: 5 tokens


def test_sequence_mask_drops_whole_responses_outside_the_band():
    trainer, engine = logprobs_with_ratios()
    weights, metrics = RatioBandMask(cap=2.0, level="sequence")(trainer, engine, MASK)
    expected = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # 2.4, 2.25 out; 1.08 in
    torch.testing.assert_close(weights, expected)
    assert float(metrics["rollout/masked_fraction"]) == pytest.approx(5 / 7)


def test_no_correction_has_no_weights_but_measures_the_gap():
    trainer, engine = logprobs_with_ratios()
    weights, metrics = NoCorrection()(trainer, engine, MASK)
    assert weights is None
    assert set(metrics) == {"rollout/logprob_diff/mean", "rollout/logprob_diff/max"}


def test_logprob_gap_is_the_mean_and_max_absolute_log_ratio_over_response_tokens():
    trainer, engine = logprobs_with_ratios()
    metrics = logprob_gap_metrics(trainer, engine, MASK)
    # |log r|: log 4, |log 0.6|, 0, log 1.5 twice, log 1.2, |log 0.9|; padding (trainer 100) ignored.
    gaps = [math.log(4), -math.log(0.6), 0.0, math.log(1.5), math.log(1.5), math.log(1.2), -math.log(0.9)]
    assert float(metrics["rollout/logprob_diff/mean"]) == pytest.approx(sum(gaps) / 7, rel=1e-5)
    assert float(metrics["rollout/logprob_diff/max"]) == pytest.approx(math.log(4), rel=1e-5)


def test_identical_log_probs_give_unit_weights_and_no_gap():
    _, engine = logprobs_with_ratios()
    for correction in (TruncatedImportanceSampling(2.0, "sequence"), RatioBandMask(2.0, "token")):
        weights, metrics = correction(engine, engine, MASK)
        torch.testing.assert_close(weights, MASK.float())
        assert float(metrics["rollout/logprob_diff/max"]) == 0.0


def test_a_long_response_cannot_overflow_the_sequence_ratio():
    # 2000 tokens at ratio e each: the product e^2000 overflows float32; the truncated weight is the cap.
    log_ratio = torch.full((1, 2000), 1.0)
    assert torch.isinf(torch.exp(log_ratio.sum()))
    mask = torch.ones(1, 2000, dtype=torch.bool)
    weights, _ = TruncatedImportanceSampling(2.0, "sequence")(log_ratio, torch.zeros(1, 2000), mask)
    assert torch.isfinite(weights).all() and float(weights.max()) == pytest.approx(2.0)
    torch.testing.assert_close(truncated_ratio(torch.tensor([-1.0, 5.0]), 2.0), torch.tensor([math.exp(-1), 2.0]))


@pytest.mark.parametrize("cls", [TruncatedImportanceSampling, RatioBandMask])
def test_bad_settings_are_one_clear_error(cls):
    with pytest.raises(ConfigError, match="cap > 1"):
        cls(cap=1.0, level="token")
    with pytest.raises(ConfigError, match="token, sequence"):
        cls(cap=2.0, level="response")


@pytest.mark.parametrize(
    "choice, cls, level",
    [
        ("none", NoCorrection, None),
        ("tis", TruncatedImportanceSampling, "token"),
        ("mask", RatioBandMask, "token"),
        ("sequence_tis", TruncatedImportanceSampling, "sequence"),
        ("sequence_mask", RatioBandMask, "sequence"),
    ],
)
def test_every_mismatch_correction_choice_builds_its_object(choice, cls, level):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"mismatch_correction={choice}"])
    correction = instantiate(cfg.mismatch_correction)
    assert type(correction) is cls
    assert getattr(correction, "level", None) == level
