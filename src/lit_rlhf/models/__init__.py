"""Models: loading any Hugging Face causal LM or reward model, the tiny models built from a config,
LoRA adapters, and the frozen reference (a copy, or the policy with its adapters off)."""

from lit_rlhf.models.adapters import FullFineTuning, LoRA, save_trained_model
from lit_rlhf.models.loading import (
    build_causal_lm,
    build_reward_model,
    load_causal_lm,
    load_reward_model,
    load_reward_models,
    load_tokenizer,
    load_trained_reward_model,
)
from lit_rlhf.models.reference import Reference

__all__ = [
    "FullFineTuning",
    "LoRA",
    "Reference",
    "build_causal_lm",
    "build_reward_model",
    "load_causal_lm",
    "load_reward_model",
    "load_reward_models",
    "load_tokenizer",
    "load_trained_reward_model",
    "save_trained_model",
]
