"""PPOModule pieces on controlled rollouts: masking after EOS, where the score lands, the reward's KL term."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FixedEngine, compose_config, generation_of

from lit_rlhf.data.batches import PromptBatch
from lit_rlhf.ops.forward import last_token_rewards, sequence_logprobs
from lit_rlhf.ops.generation import Generation
from lit_rlhf.ops.masking import masked_sum
from lit_rlhf.regularizers.kl.estimators import kl_k1
from lit_rlhf.rl.mismatch import NoCorrection, RatioBandMask, TruncatedImportanceSampling
from lit_rlhf.train import build


@pytest.fixture(scope="module")
def ppo(tmp_path_factory):
    return build(compose_config("ppo_kl", tmp_path_factory.mktemp("ppo"), ["module.missing_eos_penalty=1.5"])).module


def controlled_generation(module, prompt_ids, prompt_mask, responses: list[list[int]], filler: int) -> Generation:
    """A Generation whose response tokens we choose; `filler` fills every position after a row's EOS."""
    width = max(len(r) for r in responses)
    response_ids = torch.full((len(responses), width), filler, dtype=torch.long)
    for row, tokens in enumerate(responses):
        response_ids[row, : len(tokens)] = torch.tensor(tokens)
    return generation_of(prompt_ids, prompt_mask, response_ids, module.stop_token_ids)


def rollout_with(module, monkeypatch, batch: PromptBatch, responses, filler, engine_logprobs=None):
    def sample(ids, mask, *args):
        return controlled_generation(module, ids, mask, responses, filler)

    monkeypatch.setattr(module, "engine", FixedEngine(sample, engine_logprobs))
    torch.manual_seed(0)
    return module.rollout(batch)


def prompt_batch(tokenizer) -> PromptBatch:
    prompts = [
        "review of the lost key, about the music:",
        "review of moon harbor, about the plot:",
        "review of x, about the cast:",
    ]
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((3, width), tokenizer.pad_token_id)
    mask = torch.zeros((3, width), dtype=torch.long)
    for i, r in enumerate(rows):  # left padding, as the datamodule does
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return PromptBatch(ids, mask, prompts)


def test_tokens_after_eos_never_reach_rewards_advantages_or_losses(ppo, monkeypatch):
    tok = ppo.tokenizer
    eos = tok.eos_token_id
    words = tok(" the music was great.")["input_ids"]
    # Row 0 stops mid-way, row 1 stops at once, row 2 never stops (max length, no EOS).
    responses = [[*words[:3], eos], [eos], words + words[:2]]
    batch = prompt_batch(tok)
    first, metrics_a, _, texts_a = rollout_with(ppo, monkeypatch, batch, responses, filler=tok.pad_token_id)
    second, metrics_b, _, texts_b = rollout_with(ppo, monkeypatch, batch, responses, filler=words[2])
    assert texts_a == texts_b
    mask = first.response_mask
    assert mask.sum(1).tolist() == [4, 1, len(words) + 2]
    for name in ("old_logprobs", "ref_logprobs", "values", "advantages", "returns"):
        a, b = getattr(first, name), getattr(second, name)
        torch.testing.assert_close(a[mask], b[mask], msg=f"{name} depends on tokens after EOS")
    torch.testing.assert_close(first.scores, second.scores)
    for name in metrics_a:
        torch.testing.assert_close(metrics_a[name], metrics_b[name], msg=f"metric {name} depends on tokens after EOS")
    loss_a, _ = ppo.actor_loss(first, None)
    loss_b, _ = ppo.actor_loss(second, None)
    torch.testing.assert_close(loss_a, loss_b)
    torch.testing.assert_close(ppo.critic_loss(first)[0], ppo.critic_loss(second)[0])


def test_score_is_read_at_the_last_real_token_with_the_missing_eos_penalty(ppo, monkeypatch):
    tok = ppo.tokenizer
    eos = tok.eos_token_id
    words = tok(" it was good.")["input_ids"]
    responses = [[*words, eos], words]
    batch = prompt_batch(tok)
    batch = PromptBatch(batch.input_ids[:2], batch.attention_mask[:2], batch.prompts[:2])
    experience, metrics, _, _ = rollout_with(ppo, monkeypatch, batch, responses, filler=tok.pad_token_id)
    for row, has_eos in enumerate([True, False]):
        # Score the row alone, with no padding at all.
        real = experience.attention_mask[row].bool()
        ids = experience.sequences[row][real].unsqueeze(0)
        alone = last_token_rewards(ppo.reward.components["model"].model, ids, torch.ones_like(ids))
        penalty = 0.0 if has_eos else 1.5
        torch.testing.assert_close(experience.scores[row], alone[0] - penalty, rtol=1e-4, atol=1e-4)
    # reward_total = score - beta * sum_t KL_t (k1, in the reward).
    kl = masked_sum(kl_k1(experience.old_logprobs, experience.ref_logprobs), experience.response_mask, dim=1)
    expected_total = (experience.scores - ppo.kl.coef * kl).mean()
    torch.testing.assert_close(metrics["reward_total"], expected_total, rtol=1e-5, atol=1e-5)
    assert metrics["eos_fraction"] == pytest.approx(0.5)


