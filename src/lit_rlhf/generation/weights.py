"""The policy's weights as a rollout engine loads them: checkpoint names, LoRA merged in."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

# peft's names inside an adapted layer: the frozen weight sits under `base_layer`, the adapters beside it.
_BASE_LAYER = ".base_layer."
_ADAPTER_PARTS = (".lora_", ".lora_magnitude_vector")


@torch.no_grad()
def base_model(policy: nn.Module) -> nn.Module:
    """The model inside a peft wrapper, else the policy itself."""
    from peft import PeftModel

    return cast(nn.Module, policy.get_base_model()) if isinstance(policy, PeftModel) else policy


def checkpoint_weights(policy: nn.Module) -> dict[str, torch.Tensor]:
    """{name: tensor} under the names of the model's HF checkpoint, detached.

    A peft-wrapped policy gives W + (alpha/r)·B·A for each adapted layer (what `merge_and_unload` writes),
    computed beside the model: merging in place and back would leave rounding errors in the frozen
    weights after every sync.
    """
    if not hasattr(policy, "get_base_model"):
        return {name: tensor.detach() for name, tensor in policy.state_dict().items()}
    from peft.tuners.lora import LoraLayer

    model = base_model(policy)
    weights = {
        name.replace(_BASE_LAYER, "."): tensor.detach()
        for name, tensor in model.state_dict().items()
        if not any(part in name for part in _ADAPTER_PARTS)
    }
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and not module.merged and not module.disable_adapters:
            merged = weights[f"{name}.weight"].clone()
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    # Each LoraLayer subclass (Linear, Embedding, ...) defines get_delta_weight; the base does not.
                    merged += cast(Any, module).get_delta_weight(adapter).to(merged.dtype)
            weights[f"{name}.weight"] = merged
    return weights
