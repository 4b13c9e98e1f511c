"""Each regularizer and advantage choice changes the quantity it names, compared term by term on fixed inputs.

A grid that only checks "parameters changed" would pass with the choice ignored; these tests would not.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import compose_config, generation_of
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
    monkeypatch.setattr(ppo_module, "generate", lambda *args, **kwargs: generation)
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
