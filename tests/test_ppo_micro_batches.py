"""Micro-batches change memory, not results: a chunked rollout equals the whole one, and gradient
accumulation over micro-batches gives the weights of one step on the whole minibatch."""

from __future__ import annotations

import pytest
import torch
from conftest import FixedEngine, compose_config
from test_ignored_choices import fixed_generation, perturb, ppo_with

import lit_rlhf.modules.ppo as ppo_module
from lit_rlhf.errors import ConfigError
from lit_rlhf.train import build


def chunk_by_chunk(generation):
    """A `generate` that hands out consecutive rows of one fixed generation, call after call."""
    offset = 0

    def fake_generate(prompt_ids, *args):
        nonlocal offset
        rows = slice(offset, offset + prompt_ids.shape[0])
        offset += prompt_ids.shape[0]
        return generation.select(rows)

    return fake_generate


@pytest.mark.parametrize(
    ("experiment", "overrides"),
    [
        ("ppo_kl", ["regularizer/kl/estimator=full"]),
        ("grpo", ["module.normalize_rewards=true"]),
        ("distill", ["regularizer/distill/estimator=full"]),  # the teacher's forward pass, chunked
    ],
)
def test_a_chunked_rollout_equals_the_whole_one(tmp_path, monkeypatch, experiment, overrides):
    experiences = {}
    for chunk in (None, 3):
        run, batch = ppo_with(
            tmp_path / str(chunk),
            experiment,
            [*overrides, "data.batch_size=4", f"module.rollout_micro_batch_size={chunk or 'null'}"],
        )
        generation = fixed_generation(run.module, batch.prompts)
        monkeypatch.setattr(run.module, "engine", FixedEngine(chunk_by_chunk(generation)))
        experiences[chunk], _, _, _ = run.module.rollout(batch.prompts)
    whole, chunked = experiences[None], experiences[3]
    assert len(whole) in (4, 16) and len(whole) % 3 != 0, "chunks of 3 must not divide the batch"
    for field in ("old_logprobs", "ref_logprobs", "values", "advantages", "returns", "scores"):
        if getattr(whole, field) is None:
            assert getattr(chunked, field) is None
            continue
        torch.testing.assert_close(getattr(chunked, field), getattr(whole, field), rtol=1e-6, atol=1e-6)
    assert torch.equal(chunked.sequences, whole.sequences) and torch.equal(chunked.response_mask, whole.response_mask)


def plain_sgd(with_critic: bool) -> list[str]:
    models = ["actor", "critic"] if with_critic else ["actor"]
    optimizers = [f"module.{m}_optimizer.{key}" for m in models for key in ("_target_=torch.optim.SGD", "lr=0.5")]
    return [*optimizers, "module.max_grad_norm=1.0e6"]


def one_step(module, experience, pretrain, monkeypatch):
    """`module.update` outside a Trainer: its optimizers, plain backward and norm clipping."""
    optimizers = module.configure_optimizers()
    monkeypatch.setattr(module, "optimizers", lambda: optimizers)
    monkeypatch.setattr(module, "manual_backward", lambda loss: loss.backward())

    def clip(optimizer, gradient_clip_val, gradient_clip_algorithm):
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, gradient_clip_val)

    monkeypatch.setattr(module, "clip_gradients", clip)
    torch.manual_seed(0)
    return module.update(experience, pretrain)


