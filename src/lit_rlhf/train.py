"""Entry point: `python -m lit_rlhf.train +experiment=NAME [overrides]`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from dataclasses import dataclass

# Nothing in a run may reach a model or dataset hub unless the user opts in.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
import lightning as L  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from lit_rlhf.callbacks.run_length import RunLength  # noqa: E402
from lit_rlhf.config import (  # noqa: E402
    CONFIG_MODULE,
    check_compatible,
    check_embedded_task,
    loggable_config,
    register_resolvers,
)
from lit_rlhf.errors import UserError  # noqa: E402
from lit_rlhf.loggers import close_loggers  # noqa: E402
from lit_rlhf.models.loading import check_model_paths  # noqa: E402
from lit_rlhf.overoptimization.bon import evaluate  # noqa: E402

register_resolvers()
log = logging.getLogger("lit_rlhf")


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


def build(cfg: DictConfig) -> Run:
    """Instantiate tokenizer, data, module, callbacks, loggers and trainer from `cfg`."""
    quiet_third_party_noise()
    L.seed_everything(cfg.seed, workers=True)
    check_model_paths(cfg.module)
    if cfg.gold_reward is not None:
        check_model_paths(cfg.gold_reward)
    tokenizer = instantiate(cfg.model.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    module = instantiate(cfg.module, tokenizer=tokenizer, gold_reward=instantiate(cfg.gold_reward))
    check_compatible(module, datamodule)
    callbacks = [instantiate(node) for node in (cfg.callbacks or {}).values()]
    loggers = [instantiate(node) for node in (cfg.logger or {}).values()]
    length_overrides, run_length = run_length_settings(cfg.trainer, module, datamodule)
    check_reward_columns(module, datamodule)
    trainer = instantiate(cfg.trainer, callbacks=[*callbacks, run_length], logger=loggers or False, **length_overrides)
    return Run(cfg, trainer, module, datamodule, loggers, run_length)


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
    if cfg.validate_before_fit and cfg.ckpt_path is None:
        trainer.validate(run.module, datamodule=run.datamodule, verbose=False)
    try:
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=cfg.ckpt_path)
        # Every run ends on a validation, so its val/ metrics (and a search's objective) describe the final weights.
        if cfg.validate_after_fit and run.run_length.needs_final_validation(trainer):
            trainer.validate(run.module, datamodule=run.datamodule, verbose=False)
    except BaseException:
        close_loggers(run.loggers, "failed")
        raise
    close_loggers(run.loggers, "success")
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def find_user_error(error: BaseException) -> UserError | None:
    """The UserError behind `error`, if any (Hydra and OmegaConf wrap what targets and resolvers raise)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


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


@contextlib.contextmanager
def exit_on_user_error():
    """Inside a Hydra main: a UserError ends the run with one line on stderr and exit code 2, not a stack
    trace; inside a multirun it fails the job alone (Hydra records it and the sweep goes on)."""
    try:
        yield
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None:
            raise
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise user_error from None
        print(f"error: {user_error}", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONFIG_MODULE, config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        check_embedded_task(cfg, list(HydraConfig.get().overrides.task), dict(HydraConfig.get().runtime.choices))
        if "evaluate" in cfg:
            # An evaluation experiment (+experiment=bon_frontier) names what it runs; nothing is trained.
            return optimized_value(cfg, evaluate(cfg))
        return optimized_value(cfg, fit(build(cfg)))


if __name__ == "__main__":
    main()
