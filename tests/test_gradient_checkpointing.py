"""model.gradient_checkpointing=true recomputes every layer in the backward pass and gives the same gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from test_lora import _one_thread  # noqa: F401  (autouse)

from lit_rlhf.ops.forward import scalar_head_outputs, sequence_token_logprobs
from lit_rlhf.train import build, fit

IDS = torch.randint(4, 400, (3, 12), generator=torch.Generator().manual_seed(0))
MASK = torch.ones_like(IDS)


def policy_loss(model) -> torch.Tensor:
    return -sequence_token_logprobs(model, IDS, MASK)[0].mean()


def head_loss(model) -> torch.Tensor:
    return scalar_head_outputs(model, IDS, MASK).pow(2).mean()


def gradients_and_layer_calls(node, loss_fn) -> tuple[dict[str, torch.Tensor], int]:
    """Gradients of `loss_fn(model)` for the model `node` builds, and how often its decoder layers ran."""
    torch.manual_seed(0)  # LoRA's A matrices are random: the same draw in both builds
    model = instantiate(node)
    calls = []
    for layer in model.get_decoder().layers if hasattr(model, "get_decoder") else model.base_model.layers:
        # On the MLP: transformers checkpoints a layer's `forward`, so hooks on the layer itself never rerun.
        layer.mlp.register_forward_pre_hook(lambda *args: calls.append(1))
    loss_fn(model).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    return grads, len(calls)


@pytest.mark.parametrize("adapter", ["none", "lora"])
@pytest.mark.parametrize("which", ["policy", "reward_init", "critic"])
def test_checkpointed_gradients_equal_plain_ones(tmp_path, which, adapter):
    loss_fn = policy_loss if which == "policy" else head_loss
    results = {}
    for checkpointing in (False, True):
        overrides = [f"adapter={adapter}", f"model.gradient_checkpointing={checkpointing}"]
        cfg = compose_config("ppo_kl", tmp_path, overrides)
        results[checkpointing] = gradients_and_layer_calls(cfg.model[which], loss_fn)
    (plain, plain_calls), (checkpointed, checkpointed_calls) = results[False], results[True]
    # Each layer runs once forward and once more when the backward pass recomputes it.
    assert checkpointed_calls == 2 * plain_calls, (plain_calls, checkpointed_calls)
    assert plain.keys() == checkpointed.keys() and plain
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_ppo_trains_with_checkpointing(tmp_path):
    overrides = ["model.gradient_checkpointing=true", "data.batch_size=4", "data.val_batch_size=8"]
    run = build(compose_config("ppo_kl", tmp_path, [*overrides, "module.sampling.max_new_tokens=8"]))
    assert run.module.policy.is_gradient_checkpointing and run.module.critic.is_gradient_checkpointing
    fit(run)