def test_reference_and_policy_agree_before_training(ppo, monkeypatch):
    """At step 0 the reference is a copy of the policy: every KL estimate is exactly zero."""
    tok = ppo.tokenizer
    responses = [tok(" the plot was dull.")["input_ids"] + [tok.eos_token_id]] * 3
    experience, metrics, _, _ = rollout_with(ppo, monkeypatch, prompt_batch(tok), responses, filler=tok.pad_token_id)
    assert float(metrics["kl_k1"]) == 0.0 and float(metrics["kl_k3"]) == 0.0
    torch.testing.assert_close(experience.old_logprobs, experience.ref_logprobs)


CORRECTIONS = {
    "none": (NoCorrection(), lambda ratio: torch.ones_like(ratio)),
    "tis": (TruncatedImportanceSampling(cap=2.0, level="token"), lambda ratio: ratio.clamp(max=2.0)),
    "mask": (RatioBandMask(cap=2.0, level="token"), lambda ratio: ((ratio >= 0.5) & (ratio <= 2.0)).float()),
}


@pytest.mark.parametrize("name", sorted(CORRECTIONS))
def test_the_mismatch_correction_weighs_each_tokens_policy_loss(ppo, monkeypatch, name):
    """The engine's log-probs μ only weigh the policy loss; π_old (the trainer's) stays the ratio's denominator.

    Right after the rollout π_θ = π_old: every ratio is 1, nothing is clipped, and the token-mean policy loss
    is -Σ_t w_t·A_t / N over the N response tokens, w_t = min(π_old/μ, 2) for tis, 1[π_old/μ ∈ [1/2, 2]] for
    mask, 1 for none. The engine here is off by a factor 3 on odd positions (μ = π_old/3, or 3·π_old on the
    third row), so some tokens are truncated or masked.
    """
    correction, weight_of = CORRECTIONS[name]
    monkeypatch.setattr(ppo, "mismatch_correction", correction)
    tok = ppo.tokenizer
    responses = [
        tok(" the plot was dull.")["input_ids"] + [tok.eos_token_id],
        tok(" great")["input_ids"] + [tok.eos_token_id],
        tok(" the music was loud and long")["input_ids"],
    ]
    trainer_logprobs = {}

    def engine_logprobs(generation):
        # The trainer's own log-probs of the tokens, shifted by log 3 on odd positions.
        start = generation.prompt_length - 1
        logprobs, _ = sequence_logprobs(ppo.policy, generation.sequences, generation.attention_mask, start)
        trainer_logprobs["value"] = logprobs
        shift = torch.zeros_like(logprobs)
        shift[:, 1::2] = math.log(3.0)
        shift[2] *= -1.0
        return (logprobs - shift).masked_fill(~generation.response_mask, 0.0)

    experience, metrics, _, _ = rollout_with(
        ppo, monkeypatch, prompt_batch(tok), responses, tok.pad_token_id, engine_logprobs
    )
    mask = experience.response_mask
    torch.testing.assert_close(experience.old_logprobs[mask], trainer_logprobs["value"][mask])
    ratio = torch.exp(experience.old_logprobs - experience.engine_logprobs)  # 3 on odd positions (1/3 on row 2)
    weights = weight_of(ratio).masked_fill(~mask, 0.0)
    if name != "none":
        torch.testing.assert_close(experience.mismatch_weights, weights, rtol=1e-5, atol=1e-5)
        assert not torch.equal(weights[mask], torch.ones(int(mask.sum()))), "some tokens must be corrected"
    else:
        assert experience.mismatch_weights is None
    _, loss_metrics = ppo.actor_loss(experience, None)
    expected = -(weights * experience.advantages).sum() / mask.sum()
    torch.testing.assert_close(loss_metrics["policy_loss"], expected, rtol=1e-5, atol=1e-6)
    # The gap, on every token: log 3 on odd positions, 0 on even ones.
    assert float(metrics["rollout/logprob_diff/max"]) == pytest.approx(math.log(3.0), abs=1e-5)
