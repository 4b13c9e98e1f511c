"""Entry point: `python -m lit_rlhf.train +experiment=NAME [overrides]`."""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

# Nothing in a run may reach a model or dataset hub unless the user opts in.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from lit_rlhf import signals
from lit_rlhf.callbacks.finite_guard import NonFiniteGuard
from lit_rlhf.callbacks.run_length import RunLength
from lit_rlhf.callbacks.stop_on_signal import StopOnSignal
from lit_rlhf.checks import check_settings, check_suspect_rows
from lit_rlhf.command import exit_on_user_error, find_user_error, run_command
from lit_rlhf.config import (
    CONFIG_MODULE,
    check_compatible,
    check_embedded_task,
    loggable_config,
    register_resolvers,
)
from lit_rlhf.errors import OutputError
from lit_rlhf.loggers import close_loggers
from lit_rlhf.models.loading import check_model_paths
from lit_rlhf.outputs import check_folder, claim_folder
from lit_rlhf.overoptimization.bon import evaluate
from lit_rlhf.resume import RunRecord, check_resume, check_weights_fit, read_checkpoint, run_record

register_resolvers()
log = logging.getLogger("lit_rlhf")
__all__ = [
    "Run",
    "build",
    "exit_on_user_error",
    "find_user_error",
    "fit",
    "main",
    "optimized_value",
    "train",
    "train_or_evaluate",
]


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("💡 Tip") or "`weights_only` was not set" in message)


def quiet_third_party_noise() -> None:
    """Hide advertisements and deprecation chatter from dependencies; keep every warning about the run."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector"):
        logging.getLogger(name).addFilter(_DropLightningTips())
    warnings.filterwarnings("ignore", message=".*set_vital.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
    # Reference and reward models are frozen in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


@dataclass
class Run:
    """Everything a config builds, before training."""

    cfg: DictConfig
    trainer: L.Trainer
    module: L.LightningModule
    datamodule: L.LightningDataModule
    loggers: list
    run_length: RunLength
    ckpt_path: str | None  # the checkpoint this run continues from (`ckpt_path=last` resolved), if any


def build(cfg: DictConfig) -> Run:
    """Check the settings, outputs and checkpoint, then instantiate tokenizer, data, module, callbacks,
    loggers and trainer from `cfg`."""
    quiet_third_party_noise()
    check_settings(cfg)
    record = run_record(cfg)  # first: instantiating the module resolves some of the config's interpolations in place
    ckpt_path = resolve_ckpt_path(cfg)
    checkpoint = read_checkpoint(ckpt_path) if ckpt_path is not None else None
    if checkpoint is not None:
        check_resume(cfg, checkpoint, ckpt_path)  # before any model loads
    check_training_outputs(cfg, ckpt_path)
    L.seed_everything(cfg.seed, workers=True)
    check_model_paths(cfg.module)
    if cfg.gold_reward is not None:
        check_model_paths(cfg.gold_reward)
    tokenizer = instantiate(cfg.model.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    module = instantiate(cfg.module, tokenizer=tokenizer, gold_reward=instantiate(cfg.gold_reward))
    check_compatible(module, datamodule)
    if checkpoint is not None:
        check_weights_fit(module, checkpoint, ckpt_path)
        del checkpoint
    datamodule.setup("fit")
    check_suspect_rows(datamodule, cfg.refuse_suspect_rows)
    # A callback set to null (`+debug=fast` drops the progress bar) is left out.
    callbacks = [instantiate(node) for node in (cfg.callbacks or {}).values() if node is not None]
    loggers = [instantiate(node) for node in (cfg.logger or {}).values()]
    length_overrides, run_length = run_length_settings(cfg.trainer, module, datamodule)
    # The guard first (broken weights stop the run before a checkpoint saves them), the signal stop last
    # (after the checkpoint callback had its turn at the step).
    check_reward_columns(module, datamodule)
    callbacks = [NonFiniteGuard(), *callbacks, RunRecord(record), run_length, StopOnSignal()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **length_overrides)
    return Run(cfg, trainer, module, datamodule, loggers, run_length, ckpt_path)


# The token cache's entries (`data/tokenized.py`: `<kind>-<fingerprint>`, `.building-*` while tokenizing).
CACHE_ENTRIES = re.compile(r"^([a-z_]+-[0-9a-f]{16}|\.building-.*)$")


def setting_of(node: DictConfig, key: str, fallback: str) -> str:
    """The override that moves `node.key`: the key it interpolates (`${paths.export_dir}`), else `fallback`."""
    raw = node._get_node(key)._value()
    match = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
    return match[1] if match else fallback


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`ckpt_path`, with `last` meaning this run folder's `last.ckpt` when one exists (a requeued job), else none."""
    if cfg.ckpt_path != "last":
        return cfg.ckpt_path
    callbacks = cfg.callbacks or {}
    folder = callbacks.checkpoint.dirpath if "checkpoint" in callbacks else cfg.paths.checkpoint_dir
    last = Path(folder).expanduser() / "last.ckpt"
    if last.exists():
        log.info("ckpt_path=last: continuing from %s", last)
        return str(last)
    log.info("ckpt_path=last: no %s yet, starting from the beginning", last)
    return None


