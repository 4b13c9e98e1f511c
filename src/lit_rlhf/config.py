"""Config plumbing: where the shipped configs live, the `${asset:NAME}`, `${sweep_group:}`, `${run_name:}` and
`${run_folder:}` resolvers, and checks before anything is built."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from lit_rlhf.errors import ConfigError
from lit_rlhf.outputs import marker_kind

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
# The configs ship inside the package, so any install (editable, wheel) finds them.
CONFIG_DIR = PACKAGE_DIR / "conf"
CONFIG_MODULE = "pkg://lit_rlhf.conf"


def asset_path(name: str) -> str:
    """Absolute path of a model asset shipped inside the package."""
    path = ASSETS_DIR / name
    if not (path / "config.json").exists():
        available = (
            sorted(p.name for p in ASSETS_DIR.iterdir() if (p / "config.json").exists()) if ASSETS_DIR.exists() else []
        )
        raise ConfigError(
            f"shipped asset '{name}' is missing at {path} (available: {', '.join(available) or 'none'}); "
            "rebuild it as the README's 'Shipped assets' section shows"
        )
    return str(path)


def _multirun_config():
    """Hydra's config of the running job when it is part of a multirun, else None (single runs, compose API)."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return hydra_cfg if hydra_cfg.mode == RunMode.MULTIRUN else None


def sweep_group(task_name: str) -> str | None:
    """The W&B group of a multirun's jobs: the task and the sweep folder's name (its start time)."""
    hydra_cfg = _multirun_config()
    return f"{task_name}-{Path(hydra_cfg.sweep.dir).name}" if hydra_cfg else None


def run_name(task_name: str) -> str:
    """The W&B run name: the task, plus the job number inside a multirun so runs of a sweep stay apart."""
    hydra_cfg = _multirun_config()
    return f"{task_name}-{hydra_cfg.job.num}" if hydra_cfg else task_name


def run_folder(ckpt_path: str | None, default: str) -> str:
    """`hydra.run.dir`: the run folder that holds `ckpt_path`, so a resumed run continues there; else `default`.

    The run folder is the checkpoint's folder or its parent, whichever carries our run marker
    (`lit_rlhf.outputs`); a checkpoint elsewhere (copied, or from an older lit-rlhf) starts a new folder.
    """
    if ckpt_path and ckpt_path != "last":
        for folder in list(Path(ckpt_path).expanduser().resolve().parents)[:2]:
            if marker_kind(folder) == "run":
                return str(folder)
    return default


def register_resolvers() -> None:
    resolvers = (
        ("asset", asset_path),
        ("sweep_group", sweep_group),
        ("run_name", run_name),
        ("run_folder", run_folder),
    )
    for name, resolver in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def check_compatible(module, datamodule) -> None:
    """The module must consume the kind of batch the datamodule produces."""
    expected, produced = module.batch_type, datamodule.batch_type
    if expected is not produced:
        raise ConfigError(
            f"{type(module).__name__} trains on {expected.__name__}es but the data config produces "
            f"{produced.__name__}es; pick a matching data=... choice (see lit_rlhf/conf/data/)"
        )


def loggable_config(cfg: DictConfig) -> dict:
    """The config with every value resolved where it can be, for the loggers' hyperparameters.

    Unused entries may not resolve (e.g. a model group's reward model whose asset
    is not built yet); they are logged as written instead of failing the run.
    """

    def resolve(node, path: str):
        if isinstance(node, DictConfig):
            return {
                str(key): resolve(node._get_node(key), f"{path}.{key}" if path else str(key)) for key in node.keys()
            }
        if isinstance(node, ListConfig):
            return [resolve(node._get_node(i), f"{path}[{i}]") for i in range(len(node))]
        try:
            value = OmegaConf.select(cfg, path, throw_on_missing=False)
        except Exception:  # an unresolvable interpolation: keep its text
            return node._value()
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    return resolve(cfg, "")
