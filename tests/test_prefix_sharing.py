"""Prefix sharing: [prompt | chosen | rejected] in one row gives the padded rows' log-probs, rewards and losses.

Every equality here is checked against a layout that really shares (fewer slots than the padded rows): with
the feature switched off the layout assertions fail, and with a leaky mask (rejected tokens seeing the chosen
ones) the equalities fail (by hand once: summed log-probs off by 0.05 (sdpa) and 0.09 (eager) nats on a random Llama).
"""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from packing_cases import GROUPS, ragged_batch, random_model
from test_dpo_module import write_pairs
from transformers import AutoModelForCausalLM, MistralConfig

from lit_rlhf.errors import ConfigError
from lit_rlhf.modules.dpo import DPOModule
from lit_rlhf.modules.reward_model import packed_rewards_and_hidden
from lit_rlhf.ops.forward import last_token_rewards, position_ids_from_mask
from lit_rlhf.ops.packed_forward import check_takes_packed_rows
from lit_rlhf.ops.packing import attention_allowed, pack_layout, pack_values
from lit_rlhf.train import build, fit

TOLERANCE = dict(rtol=1e-5, atol=1e-5)
SMALL = ["data.batch_size=4", "data.val_batch_size=8", "module.val_sample_batches=0"]


def small_pairs(tmp_path) -> list[str]:
    """Overrides for a 16-pair JSONL of the embedded task: set up in a moment, unlike the whole task."""
    data = tmp_path / "pairs.jsonl"
    write_pairs(data, 16)
    return ["data=jsonl", f"data.path={data}", "data.max_length=64", "data.max_prompt_length=24"]


def shared_layout(batch, padding_free: bool = False):
    return pack_layout(batch.input_ids, batch.attention_mask, batch.response_mask, True, padding_free)


def slots(layout) -> int:
    rows, width = layout.shape
    return rows * width


def test_one_pair_by_hand():
    # Prompt p0 p1, chosen c0 c1, rejected r0 -> one row [p0 p1 c0 c1 r0].
    batch = ragged_batch([(2, [2, 1])])
    layout = shared_layout(batch)
    assert layout.shape == (1, 5)
    assert layout.place.tolist() == [[0, 1, 2, 3], [0, 1, 4, -1]]
    assert layout.branch.tolist() == [[0, 0, 1, 1, 2]]
    # r0 sees p0 p1 and itself, never c0 c1.
    assert attention_allowed(layout)[0, 0].int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1],
    ]
    # r0 continues from the prompt's end, as in its own padded row.
    positions = pack_values(position_ids_from_mask(batch.attention_mask), layout, 0)
    assert positions.tolist() == [[0, 1, 2, 3, 2]]
    assert pack_values(batch.input_ids, layout, -1)[0, 4] == batch.input_ids[1, 2]


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_logprobs_and_gradients_equal_the_padded_ones(kind, attention):
    model = random_model(kind, attention)
    batch = ragged_batch(GROUPS)
    layout = shared_layout(batch)
    assert layout.shape[0] == len(GROUPS) and slots(layout) < batch.input_ids.numel()

    def logps_and_grads(layout):
        model.zero_grad()
        logps, lengths = DPOModule.completion_logps(model, batch, layout)
        logps.sum().backward()
        return logps.detach(), lengths, [p.grad.clone() for p in model.parameters()]

    padded, padded_lengths, padded_grads = logps_and_grads(None)
    shared, shared_lengths, shared_grads = logps_and_grads(layout)
    torch.testing.assert_close(shared, padded, **TOLERANCE)
    assert torch.equal(shared_lengths, padded_lengths)
    for shared_grad, padded_grad in zip(shared_grads, padded_grads):
        torch.testing.assert_close(shared_grad, padded_grad, **TOLERANCE)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_rewards_equal_the_padded_ones(kind, attention):
    model = random_model(kind, attention, scalar_head=True)
    batch = ragged_batch(GROUPS)
    with torch.no_grad():
        padded = last_token_rewards(model, batch.input_ids, batch.attention_mask)
        shared, _ = packed_rewards_and_hidden(model, shared_layout(batch), batch.input_ids, batch.attention_mask)
    torch.testing.assert_close(shared, padded, **TOLERANCE)


def step_with_and_without(module, batch):
    """module.step(batch) with its packing options, then with both off."""
    with torch.no_grad():
        packed = module.step(batch)
        module.prefix_sharing = module.padding_free = False
        padded = module.step(batch)
    return packed, padded


def loss_of(choice: str, tmp_path):
    """The `loss/dpo=choice` object as the config builds it."""
    return instantiate(compose_config("dpo", tmp_path, [f"loss/dpo={choice}"]).loss.dpo)