@pytest.mark.parametrize(
    ("experiment", "overrides"),
    [
        ("ppo_kl", []),  # actor and critic, token_mean
        ("grpo", ["loss_aggregation=seq_mean_token_mean", "module.entropy_coef=0.05"]),
        ("ppo_ptx", ["loss_aggregation=seq_mean_token_sum_norm"]),
        ("gkd", ["loss_aggregation=seq_mean_token_mean"]),  # the JSD term's share of the minibatch
    ],
)
def test_accumulated_micro_batches_give_the_weights_of_one_whole_step(tmp_path, monkeypatch, experiment, overrides):
    """One PPO epoch of one minibatch is one optimizer step: with micro-batches of 3 rows it must match."""
    weights = {}
    for micro in (None, 3):
        # Plain SGD without clipping: Adam's first step is nearly sign(g), which would hide a scale error.
        sgd = plain_sgd(with_critic=experiment not in ("grpo", "gkd"))
        settings = [*overrides, *sgd, "data.batch_size=4", "module.ppo_epochs=1", "module.num_minibatches=1"]
        run, batch = ppo_with(
            tmp_path / str(micro), experiment, [*settings, f"module.train_micro_batch_size={micro or 'null'}"]
        )
        generation = fixed_generation(run.module, batch.prompts)
        monkeypatch.setattr(run.module, "engine", FixedEngine(lambda *args, fixed=generation: fixed))
        experience, _, _, _ = run.module.rollout(batch.prompts)
        # The policy moves off its rollout-time weights so the ratio, clip and KL all take part.
        perturb(run.module.policy, scale=0.02, seed=3)
        one_step(run.module, experience, batch.pretrain, monkeypatch)
        models = [run.module.policy] + ([run.module.critic] if run.module.critic is not None else [])
        weights[micro] = torch.cat([p.detach().flatten() for model in models for p in model.parameters()])
    changed = (weights[None] - weights[3]).abs().max()
    assert changed <= 1e-6, f"micro-batched update differs by {changed:.2e}"


def test_without_the_shares_micro_batches_would_differ(tmp_path, monkeypatch):
    """The invariance above needs the per-term shares: summing unweighted micro-batch means does not match."""
    run, batch = ppo_with(tmp_path, "grpo", ["data.batch_size=4", "loss_aggregation=seq_mean_token_mean"])
    generation = fixed_generation(run.module, batch.prompts)
    monkeypatch.setattr(run.module, "engine", FixedEngine(lambda *args: generation))
    experience, _, _, _ = run.module.rollout(batch.prompts)
    perturb(run.module.policy, scale=0.02, seed=3)
    whole, _ = run.module.actor_loss(experience, None)
    parts = [slice(0, 3), slice(3, 6), slice(6, len(experience))]
    index = torch.arange(len(experience))
    weighted = sum(run.module.actor_loss(experience.select(index[p]), None, experience.response_mask)[0] for p in parts)
    unweighted = sum(run.module.actor_loss(experience.select(index[p]), None)[0] for p in parts)
    torch.testing.assert_close(weighted, whole, rtol=1e-6, atol=1e-6)
    assert not torch.isclose(unweighted, whole, rtol=1e-3)


def test_a_bad_micro_batch_size_is_refused(tmp_path):
    # In the config, before anything is built (lit_rlhf.checks); and by the chunking itself.
    with pytest.raises(ConfigError, match=r"module.rollout_micro_batch_size must be an integer >= 1 or null, got 0"):
        build(compose_config("ppo_kl", tmp_path, ["module.rollout_micro_batch_size=0"]))
    with pytest.raises(ValueError, match="micro-batch size"):
        ppo_module.row_chunks(8, 0)


def test_chunks_of_different_response_widths_concatenate_with_padding():
    from conftest import generation_of

    from lit_rlhf.ops.generation import concatenate_generations

    prompt_ids, prompt_mask = torch.tensor([[0, 5], [6, 7]]), torch.tensor([[0, 1], [1, 1]])
    short = generation_of(prompt_ids[:1], prompt_mask[:1], torch.tensor([[8, 2]]), [2])  # stops at its 2nd token
    long = generation_of(prompt_ids[1:], prompt_mask[1:], torch.tensor([[9, 9, 9]]), [2])
    joined = concatenate_generations([short, long], pad_token_id=1)
    assert joined.sequences.tolist() == [[0, 5, 8, 2, 1], [6, 7, 9, 9, 9]]
    assert joined.attention_mask.tolist() == [[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert joined.response_mask.tolist() == [[True, True, False], [True, True, True]]
    assert joined.has_stop.tolist() == [True, False] and joined.prompt_length == 2