def check_training_outputs(cfg: DictConfig, ckpt_path: str | None) -> None:
    """Before any work: every folder a callback writes (checkpoints, export) is new, empty or ours; a checkpoint
    an earlier run left there is continued, never overwritten; the token cache folder is claimed."""
    for name, node in (cfg.callbacks or {}).items():
        if node is None or "dirpath" not in node:
            continue
        folder = check_folder(node.dirpath, name, setting_of(node, "dirpath", f"callbacks.{name}.dirpath"))
        earlier = folder / "last.ckpt"
        if earlier.exists() and (ckpt_path is None or Path(ckpt_path).expanduser().resolve() != earlier):
            raise OutputError(
                f"{earlier} holds the checkpoint of an earlier run; continue that run with ckpt_path={earlier}, "
                "or train into another folder (hydra.run.dir=...)"
            )
    if "cache_dir" in cfg.data:
        setting = setting_of(cfg.data, "cache_dir", "data.cache_dir")
        claim_folder(cfg.data.cache_dir, "token cache", setting, adoptable=lambda name: bool(CACHE_ENTRIES.match(name)))


def check_reward_columns(module, datamodule) -> None:
    """Stop before training if a reward (or the gold reward) needs a data column the prompts do not carry."""
    if not hasattr(datamodule, "column_names"):
        return
    available = datamodule.column_names()
    for name in ("reward", "gold_reward"):
        reward = getattr(module, name, None)
        if reward is not None and hasattr(reward, "check_columns"):
            reward.check_columns(available, "the prompt data")


def run_length_settings(trainer_cfg: DictConfig, module, datamodule) -> tuple[dict, RunLength]:
    """Trainer arguments that make `trainer.max_steps` count batches and keep the validation interval in range."""
    overrides, max_batches = {}, None
    if not module.automatic_optimization and trainer_cfg.max_steps > 0:
        # Lightning's global_step counts every optimizer step of a manually optimised module (PPO: several per
        # batch); RunLength stops after max_steps training batches instead.
        overrides["max_steps"], max_batches = -1, trainer_cfg.max_steps
    interval = trainer_cfg.val_check_interval
    if isinstance(interval, int) and not isinstance(interval, bool):
        batches = training_batches_per_epoch(trainer_cfg.limit_train_batches, datamodule)
        if interval > batches:
            log.warning(
                "trainer.val_check_interval=%d is more than the %d training batches of an epoch; validating every %d",
                interval,
                batches,
                batches,
            )
            overrides["val_check_interval"] = batches
    return overrides, RunLength(max_batches)


def training_batches_per_epoch(limit_train_batches: int | float | None, datamodule) -> int:
    """What Lightning will run per epoch: the training loader's length, cut by `trainer.limit_train_batches`."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    iter(loader)  # a CombinedLoader (PPO) knows its length only once iterated; nothing is drawn from it
    batches = len(loader)
    if limit_train_batches is None:
        return batches
    if isinstance(limit_train_batches, float):
        return max(1, int(batches * limit_train_batches))
    return min(batches, limit_train_batches)


def fit(run: Run) -> dict[str, float]:
    """Validate once (the step-0 baseline), train, validate at the end, and return the final logged metrics."""
    cfg, trainer = run.cfg, run.trainer
    for logger in run.loggers:
        logger.log_hyperparams(loggable_config(cfg))
    try:
        if cfg.validate_before_fit and run.ckpt_path is None:
            trainer.validate(run.module, datamodule=run.datamodule, verbose=False)
        # Checkpoints load safely: plain tensors and containers only, no code from a pickle.
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=run.ckpt_path, weights_only=True)
        # A signal that came after the last step (the end-of-training checkpoint was already written).
        signals.raise_if_received("after training ended (its checkpoint and export were written)")
        # Every run ends on a validation, so its val/ metrics (and a search's objective) describe the final weights.
        if cfg.validate_after_fit and run.run_length.needs_final_validation(trainer):
            trainer.validate(run.module, datamodule=run.datamodule, verbose=False)
    except signals.Interrupted as stop:
        close_loggers(run.loggers, "failed", stop.exit_code)
        raise
    except BaseException:
        close_loggers(run.loggers, "failed")
        raise
    close_loggers(run.loggers, "success")
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a search optimizes and a sweep's summary reports, if the config names one.

    A metric that was not logged (e.g. the embedded task's gold reward on other data) is a warning, not a
    failure: the run finished. The value is then None, which a search records as a failed trial.
    """
    if cfg.optimized_metric is None:
        return None
    if cfg.optimized_metric not in metrics:
        logged = ", ".join(sorted(name for name in metrics if name.startswith("val/"))) or "none"
        log.warning(
            "optimized_metric '%s' was not logged, so this run reports no value (val/ metrics logged: %s); "
            "set optimized_metric=<one of them> for sweeps and searches",
            cfg.optimized_metric,
            logged,
        )
        return None
    return metrics[cfg.optimized_metric]


def train_or_evaluate(cfg: DictConfig) -> dict[str, float]:
    """Train (or, for an evaluation experiment, evaluate) and return the final metrics."""
    check_embedded_task(cfg)
    if "evaluate" in cfg:
        # An evaluation experiment (+experiment=bon_frontier) names what it runs; nothing is trained.
        return evaluate(cfg)
    return fit(build(cfg))


def train(cfg: DictConfig) -> dict[str, float]:
    """Run a config as `python -m lit_rlhf.train` runs it, from a notebook or a script, and return the final
    metrics (`val/...`, `train/...`): the run folder `cfg.paths.output_dir` claimed and locked, `status.json`,
    signals and one-line errors (a `UserError` is raised, not printed).

    Example:
        cfg = lit_rlhf.compose("ppo_kl", ["trainer.max_steps=20"])
        metrics = train(cfg)
    """
    return run_command(cfg, train_or_evaluate, "train")


@hydra.main(version_base="1.3", config_path=CONFIG_MODULE, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """The command line: train, and hand a sweep or search the value it optimizes."""
    metrics = run_command(cfg, train_or_evaluate, "train")
    return None if metrics is None else optimized_value(cfg, metrics)


if __name__ == "__main__":
    main()
