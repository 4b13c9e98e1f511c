"""Each regularizer and advantage choice changes the quantity it names, compared term by term on fixed inputs.

A grid that only checks "parameters changed" would pass with the choice ignored; these tests would not.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import FixedEngine, compose_config, generation_of
from hydra.utils import instantiate

import lit_rlhf.modules.ppo as ppo_module
from lit_rlhf.losses.ppo import clipped_policy_loss
from lit_rlhf.ops.forward import sequence_token_logprobs
from lit_rlhf.ops.generation import Generation
from lit_rlhf.ops.masking import masked_mean
from lit_rlhf.regularizers.kl.estimators import kl_k1, kl_k3
from lit_rlhf.train import build

ESTIMATORS = ("k1", "abs", "k2", "k3", "full")


def perturb(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Move the policy away from its reference, so that every KL estimate is non-zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def fixed_generation(module, batch, seed: int = 0) -> Generation:
    """Responses drawn once from a fixed generator (not the policy): identical for every module built."""
    repeats = module.advantage.samples_per_prompt
    prompt_ids = batch.input_ids.repeat_interleave(repeats, 0)
    prompt_mask = batch.attention_mask.repeat_interleave(repeats, 0)
    generator = torch.Generator().manual_seed(seed)
    vocab = module.tokenizer.vocab_size
    response_ids = torch.randint(4, vocab, (prompt_ids.shape[0], 12), generator=generator)
    response_ids[::3, 7] = module.tokenizer.eos_token_id  # some rows stop early
    return generation_of(prompt_ids, prompt_mask, response_ids, module.stop_token_ids)


def ppo_with(tmp_path, experiment: str, overrides: list[str] = ()):
    """A built run whose policy differs from its reference, and one batch of its training prompts."""
    run = build(compose_config(experiment, tmp_path, list(overrides)))
    perturb(run.module.policy)
    run.datamodule.setup("fit")
    batch = run.datamodule.on_before_batch_transfer(next(iter(run.datamodule.train_dataloader()))[0], 0)
    return run, batch


def plain_policy_loss(module, experience) -> torch.Tensor:
    """PPO-Clip alone on the experience, recomputed from the policy: what the actor loss adds terms to."""
    mask, start = experience.response_mask, experience.prompt_length - 1
    logprobs, _ = sequence_token_logprobs(module.policy, experience.sequences, experience.attention_mask, start)
    eps = module.trust_region.clip.eps_low
    return clipped_policy_loss(logprobs, experience.old_logprobs, experience.advantages, mask, eps)


def rollout(module, batch, monkeypatch):
    generation = fixed_generation(module, batch.prompts)
    monkeypatch.setattr(module, "engine", FixedEngine(lambda *args: generation))
    torch.manual_seed(0)
    return module.rollout(batch.prompts)


def test_kl_in_loss_adds_beta_times_the_mean_kl_to_the_policy_loss(tmp_path, monkeypatch):
    run, batch = ppo_with(tmp_path, "ppo_k3_loss", ["regularizer.kl.coef=0.3", "data.batch_size=4"])
    module = run.module
    experience, _, _, _ = rollout(module, batch, monkeypatch)
    loss, metrics = module.actor_loss(experience, None)

    mask, start = experience.response_mask, experience.prompt_length - 1
    logprobs, _ = sequence_token_logprobs(module.policy, experience.sequences, experience.attention_mask, start)
    mean_kl = masked_mean(kl_k3(logprobs.detach(), experience.ref_logprobs), mask)
    assert float(mean_kl) > 1e-3, "the perturbed policy must differ from the reference"
    torch.testing.assert_close(loss, plain_policy_loss(module, experience) + 0.3 * mean_kl, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(metrics["kl_loss"], mean_kl.detach())


def test_kl_in_reward_adds_nothing_to_the_policy_loss(tmp_path, monkeypatch):
    run, batch = ppo_with(tmp_path, "ppo_kl", ["data.batch_size=4"])
    module = run.module
    experience, _, _, _ = rollout(module, batch, monkeypatch)
    loss, metrics = module.actor_loss(experience, None)
    torch.testing.assert_close(loss, plain_policy_loss(module, experience))
    assert "kl_loss" not in metrics


def test_ptx_term_is_gamma_times_the_pretraining_nll(tmp_path, monkeypatch):
    run, batch = ppo_with(tmp_path, "ppo_ptx", ["regularizer.ptx.coef=0.7", "data.batch_size=4"])
    module = run.module
    assert batch.pretrain is not None
    experience, _, _, _ = rollout(module, batch, monkeypatch)
    with_ptx, metrics = module.actor_loss(experience, batch.pretrain)

    pretrain = batch.pretrain
    logits = module.policy(input_ids=pretrain.input_ids, attention_mask=pretrain.attention_mask).logits[:, :-1]
    # NLL by cross-entropy, independent of the project's log-prob code: mean over the real target tokens.
    token_nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), pretrain.input_ids[:, 1:], reduction="none"
    )  # (B, T-1)
    nll = token_nll[pretrain.loss_mask].mean()
    torch.testing.assert_close(metrics["ptx_nll"], nll.detach(), rtol=1e-5, atol=1e-5)

    torch.testing.assert_close(with_ptx, plain_policy_loss(module, experience) + 0.7 * nll, rtol=1e-5, atol=1e-5)


def test_each_kl_estimator_changes_train_kl(tmp_path, monkeypatch):
    measured = {}
    for name in ESTIMATORS:
        run, batch = ppo_with(tmp_path / name, "ppo_kl", [f"regularizer/kl/estimator={name}", "data.batch_size=4"])
        _, metrics, _, _ = rollout(run.module, batch, monkeypatch)
        measured[name] = float(metrics["kl"])
        if name == "k1":
            assert measured[name] == pytest.approx(float(metrics["kl_k1"]))
        if name == "k3":
            assert measured[name] == pytest.approx(float(metrics["kl_k3"]))
    for first, second in itertools.combinations(ESTIMATORS, 2):
        assert measured[first] != pytest.approx(measured[second], rel=1e-3), (first, second, measured)
    # The exact KL and the unbiased k3 are both non-negative; |x| bounds k1 from above.
    assert measured["full"] > 0 and measured["k3"] > 0 and measured["abs"] > measured["k1"]


def test_the_rollout_kl_is_the_configured_estimator_on_the_rollout_log_probs(tmp_path, monkeypatch):
    run, batch = ppo_with(tmp_path, "ppo_kl", ["regularizer/kl/estimator=k1", "data.batch_size=4"])
    experience, metrics, _, _ = rollout(run.module, batch, monkeypatch)
    per_sequence = torch.where(
        experience.response_mask, kl_k1(experience.old_logprobs, experience.ref_logprobs), 0.0
    ).sum(1)
    torch.testing.assert_close(metrics["kl"], per_sequence.mean())


@pytest.mark.parametrize("samples_per_prompt", [2])
def test_advantage_choices_give_different_advantages_on_the_same_rollout(tmp_path, samples_per_prompt):
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, 1:] = False
    token_rewards = torch.where(mask, torch.randn(4, 5, generator=generator), 0.0)
    values = torch.where(mask, torch.randn(4, 5, generator=generator), 0.0)
    advantages = {}
    for choice in ("gae", "reinforce", "rloo", "grpo"):
        overrides = [f"advantage={choice}"]
        if choice != "gae":
            overrides.append(f"advantage.samples_per_prompt={samples_per_prompt}")
        estimator = instantiate(compose_config("ppo_kl", tmp_path, overrides).advantage)
        advantages[choice], _ = estimator(token_rewards, values if choice == "gae" else None, mask)
    for first, second in itertools.combinations(advantages, 2):
        assert not torch.allclose(advantages[first], advantages[second]), (first, second)


def actor_gradient(module, experience) -> tuple[torch.Tensor, dict]:
    """The actor loss's gradient over all policy parameters, flattened, and the loss's metrics."""
    module.policy.zero_grad(set_to_none=True)
    loss, metrics = module.actor_loss(experience, None)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in module.policy.parameters() if p.grad is not None])
    module.policy.zero_grad(set_to_none=True)
    return grads, metrics


def test_kl_gradient_choices_keep_the_value_and_change_the_gradient(tmp_path, monkeypatch):
    """On-policy (first minibatch) ρ = 1: one KL value for all three. Per sample, ∇(ρ·k3) = (k3 + 1 - e^{-x})∇log π
    = x·∇log π = ∇k2, so importance_weighted equals straight_through there and both differ from naive;
    off-policy (the policy moved after its rollout) all three differ."""
    on_policy, off_policy, kl_values = {}, {}, {}
    for choice in ("naive", "straight_through", "importance_weighted"):
        overrides = [f"regularizer.kl.gradient={choice}", "regularizer.kl.coef=0.5", "data.batch_size=2"]
        run, batch = ppo_with(tmp_path / choice, "grpo", overrides)
        module = run.module
        experience, _, _, _ = rollout(module, batch, monkeypatch)
        on_policy[choice], metrics = actor_gradient(module, experience)
        kl_values[choice] = float(metrics["kl_loss"])
        if choice == "straight_through":
            # Its KL gradient is k2's: the actor gradient equals PPO-Clip's plus 0.5 · ∇ mean k2.
            mask, start = experience.response_mask, experience.prompt_length - 1
            logprobs, _ = sequence_token_logprobs(module.policy, experience.sequences, experience.attention_mask, start)
            k2 = 0.5 * (logprobs - experience.ref_logprobs).square()
            (plain_policy_loss(module, experience) + 0.5 * masked_mean(k2, mask)).backward()
            expected = torch.cat([p.grad.flatten() for p in module.policy.parameters() if p.grad is not None])
            module.policy.zero_grad(set_to_none=True)
            # fp32 sums in another order: compare as vectors.
            assert (on_policy[choice] - expected).norm() <= 1e-5 * expected.norm()
        perturb(module.policy, scale=0.05, seed=1)
        off_policy[choice], _ = actor_gradient(module, experience)
    assert kl_values["naive"] == pytest.approx(kl_values["straight_through"], rel=1e-6)
    assert kl_values["naive"] == pytest.approx(kl_values["importance_weighted"], rel=1e-5)

    def close(a, b):
        return bool((a - b).norm() <= 1e-4 * b.norm())

    assert close(on_policy["importance_weighted"], on_policy["straight_through"])
    assert not close(on_policy["naive"], on_policy["straight_through"])
    for first, second in itertools.combinations(off_policy, 2):
        assert not close(off_policy[first], off_policy[second]), (first, second)


def test_each_loss_aggregation_changes_the_actor_loss(tmp_path, monkeypatch):
    losses = {}
    for choice in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"):
        run, batch = ppo_with(tmp_path / choice, "grpo", [f"loss_aggregation={choice}", "data.batch_size=2"])
        experience, _, _, _ = rollout(run.module, batch, monkeypatch)
        assert len(set(experience.response_mask.sum(1).tolist())) > 1, "the test needs ragged responses"
        losses[choice], _ = run.module.actor_loss(experience, None)
        if choice == "token_mean":
            mask = experience.response_mask
            start = experience.prompt_length - 1
            logprobs, _ = sequence_token_logprobs(
                run.module.policy, experience.sequences, experience.attention_mask, start
            )
            kl = masked_mean(kl_k3(logprobs, experience.ref_logprobs), mask)
            expected = plain_policy_loss(run.module, experience) + run.module.kl.coef * kl
            torch.testing.assert_close(losses[choice], expected, rtol=1e-5, atol=1e-6)
    for first, second in itertools.combinations(losses, 2):
        assert not torch.isclose(losses[first], losses[second], rtol=1e-4), (first, second, losses)


TRUST_REGIONS = {
    "clip": ["trust_region=clip"],
    "clip_higher": ["trust_region=clip", "trust_region.clip.eps_high=0.28"],
    "dual_clip": ["trust_region=clip", "trust_region.clip.dual_clip=1.05"],
    "sequence_ratio": ["trust_region=clip", "trust_region.ratio=sequence"],
    "kl_penalty": ["trust_region=kl_penalty"],
    "clip_and_kl_penalty": ["trust_region=clip_and_kl_penalty"],
}


def test_each_trust_region_choice_changes_the_actor_loss(tmp_path, monkeypatch):
    """Off-policy (the policy moved after its rollout), where clips and the π_old penalty act."""
    losses = {}
    for name, overrides in TRUST_REGIONS.items():
        run, batch = ppo_with(tmp_path / name, "ppo_kl", [*overrides, "data.batch_size=4"])
        experience, _, _, _ = rollout(run.module, batch, monkeypatch)
        perturb(run.module.policy, scale=0.05, seed=1)
        losses[name], metrics = run.module.actor_loss(experience, None)
        if name == "clip_and_kl_penalty":
            coef = float(metrics["trust_region_kl_coef"])
            expected = losses["clip"] + coef * metrics["approx_kl"]
            torch.testing.assert_close(losses[name], expected, rtol=1e-5, atol=1e-6)
    for first, second in itertools.combinations(losses, 2):
        assert not torch.isclose(losses[first], losses[second], rtol=1e-5), (first, second, losses)


def test_ppo_penalty_adapts_its_coefficient_after_the_update(tmp_path, monkeypatch):
    run, batch = ppo_with(tmp_path, "ppo_penalty", ["data.batch_size=4", "trust_region.kl_penalty.target=1.0e-6"])
    module = run.module
    experience, _, _, _ = rollout(module, batch, monkeypatch)
    monkeypatch.setattr(module, "optimizers", lambda: module.configure_optimizers())
    monkeypatch.setattr(module, "manual_backward", lambda loss: loss.backward())
    monkeypatch.setattr(module, "clip_gradients", lambda *args, **kwargs: None)
    metrics = module.update(experience, None)
    # The update moved π away from π_old by far more than a 1e-6 target: β doubles from 1.0.
    assert float(metrics["trust_region_kl"]) > 1.5e-6
    assert module.trust_region.kl_penalty.value == 2.0


def test_score_shaping_changes_the_scores_the_update_sees(tmp_path, monkeypatch):
    scores = {}
    for name, overrides in {
        "none": [],
        "clip": ["module.reward_clip=0.5"],
        "normalize": ["module.normalize_rewards=true"],
    }.items():
        run, batch = ppo_with(tmp_path / name, "ppo_kl", [*overrides, "data.batch_size=8"])
        experience, _, _, _ = rollout(run.module, batch, monkeypatch)
        scores[name] = experience.scores
    raw = scores["none"]
    torch.testing.assert_close(scores["clip"], raw.clamp(-0.5, 0.5))
    assert not torch.equal(scores["clip"], raw)
    # The first batch is normalised by its own statistics.
    torch.testing.assert_close(scores["normalize"], (raw - raw.mean()) / (raw.std() + 1e-8), rtol=1e-5, atol=1e-6)


def test_kl_in_score_moves_the_penalty_to_the_last_token(tmp_path, monkeypatch):
    results = {}
    for placement in ("in_reward", "in_score"):
        run, batch = ppo_with(tmp_path / placement, "ppo_kl", [f"regularizer/kl={placement}", "data.batch_size=4"])
        results[placement] = rollout(run.module, batch, monkeypatch)
    (reward_exp, reward_metrics, _, _), (score_exp, score_metrics, _, _) = results["in_reward"], results["in_score"]
    # Same total reward per response (the penalty sums to the same β·Σ KL), different GAE advantages.
    torch.testing.assert_close(score_metrics["reward_total"], reward_metrics["reward_total"])
    assert not torch.allclose(score_exp.advantages, reward_exp.advantages)


def test_remax_baseline_is_the_greedy_response_score(tmp_path, monkeypatch):
    run, batch = ppo_with(tmp_path, "remax", ["data.batch_size=4"])
    module = run.module
    sampled = fixed_generation(module, batch.prompts, seed=0)
    greedy = fixed_generation(module, batch.prompts, seed=1)
    temperatures = []

    def fake_generate(prompt_ids, prompt_mask, sampling):
        temperatures.append(sampling.temperature)
        return greedy if sampling.temperature == 0 else sampled

    monkeypatch.setattr(module, "engine", FixedEngine(fake_generate))
    experience, metrics, prompts, _ = module.rollout(batch.prompts)
    assert sorted(temperatures) == [0.0, 1.0]
    greedy_texts = ppo_module.decode_responses(module.tokenizer, greedy)
    greedy_samples = module.completions(greedy, prompts, greedy_texts, {})
    greedy_scores = module.with_missing_eos_penalty(module.score(greedy_samples, update=False).total, greedy)
    per_token_kl = module.kl.measure(
        experience.old_logprobs, experience.ref_logprobs, experience.response_mask, None, None
    )
    returns = experience.scores - module.kl.coef * per_token_kl.sum(1)
    expected = returns - greedy_scores
    first_token = experience.advantages[:, 0]
    torch.testing.assert_close(first_token, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metrics["greedy_reward"], greedy_scores.mean())
