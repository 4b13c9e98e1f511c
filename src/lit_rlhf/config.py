"""Config plumbing: where the shipped configs live, the resolvers (`${asset:NAME}`, `${sweep_group:}`,
`${run_name:}`, `${first_set:A,B}`, `${if_gold:A,B}`, `${if_verifier:A,B}`, `${run_folder:}`), and checks before
anything is built."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

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


def first_set(*values):
    """The first value that is not null (e.g. a critic starts from the reward model, else from the policy)."""
    return next((value for value in values if value is not None), None)


def if_gold(when_gold, otherwise, *, _root_: DictConfig):
    """`when_gold` if the run has a gold reward (an embedded task's, or gold_reward=...), else `otherwise`:
    a preset's optimized_metric follows what the run can measure."""
    return when_gold if OmegaConf.select(_root_, "gold_reward", default=None) is not None else otherwise


def if_verifier(when_verifier, otherwise, *, _root_: DictConfig):
    """`when_verifier` if the run's reward has a verifier component (reward=math, exact, ...), else `otherwise`."""
    from hydra.utils import get_class

    components = OmegaConf.select(_root_, "reward.components", default=None) or {}
    targets = [component.get("_target_") for component in components.values() if isinstance(component, DictConfig)]
    return when_verifier if any(getattr(get_class(t), "verifier", False) for t in targets if t) else otherwise


def register_resolvers() -> None:
    resolvers = (
        ("asset", asset_path),
        ("sweep_group", sweep_group),
        ("run_name", run_name),
        ("run_folder", run_folder),
        ("first_set", first_set),
        ("if_gold", if_gold),
        ("if_verifier", if_verifier),
    )
    for name, resolver in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


# The data choice to name for each kind of batch a user's model trains on.
USER_DATA = "data=prompts data.path=FILE (PPO, RLOO, GRPO), data=sft (SFT) or data=jsonl (reward models, DPO)"


def compose(experiment: str | None = None, overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """The config `python -m lit_rlhf.<config_name> +experiment=EXPERIMENT OVERRIDES` composes, for notebooks,
    scripts, tests and benchmarks (`lit_rlhf.train.train(cfg)` runs it).

    Checked as the command line checks it (an embedded task's data with another model is refused unless
    `data=` is among `overrides`). `paths.output_dir` is the run folder the command line would create,
    `outputs/<task_name>/runs/<time>` under the working directory, unless an override sets it.

    Example:
        cfg = lit_rlhf.compose("grpo", ["model=hf", "model.name_or_path=/models/mine", "data=prompts", ...])
    """
    from hydra import compose as compose_with_hydra
    from hydra import initialize_config_dir

    register_resolvers()
    chosen = [f"+experiment={experiment}", *overrides] if experiment else list(overrides)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose_with_hydra(config_name, overrides=chosen, return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    # The command line's run folder; `evaluate` and `generate` have no checkpoint to continue in it.
    run_dir = f"outputs/{cfg.task_name}/runs/{datetime.now():%Y-%m-%d_%H-%M-%S}"
    if "ckpt_path" in cfg:
        run_dir = run_folder(cfg.ckpt_path, run_dir)
    with open_dict(cfg):
        del cfg["hydra"]
        if not any(override.split("=", 1)[0].lstrip("+") == "paths.output_dir" for override in chosen):
            cfg.paths.output_dir = str(Path(run_dir).absolute())
    check_embedded_task(cfg, chosen, choices)
    return cfg


def check_embedded_task(cfg: DictConfig, overrides: list[str] | None = None, choices: dict | None = None) -> None:
    """Refuse an embedded task's data with a model that is not that task's, unless chosen on the command line.

    An experiment's default data is the embedded task's; with model=hf it would silently train a user's
    model on the task's prompts and log the task's gold reward for it. Without `overrides` and `choices`,
    the command line's (Hydra's); a config `compose` made was checked there.
    """
    if overrides is None or choices is None:
        if not HydraConfig.initialized():
            return
        overrides, choices = list(HydraConfig.get().overrides.task), dict(HydraConfig.get().runtime.choices)
    data_task = OmegaConf.select(cfg, "data.embedded_task", default=None)
    if data_task is None or data_task == OmegaConf.select(cfg, "model.embedded_task", default=None):
        return
    if any(override.split("=", 1)[0].lstrip("+~") == "data" for override in overrides):
        return  # the user chose the task's data on the command line
    model, data = choices.get("model", "?"), choices.get("data", "?")
    raise ConfigError(
        f"model={model} is not the embedded {data_task} task's model, but data={data} (the experiment's default) "
        f"is that task's data: give your own with {USER_DATA}; or choose data={data} on the command line to "
        "train on the embedded task anyway"
    )


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
            return {str(key): resolve(node._get_node(key), f"{path}.{key}" if path else str(key)) for key in node}
        if isinstance(node, ListConfig):
            return [resolve(node._get_node(i), f"{path}[{i}]") for i in range(len(node))]
        try:
            value = OmegaConf.select(cfg, path, throw_on_missing=False)
        except Exception:  # an unresolvable interpolation: keep its text
            return node._value()
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    return resolve(cfg, "")
