"""What of a trained model trains: every parameter (`adapter=none`), or LoRA adapters (`adapter=lora`).

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", through `peft`.
A scalar-head model (reward model, critic) keeps its head trainable in full: the
head is new or small, and a low-rank update of a (H, 1) matrix would be pointless.

Loaders (`lit_rlhf.models.loading`) apply the adapter to every model a stage trains;
frozen models (the reward source) get none.
"""

from __future__ import annotations

import copy
from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedModel

# The scalar head of AutoModelForSequenceClassification decoders (Llama, Qwen, Mistral, GPT-2, ...).
SCALAR_HEAD = "score"


class FullFineTuning:
    """`adapter=none`: the model trains as it is."""

    def causal_lm(self, model: PreTrainedModel) -> PreTrainedModel:
        return model

    def scalar_head(self, model: PreTrainedModel) -> PreTrainedModel:
        return model


class LoRA:
    """`adapter=lora`: low-rank adapters on `target_modules`; the base weights stay frozen.

    Args:
        r: rank of each update.
        alpha: scale numerator (the update is alpha / r · B A).
        dropout: dropout on the adapters' input.
        target_modules: names of the linear layers that get adapters (e.g. q_proj, v_proj).
    """

    def __init__(self, r: int, alpha: float, dropout: float, target_modules: list[str]):
        self.r, self.alpha, self.dropout, self.target_modules = r, alpha, dropout, list(target_modules)

    def _config(self, task_type: TaskType, modules_to_save: list[str] | None) -> LoraConfig:
        return LoraConfig(
            task_type=task_type,
            r=self.r,
            lora_alpha=self.alpha,  # pyright: ignore[reportArgumentType]  # peft says int; scaling = alpha / r
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            modules_to_save=modules_to_save,
        )

    def causal_lm(self, model: PreTrainedModel) -> PeftModel:
        return get_peft_model(model, self._config(TaskType.CAUSAL_LM, None))

    def scalar_head(self, model: PreTrainedModel) -> PeftModel:
        return get_peft_model(model, self._config(TaskType.SEQ_CLS, [SCALAR_HEAD]))


def is_adapted(model) -> bool:
    """Whether `model` carries peft adapters (then its base weights are frozen and shared)."""
    return isinstance(model, PeftModel)


def save_trained_model(model, dirpath: Path) -> None:
    """Write `model` in HF format to `dirpath`; an adapted model as its merged weights plus `adapter/`.

    The merged model loads with plain `AutoModelFor...from_pretrained(dirpath)`; the adapter
    with `PeftModel.from_pretrained(base, dirpath / "adapter")`. The merge runs on a copy, so
    the trained model keeps its adapters.
    """
    if not is_adapted(model):
        model.save_pretrained(dirpath)
        return
    model.save_pretrained(dirpath / "adapter")
    copy.deepcopy(model).merge_and_unload().save_pretrained(dirpath)
