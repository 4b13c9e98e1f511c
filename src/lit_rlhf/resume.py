"""Resume that checks: a checkpoint records the config it was trained with, and a resumed run must match it.

Every checkpoint holds, under `lit_rlhf`, the resolved config and the settings that decide what training
does (`compared_settings`: the module, model, adapter, data, seeds and the trainer's batch and precision
settings; not paths, loggers, run length or validation frequency). `ckpt_path=...` is read first
(memory-mapped, safely: `weights_only=True`) and refused in one line when it is missing, empty, truncated,
holds objects safe loading refuses, was written by another stage, by LoRA against full fine-tuning, or
does not fit the model's weights. Settings that changed since stop the run with a table of the
differences, unless the change is named as intended: `resume.allow_changes=[module.optimizer.lr]`.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from lit_rlhf.config import loggable_config
from lit_rlhf.errors import ConfigError

log = logging.getLogger("lit_rlhf")

RECORD = "lit_rlhf"
# What may change between a run and its resumption without changing what the training computes.
NOT_COMPARED = (
    "paths",
    "ckpt_path",
    "resume",
    "logger",
    "callbacks",
    "hydra",
    "hparams_search",
    "task_name",
    "optimized_metric",
    "validate_before_fit",
    "validate_after_fit",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.limit_train_batches",
    "trainer.limit_val_batches",
    "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch",
    "trainer.num_sanity_val_steps",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.default_root_dir",
    "data.num_workers",
    "data.num_proc",
    "data.cache_dir",
    "data.val_batch_size",
    "module.val_sample_batches",
    "module.log_samples_every_n_steps",
)


def _under(key: str, prefixes) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def compared_settings(cfg: DictConfig) -> tuple[dict[str, Any], list[str]]:
    """Every setting a resumed run must share with its checkpoint: dotted key -> resolved value, and the keys
    whose value only repeats another's (an interpolation such as `module.optimizer.lr: ${model.learning_rate.dpo}`,
    or anything under one).

    A difference at a key that repeats another's in both runs is reported once, where it is set; a key the user
    set directly in one of the runs (`module.optimizer.lr=0.01`) is reported itself.
    """
    settings: dict[str, Any] = {}
    repeated: list[str] = []

    def walk(node: DictConfig, prefix: str, inherited: bool) -> None:
        for key in node:
            path = f"{prefix}.{key}" if prefix else str(key)
            if _under(path, NOT_COMPARED):
                continue
            interpolated = inherited or OmegaConf.is_interpolation(node, key)
            if OmegaConf.is_missing(node, key):
                value = "???"
            else:
                try:
                    value = node[key]
                except Exception:  # an interpolation that does not resolve (an unused asset): compared as written
                    value = str(node._get_node(key)._value())
            if isinstance(value, DictConfig):
                walk(value, path, interpolated)
                continue
            settings[path] = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
            if interpolated:
                repeated.append(path)

    walk(cfg, "", False)
    return settings, repeated


def stage_of(cfg: DictConfig) -> str:
    """The LightningModule class the config trains, e.g. `PPOModule`."""
    return str(cfg.module._target_).rsplit(".", 1)[-1]


def adapter_of(cfg: DictConfig) -> str:
    """`LoRA` or `FullFineTuning`."""
    return str(cfg.adapter._target_).rsplit(".", 1)[-1]


def run_record(cfg: DictConfig) -> dict:
    """What a checkpoint records of its run: the resolved config, the compared settings, stage and adapter."""
    settings, repeated = compared_settings(cfg)
    return {
        "config": loggable_config(cfg),
        "settings": settings,
        "repeated": repeated,
        "stage": stage_of(cfg),
        "adapter": adapter_of(cfg),
        "task_name": str(cfg.task_name),
    }


class RunRecord(L.Callback):
    """Writes `run_record(cfg)` into every checkpoint, under `lit_rlhf`."""

    def __init__(self, record: dict):
        self.record = record

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[RECORD] = self.record


# ----------------------------------------------------------------------------- reading a checkpoint


def read_checkpoint(path: str) -> dict:
    """The checkpoint at `path`, memory-mapped (its tensors are read only when used), loaded safely."""
    file = Path(path).expanduser()
    if not file.exists():
        raise ConfigError(f"ckpt_path {file} does not exist")
    if file.is_dir():
        raise ConfigError(f"ckpt_path {file} is a folder; point it at a checkpoint file, e.g. {file / 'last.ckpt'}")
    if file.stat().st_size == 0:
        raise ConfigError(f"ckpt_path {file} is empty (0 bytes): its save never completed; use an earlier checkpoint")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"ckpt_path {file} holds objects that safe loading (torch.load weights_only=True) refuses ({reason}); "
            "lit-rlhf checkpoints never do: load only checkpoints you trust"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"ckpt_path {file} is not a readable checkpoint (truncated or corrupt: {reason})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt_path {file} is not a Lightning checkpoint (it has no state_dict)")
    return checkpoint


# ----------------------------------------------------------------------------- the checks


def check_resume(cfg: DictConfig, checkpoint: dict, path: str) -> None:
    """Refuse a checkpoint of another stage or adapter, or one trained with other settings (a table)."""
    record = checkpoint.get(RECORD)
    if record is None:
        log.warning("ckpt_path %s records no config (written by an older lit-rlhf): its settings are not checked", path)
        return
    stage, adapter = stage_of(cfg), adapter_of(cfg)
    if record["stage"] != stage:
        raise ConfigError(
            f"ckpt_path {path} was written by a {record['stage']} run (task {record['task_name']}); this run trains "
            f"a {stage}: a checkpoint resumes only the stage that wrote it"
        )
    if record["adapter"] != adapter:
        choice = {"LoRA": "adapter=lora", "FullFineTuning": "adapter=none"}
        raise ConfigError(
            f"ckpt_path {path} was trained with {choice.get(record['adapter'], record['adapter'])} but this run has "
            f"{choice.get(adapter, adapter)}; resume with {choice.get(record['adapter'], record['adapter'])}"
        )
    current, repeated = compared_settings(cfg)
    skipped = set(record["repeated"]) & set(repeated)  # repeats in both runs: compared where they are set
    allowed = list(cfg.resume.allow_changes)
    differences = changed_settings(record["settings"], current, allowed, skipped)
    if differences:
        raise ConfigError(difference_table(path, differences))


_ABSENT = "(absent)"


def changed_settings(saved: dict, current: dict, allowed: list[str], skipped: set[str]) -> list[tuple[str, Any, Any]]:
    """(key, checkpoint value, current value) for every setting that differs, is not allowed to and not skipped."""
    keys = sorted((set(saved) | set(current)) - skipped)
    return [
        (key, saved.get(key, _ABSENT), current.get(key, _ABSENT))
        for key in keys
        if saved.get(key, _ABSENT) != current.get(key, _ABSENT) and not _under(key, allowed)
    ]


def difference_table(path: str, differences: list[tuple[str, Any, Any]]) -> str:
    width = max(len("setting"), *(len(key) for key, _, _ in differences))
    rows = [
        f"  {'setting':<{width}}  {'checkpoint':<14}  now",
        *(f"  {key:<{width}}  {saved!s:<14}  {now!s}" for key, saved, now in differences),
    ]
    keys = ",".join(key for key, _, _ in differences)
    return (
        f"ckpt_path {path} was trained with other settings ({len(differences)} differ); resume with the same "
        f"settings, or name the changes as intended with resume.allow_changes=[{keys}]\n" + "\n".join(rows)
    )


def check_weights_fit(module: L.LightningModule, checkpoint: dict, path: str) -> None:
    """The checkpoint's weights must fit the module: the same names and shapes (a LoRA rank, another model)."""
    saved = {key: tuple(value.shape) for key, value in checkpoint["state_dict"].items()}
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    unknown = sorted(set(saved) - set(expected))
    missing = sorted(set(expected) - set(saved)) if module.strict_loading else []
    reshaped = sorted(key for key in set(saved) & set(expected) if saved[key] != expected[key])
    if not (unknown or missing or reshaped):
        return
    if reshaped:
        key = reshaped[0]
        example = f"{key}: {list(saved[key])} in the checkpoint, {list(expected[key])} here"
    else:
        example = f"{(unknown or missing)[0]} {'only in the checkpoint' if unknown else 'missing from it'}"
    counts = f"{len(unknown)} unknown, {len(missing)} missing, {len(reshaped)} of another shape"
    raise ConfigError(
        f"ckpt_path {path} does not fit this model ({counts}; e.g. {example}); resume with the model, adapter "
        "and stage that wrote it"
    )
