"""Entry point: `python -m lit_rlhf.train +experiment=NAME [overrides]`."""

from __future__ import annotations

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

from lit_rlhf.config import CONFIG_DIR, check_compatible, loggable_config, register_resolvers  # noqa: E402
from lit_rlhf.errors import ConfigError, UserError  # noqa: E402
from lit_rlhf.loggers import close_loggers  # noqa: E402

register_resolvers()


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


def build(cfg: DictConfig) -> Run:
    """Instantiate tokenizer, data, module, callbacks, loggers and trainer from `cfg`."""
    quiet_third_party_noise()
    L.seed_everything(cfg.seed, workers=True)
    tokenizer = instantiate(cfg.model.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    module = instantiate(cfg.module, tokenizer=tokenizer, gold_reward=datamodule.gold_reward)
    check_compatible(module, datamodule)
    callbacks = [instantiate(node) for node in (cfg.callbacks or {}).values()]
    loggers = [instantiate(node) for node in (cfg.logger or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return Run(cfg, trainer, module, datamodule, loggers)


def fit(run: Run) -> dict[str, float]:
    """Validate once (the step-0 baseline), train, and return the final logged metrics."""
    cfg, trainer = run.cfg, run.trainer
    for logger in run.loggers:
        logger.log_hyperparams(loggable_config(cfg))
    if cfg.validate_before_fit and cfg.ckpt_path is None:
        trainer.validate(run.module, datamodule=run.datamodule, verbose=False)
    try:
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=cfg.ckpt_path)
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
    """The value a search optimizes and a sweep's summary reports, if the config names one."""
    if cfg.optimized_metric is None:
        return None
    if cfg.optimized_metric not in metrics:
        raise ConfigError(f"optimized_metric '{cfg.optimized_metric}' was not logged; logged: {sorted(metrics)}")
    return metrics[cfg.optimized_metric]


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return optimized_value(cfg, fit(build(cfg)))
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None:
            raise
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # Hydra records the failed job and the sweep goes on; the sweep summary names it.
            raise user_error from None
        # One clear line instead of a stack trace from the internals.
        print(f"error: {user_error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
