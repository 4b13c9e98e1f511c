"""Checks before any work: every numeric setting in its range, and data that would mislead counted.

`check_settings` walks the config once and refuses, in one line naming the key, the valid range and the
value, a setting out of range or of the wrong type (`module.optimizer.lr=0`, `=-1`, `=abc`,
`module.sampling.max_new_tokens=0`), before a model loads. A value that repeats another through an
interpolation is checked where it is set.

`check_suspect_rows` counts what a datamodule found in its data: preference rows whose chosen equals the
rejected response (nothing to learn), and validation rows that also appear in training (a validation
that flatters). They are warned about, or refused with `refuse_suspect_rows=true`.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf

from lit_rlhf.errors import ConfigError, DataError

log = logging.getLogger("lit_rlhf")


@dataclass(frozen=True)
class Range:
    """A number in [low, high] (or (low, high) on a side marked open); `integer` for counts; `nullable` for null."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    integer: bool = False
    nullable: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low == -math.inf and self.high == math.inf:
            bounds = ""
        elif self.high == math.inf:
            bounds = f" {'>' if self.open_low else '>='} {_show(self.low)}"
        elif self.low == -math.inf:
            bounds = f" {'<' if self.open_high else '<='} {_show(self.high)}"
        else:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            bounds = f" in {left}{_show(self.low)}, {_show(self.high)}{right}"
        return kind + bounds + (" or null" if self.nullable else "")


def _show(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


COUNT = Range(1, integer=True)
POSITIVE = Range(0, open_low=True)
NON_NEGATIVE = Range(0)
PROBABILITY = Range(0, 1)
SEED = Range(0, 2**32 - 1, integer=True)

# Patterns over dotted keys (fnmatch: `*` spans dots); the first match decides. Keys the config lacks are skipped.
RANGES: list[tuple[str, Range]] = [
    ("seed", SEED),
    ("data_seed", SEED),
    ("*.lr", POSITIVE),
    ("*.weight_decay", NON_NEGATIVE),
    ("*.num_warmup_steps", Range(0, integer=True)),
    ("data.val_fraction", Range(0, 1, open_low=True, open_high=True)),
    ("data.num_workers", Range(0, integer=True)),
    ("data.*batch_size", COUNT),
    ("data.*max_length", COUNT),
    ("data.max_prompt_length", COUNT),
    ("data.num_proc", COUNT),
    ("*.max_new_tokens", COUNT),
    ("*.temperature", NON_NEGATIVE),
    ("*.top_p", Range(0, 1, open_low=True)),
    ("*.top_k", Range(0, integer=True)),
    ("trainer.max_epochs", Range(-1, integer=True)),
    ("trainer.max_steps", Range(-1, integer=True)),
    ("trainer.accumulate_grad_batches", COUNT),
    ("trainer.log_every_n_steps", COUNT),
    ("trainer.num_nodes", COUNT),
    ("trainer.gradient_clip_val", Range(0, nullable=True)),
    ("trainer.limit_*_batches", Range(0, nullable=True)),  # a count, or a fraction of the loader
    ("trainer.val_check_interval", Range(0, open_low=True, nullable=True)),
    ("trainer.check_val_every_n_epoch", Range(1, integer=True, nullable=True)),
    ("trainer.num_sanity_val_steps", Range(-1, integer=True)),
    ("module.*micro_batch_size", Range(1, integer=True, nullable=True)),
    ("module.padding_free_row_length", Range(1, integer=True, nullable=True)),
    ("module.ppo_epochs", COUNT),
    ("module.num_minibatches", COUNT),
    ("module.value_clip_eps", POSITIVE),
    ("module.max_grad_norm", POSITIVE),
    ("module.entropy_coef", NON_NEGATIVE),
    ("module.missing_eos_penalty", NON_NEGATIVE),
    ("module.reward_clip", Range(0, open_low=True, nullable=True)),
    ("module.uncertainty_penalty", NON_NEGATIVE),
    ("module.val_sample_batches", Range(0, integer=True)),
    ("module.log_samples_every_n_steps", Range(0, integer=True)),
    ("module.centering_coef", NON_NEGATIVE),
    ("loss.dpo.beta", POSITIVE),
    ("loss.dpo.weights.*", NON_NEGATIVE),
    ("loss.reward.scale", POSITIVE),
    ("*.label_smoothing", Range(0, 0.5, open_high=True)),
    ("regularizer.kl.coef", NON_NEGATIVE),
    ("regularizer.kl.estimator.clamp", Range(0, open_low=True, nullable=True)),
    ("regularizer.kl.controller.target", POSITIVE),
    ("regularizer.kl.controller.horizon", COUNT),
    ("regularizer.*.coef", NON_NEGATIVE),
    ("advantage.gamma", PROBABILITY),
    ("advantage.lam", PROBABILITY),
    ("advantage.samples_per_prompt", COUNT),
    ("advantage.eps", POSITIVE),
    ("adapter.r", COUNT),
    ("adapter.alpha", POSITIVE),
    ("adapter.dropout", Range(0, 1, open_high=True)),
    ("trust_region.clip.eps_low", Range(0, 1, open_low=True, open_high=True)),
    ("trust_region.clip.eps_high", POSITIVE),
    ("trust_region.clip.dual_clip", Range(1, open_low=True, nullable=True)),
    ("trust_region.kl_penalty.*", POSITIVE),
    ("evaluate.samples_per_pass", COUNT),
    ("evaluate.num_prompts", Range(1, integer=True, nullable=True)),
    ("callbacks.checkpoint.every_n_batches", COUNT),
]


def _settings(cfg: DictConfig) -> dict[str, object]:
    """Dotted key -> value of every leaf set in the config (not the interpolations that repeat one)."""
    found: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        for key in node:
            path = f"{prefix}.{key}" if prefix else str(key)
            if str(key).startswith("_") or OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
                continue  # Hydra's _target_/_partial_; values set elsewhere; values not set
            value = node[key]
            if isinstance(value, DictConfig):
                walk(value, path)
            elif not isinstance(value, ListConfig):
                found[path] = value

    walk(cfg, "")
    return found


def range_error(key: str, value: object, valid: Range) -> str | None:
    """Why `value` is not valid for `key`, or None."""
    if value is None:
        return None if valid.nullable else f"{key} must be {valid}, got null"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{key} must be {valid}, got {value!r}"
    if valid.integer and not isinstance(value, int):
        return f"{key} must be {valid}, got {value!r}"
    if not math.isfinite(value) or not valid.holds(value):
        return f"{key} must be {valid}, got {value!r}"
    return None


def check_settings(cfg: DictConfig) -> None:
    """Refuse the first numeric setting out of its range, naming the key, the valid range and the value."""
    for key, value in _settings(cfg).items():
        valid = next((valid for pattern, valid in RANGES if fnmatch.fnmatchcase(key, pattern)), None)
        problem = range_error(key, value, valid) if valid is not None else None
        if problem:
            raise ConfigError(problem)


def check_suspect_rows(datamodule, refuse: bool) -> None:
    """Warn about (or, with `refuse`, stop on) the suspect rows the datamodule counted at setup."""
    counts = getattr(datamodule, "suspect_rows", None)
    found = {what: count for what, count in (counts or {}).items() if count}
    if not found:
        return
    summary = "; ".join(f"{count} {what}" for what, count in found.items())
    if refuse:
        raise DataError(f"suspect data: {summary}; fix the data, or set refuse_suspect_rows=false to only warn")
    log.warning("suspect data: %s (refuse_suspect_rows=true stops on this)", summary)
