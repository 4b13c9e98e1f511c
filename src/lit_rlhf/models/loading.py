"""Load tokenizers and models: any HF causal LM by name or path, or a tiny one built from a config.

Loading never reaches the network for a local path. A path that does not exist
and does not look like a hub id (`org/name`) is a `ConfigError` before
transformers is asked, so a typo never turns into a download attempt.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lit_rlhf.errors import ConfigError
from lit_rlhf.models.adapters import FullFineTuning

_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def check_model_path(name_or_path: str) -> str:
    """Return `name_or_path` if it exists locally or could be a hub id; else raise ConfigError."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path)
    looks_local = name_or_path.startswith((".", "/", "~")) or not _HUB_ID.match(name_or_path)
    if looks_local:
        raise ConfigError(f"model path does not exist: {path.resolve()}")
    return name_or_path


def _from_pretrained(loader, name_or_path: str, **kwargs):
    """Call a transformers `from_pretrained`, turning its failures into one clear message."""
    name_or_path = check_model_path(name_or_path)
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as error:
        hint = "" if Path(name_or_path).exists() else " (hub ids need network access; offline runs need a local path)"
        raise ConfigError(f"could not load '{name_or_path}'{hint}: {error}") from error


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A tokenizer that pads on the right and has a pad token (falling back to EOS, as most chat models do)."""
    tokenizer = _from_pretrained(AutoTokenizer, name_or_path, trust_remote_code=trust_remote_code)
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer at '{name_or_path}' has no EOS token; responses could never end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


@functools.lru_cache(maxsize=4)
def embedded_task_tokenizer(seed: int = 0, vocab_size: int = 512) -> PreTrainedTokenizerBase:
    """The byte-level BPE tokenizer trained on the embedded task (cached: configs may ask twice)."""
    from lit_rlhf.task.dataset import EmbeddedTask
    from lit_rlhf.task.tokenizer import build_task_tokenizer

    return build_task_tokenizer(EmbeddedTask(seed=seed), vocab_size=vocab_size)


def load_causal_lm(
    name_or_path: str,
    trust_remote_code: bool = False,
    dtype: str = "float32",
    adapter=None,
    gradient_checkpointing: bool = False,
) -> PreTrainedModel:
    """Any HF causal LM (AutoModelForCausalLM), ready to train: with `adapter` (none: in full) and checkpointing."""
    model = _from_pretrained(
        AutoModelForCausalLM, name_or_path, trust_remote_code=trust_remote_code, dtype=torch_dtype(dtype)
    )
    return trainable(model, (adapter or FullFineTuning()).causal_lm, gradient_checkpointing)


def load_reward_model(
    name_or_path: str,
    trust_remote_code: bool = False,
    dtype: str = "float32",
    adapter=None,
    gradient_checkpointing: bool = False,
) -> PreTrainedModel:
    """A backbone with a scalar head (AutoModelForSequenceClassification, num_labels=1), ready to train.

    From a causal-LM checkpoint the head is new (InstructGPT initialises the reward
    model from the SFT model); from a reward-model checkpoint it is the trained head.
    With an adapter the head still trains in full.
    """
    model = _from_pretrained(
        AutoModelForSequenceClassification,
        name_or_path,
        num_labels=1,
        trust_remote_code=trust_remote_code,
        dtype=torch_dtype(dtype),
    )
    _require_pad_token(model, name_or_path)
    return trainable(model, (adapter or FullFineTuning()).scalar_head, gradient_checkpointing)


def load_trained_reward_model(name_or_path: str, trust_remote_code: bool, dtype: str) -> PreTrainedModel:
    """The frozen reward source PPO optimises against; refused if its scalar head is not in the checkpoint.

    A causal LM loaded as a reward model gets a newly initialised head: a random reward that
    PPO would happily optimise. That is a mistake, never a choice (a critic may start so).
    """
    if name_or_path is None:
        raise ConfigError(_NO_REWARD_MODEL)
    model, info = _from_pretrained(
        AutoModelForSequenceClassification,
        name_or_path,
        num_labels=1,
        trust_remote_code=trust_remote_code,
        dtype=torch_dtype(dtype),
        output_loading_info=True,
    )
    new = sorted(key for key in info["missing_keys"] if key.split(".")[0] == "score")
    if new:
        raise ConfigError(
            f"'{name_or_path}' has no trained scalar head ({', '.join(new)} newly initialised), so its reward "
            "would be random; point model.reward.name_or_path at a trained reward model (the export/ of a "
            "reward-model run, e.g. +experiment=rm_tiny)"
        )
    _require_pad_token(model, name_or_path)
    return model.eval().requires_grad_(False)


_NO_REWARD_MODEL = (
    "model.reward.name_or_path is not set: PPO would score responses with a newly initialised scalar head, "
    "i.e. optimise a random reward. Set model.reward.name_or_path=<a trained reward model> (the export/ of a "
    "reward-model run, e.g. +experiment=rm model=hf ...), or reward without a model: "
    "reward=function reward.fn=<my_pkg.my_module.my_fn>, reward=math or reward=exact"
)


def trainable(model: PreTrainedModel, adapt, gradient_checkpointing: bool) -> PreTrainedModel:
    """`adapt(model)` in train mode (transformers loads in eval mode; modules freeze what stays fixed).

    Checkpointing is non-reentrant: it needs no input that requires grad, so it works under LoRA
    (frozen embeddings), and its gradients equal those of the plain backward.
    """
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return adapt(model).train()


def check_model_paths(module_cfg: DictConfig) -> None:
    """Refuse, before any model loads, a model that the module config would load from no path.

    Hydra builds a module's arguments in order, so without this a large policy would load
    first and the missing reward model would only be found afterwards.
    """
    unset = [node for node in _loader_nodes(module_cfg) if "name_or_path" in node and node.name_or_path is None]
    # The reward model first: other paths (hf's critic) follow it, and its absence is the costly mistake.
    if any(node._target_.endswith(".load_trained_reward_model") for node in unset):
        raise ConfigError(_NO_REWARD_MODEL)
    if unset:
        raise ConfigError(f"{unset[0]._get_full_key(None)}.name_or_path is not set (a model path or hub id)")


def _loader_nodes(node) -> Iterator[DictConfig]:
    """Every config node under `node` (interpolations resolved) that one of these loaders instantiates."""
    if isinstance(node, DictConfig):
        if str(node.get("_target_", "")).startswith(__name__ + "."):
            yield node
        children = [node[key] for key in node if not OmegaConf.is_missing(node, key)]
    elif isinstance(node, ListConfig):
        children = list(node)
    else:
        return
    for child in children:
        yield from _loader_nodes(child)


def build_causal_lm(
    tokenizer: PreTrainedTokenizerBase,
    model_type: str = "llama",
    adapter=None,
    gradient_checkpointing: bool = False,
    **config,
) -> PreTrainedModel:
    """A randomly initialised causal LM of `model_type` sized by `config` (for tiny models and tests)."""
    model = AutoModelForCausalLM.from_config(_build_config(tokenizer, model_type, **config))
    return trainable(model, (adapter or FullFineTuning()).causal_lm, gradient_checkpointing)


def build_reward_model(
    tokenizer: PreTrainedTokenizerBase,
    model_type: str = "llama",
    adapter=None,
    gradient_checkpointing: bool = False,
    **config,
) -> PreTrainedModel:
    """A randomly initialised scalar-head model of `model_type` (for tests)."""
    model = AutoModelForSequenceClassification.from_config(_build_config(tokenizer, model_type, num_labels=1, **config))
    return trainable(model, (adapter or FullFineTuning()).scalar_head, gradient_checkpointing)


def _build_config(tokenizer: PreTrainedTokenizerBase, model_type: str, **config):
    try:
        return AutoConfig.for_model(
            model_type,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            **config,
        )
    except ValueError as error:
        raise ConfigError(f"cannot build a '{model_type}' model: {error}") from error


def _require_pad_token(model: PreTrainedModel, name_or_path: str) -> None:
    # The exported reward model is scored by plain transformers at the rightmost
    # non-pad token, so the config must know the pad id.
    if model.config.pad_token_id is None:
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    if model.config.pad_token_id is None:
        raise ConfigError(f"model at '{name_or_path}' defines neither a pad nor an EOS token id")


def torch_dtype(name: str) -> torch.dtype:
    valid = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in valid:
        raise ConfigError(f"unknown dtype '{name}'; valid: {', '.join(valid)}")
    return valid[name]


def load_reward_models(
    names_or_paths: list[str], trust_remote_code: bool = False, dtype: str = "float32"
) -> list[PreTrainedModel]:
    """K trained reward models, e.g. one per seed: PPO's ensemble reward source (`module.reward_aggregation`)."""
    if not names_or_paths:
        raise ConfigError("a reward ensemble needs at least one reward model path")
    return [load_reward_model(path, trust_remote_code, dtype) for path in names_or_paths]
