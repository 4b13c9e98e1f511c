"""Entry point: `python -m lit_rlhf.train +experiment=NAME [overrides]`."""

from __future__ import annotations

import os
import sys

# Nothing in a run may reach a model or dataset hub unless the user opts in.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
import lightning as L  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from lit_rlhf.config import CONFIG_DIR, check_compatible, register_resolvers  # noqa: E402
from lit_rlhf.errors import UserError  # noqa: E402

register_resolvers()


def run(cfg: DictConfig) -> dict[str, float]:
    """Build everything from `cfg`, train, and return the final metrics."""
    L.seed_everything(cfg.seed, workers=True)
    tokenizer = instantiate(cfg.model.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    module = instantiate(cfg.module, tokenizer=tokenizer, gold_reward=datamodule.gold_reward)
    check_compatible(module, datamodule)
    callbacks = [instantiate(node) for node in (cfg.callbacks or {}).values()]
    loggers = [instantiate(node) for node in (cfg.logger or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    if cfg.validate_before_fit and cfg.ckpt_path is None:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    for logger in loggers:
        logger.finalize("success")
    return metrics


def find_user_error(error: BaseException) -> UserError | None:
    """The UserError behind `error`, if any (Hydra and OmegaConf wrap what targets and resolvers raise)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg)
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None:
            raise
        # One clear line instead of a stack trace from the internals.
        print(f"error: {user_error}", file=sys.stderr)
        sys.exit(2)
    if cfg.optimized_metric is None:
        return None
    if cfg.optimized_metric not in metrics:
        print(f"error: optimized_metric '{cfg.optimized_metric}' was not logged; logged: {sorted(metrics)}", file=sys.stderr)
        sys.exit(2)
    return metrics[cfg.optimized_metric]


if __name__ == "__main__":
    main()