def perturb_adapters(policy) -> None:
    """LoRA's B starts at 0 (a no-op): random B, so the adapters change the policy."""
    torch.manual_seed(0)
    for name, parameter in policy.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.02)


def assert_same_step(packed, padded, what: str) -> None:
    (packed_loss, packed_metrics), (padded_loss, padded_metrics) = packed, padded
    torch.testing.assert_close(packed_loss, padded_loss, **TOLERANCE, msg=what)
    assert packed_metrics.keys() == padded_metrics.keys()
    for name, value in padded_metrics.items():
        torch.testing.assert_close(packed_metrics[name], value, **TOLERANCE, msg=f"{what}: {name}")


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_dpo_step_on_the_tiny_assets_equals_the_padded_step(tmp_path, adapter):
    overrides = ["data.batch_size=8", "module.val_sample_batches=0", "regularizer/nll=chosen", f"adapter={adapter}"]
    run = build(compose_config("dpo", tmp_path, [*overrides, *small_pairs(tmp_path), "module.prefix_sharing=true"]))
    module = run.module.eval()
    perturb_adapters(module.policy)
    run.datamodule.setup()
    batch = next(iter(run.datamodule.train_dataloader()))  # 8 pairs of ragged lengths
    assert module.layout(batch).shape[0] <= len(batch.better_idx) < len(batch.input_ids)
    # The live reference (a copy, or the adapter-free policy) under sigmoid, then other members of the family.
    for choice in ["sigmoid", "ipo", "simpo", "bco_pair"] if adapter == "none" else ["sigmoid"]:
        if choice != "sigmoid":  # the run's own loss
            module.loss_fn = loss_of(choice, tmp_path / choice)
        module.prefix_sharing = True
        assert_same_step(*step_with_and_without(module, batch), choice)
    # Both options: the shared pairs packed several to a row (too alike in length for rows of the longest).
    module.prefix_sharing, module.padding_free, module.padding_free_row_length = True, True, 100
    assert module.layout(batch).shape[0] < len(batch.better_idx)
    assert_same_step(*step_with_and_without(module, batch), "shared and padding-free")


def test_reward_model_step_with_nll_on_the_tiny_assets_equals_the_padded_step(tmp_path):
    run = build(compose_config("rm_nll", tmp_path, [*SMALL[:2], *small_pairs(tmp_path), "module.prefix_sharing=true"]))
    module = run.module.eval()
    run.datamodule.setup()
    batch = next(iter(run.datamodule.val_dataloader()))
    # One row per prompt (consecutive records with the same prompt may share one row).
    assert module.layout(batch).shape[0] <= len(batch.group_prompts) < len(batch.input_ids)
    packed, padded = step_with_and_without(module, batch)
    for packed_value, padded_value in zip(packed[:3], padded[:3]):  # loss, chosen and rejected rewards
        torch.testing.assert_close(packed_value, padded_value, **TOLERANCE)
    assert packed[3].keys() == padded[3].keys() == {"nll"}
    for name, value in padded[3].items():  # rm_nll's NLL
        torch.testing.assert_close(packed[3][name], value, **TOLERANCE, msg=name)


def test_dpo_with_shared_prefixes_and_precomputed_reference_trains_end_to_end(tmp_path):
    overrides = [*SMALL, *small_pairs(tmp_path), "module.precompute_ref_logprobs=true", "module.prefix_sharing=true"]
    run = build(compose_config("dpo", tmp_path / "run", overrides))
    reference = instantiate(run.cfg.model.policy).eval()  # the SFT policy the run's reference copied
    before = {name: p.detach().clone() for name, p in run.module.policy.named_parameters()}
    fit(run)
    assert any(not torch.equal(before[name], p.detach()) for name, p in run.module.policy.named_parameters())
    assert torch.isfinite(torch.tensor(float(run.trainer.callback_metrics["train/loss"])))
    # The cache was written from shared rows; it holds the padded rows' reference log-probs.
    batch = next(iter(run.datamodule.val_dataloader()))
    with torch.no_grad():
        padded = DPOModule.completion_logps(reference, batch)[0]
    torch.testing.assert_close(run.module.reference_logps(batch, None), padded, **TOLERANCE)


def test_models_that_cannot_take_a_4d_mask_are_refused():
    model = random_model("llama", "sdpa")
    check_takes_packed_rows(model, "module.prefix_sharing")
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ConfigError, match=r"flash_attention_2.*module.prefix_sharing=false"):
        check_takes_packed_rows(model, "module.prefix_sharing")
    windowed = AutoModelForCausalLM.from_config(
        MistralConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            sliding_window=8,
        )
    )
    with pytest.raises(ConfigError, match="sliding-window"):
        check_takes_packed_rows(windowed, "module.padding_free")
