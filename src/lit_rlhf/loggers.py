"""Logger factories. W&B runs offline, silently, when no API key is configured."""

from __future__ import annotations

import logging
import os

import wandb
from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger("lit_rlhf")


def has_wandb_credentials() -> bool:
    """An API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def wandb_logger(
    project: str, save_dir: str, name: str | None = None, offline: bool | None = None, **kwargs
) -> WandbLogger:
    """A WandbLogger that never prompts: offline unless credentials exist (or `offline` says otherwise)."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not has_wandb_credentials()
    if offline:
        # Without this, wandb may ask for a key on a TTY or wait on the network.
        os.environ["WANDB_MODE"] = "offline"
        log.info("W&B: no API key, logging offline under %s (view: wandb leet; upload: wandb sync)", save_dir)
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(project=project, save_dir=save_dir, name=name, offline=offline, **kwargs)


def close_loggers(loggers: list, status: str) -> None:
    """Finalize every logger and end the W&B run, so the next job of a multirun in this process gets its own run."""
    for logger in loggers:
        logger.finalize(status)
    if any(isinstance(logger, WandbLogger) for logger in loggers) and wandb.run is not None:
        wandb.finish(exit_code=0 if status == "success" else 1)
