"""The declared public surface: every package's `__all__` names what it has, and `import lit_rlhf` stays cheap."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lit_rlhf

PACKAGE = Path(lit_rlhf.__file__).parent
PUBLIC = [f"lit_rlhf.{name}" for name in lit_rlhf.SUBPACKAGES] + ["lit_rlhf.regularizers.kl"]


def test_every_package_declares_all():
    """Each package directory (configs aside) has an `__init__.py` with `__all__`, and is listed here."""
    packages = {
        ".".join(init.parent.relative_to(PACKAGE.parent).parts)
        for init in PACKAGE.rglob("__init__.py")
        if "conf" not in init.relative_to(PACKAGE).parts
    }
    for folder in PACKAGE.rglob("*.py"):
        if "conf" not in folder.relative_to(PACKAGE).parts and folder.parent != PACKAGE:
            assert (folder.parent / "__init__.py").exists(), f"{folder.parent} has no __init__.py"
    assert packages - {"lit_rlhf"} == set(PUBLIC)
    for name in ["lit_rlhf", *PUBLIC]:
        init = PACKAGE.parent.joinpath(*name.split("."), "__init__.py")
        assigned = {
            target.id
            for node in ast.parse(init.read_text()).body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        assert "__all__" in assigned, f"{name} declares no __all__"


@pytest.mark.parametrize("name", ["lit_rlhf", *PUBLIC])
def test_all_names_resolve(name):
    module = importlib.import_module(name)
    missing = [attribute for attribute in module.__all__ if not hasattr(module, attribute)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"
    assert len(set(module.__all__)) == len(module.__all__)


def test_top_level_names_are_the_subpackages_objects():
    from lit_rlhf.errors import ConfigError
    from lit_rlhf.modules.ppo import PPOModule
    from lit_rlhf.rewards.mix import Reward

    assert lit_rlhf.PPOModule is PPOModule and lit_rlhf.Reward is Reward and lit_rlhf.ConfigError is ConfigError
    assert lit_rlhf.losses is importlib.import_module("lit_rlhf.losses")
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        lit_rlhf.nothing  # noqa: B018


def test_import_lit_rlhf_does_not_load_torch():
    """Hydra imports this package's plugins at every start: the top level must not pull torch in."""
    code = "import sys, lit_rlhf; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_py_typed_ships():
    assert (PACKAGE / "py.typed").exists()
    pyproject = (PACKAGE.parents[1] / "pyproject.toml").read_text()
    assert '"py.typed"' in pyproject


def test_compose_makes_the_command_lines_config_and_checks_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = lit_rlhf.compose("rm_tiny", ["+debug=fast"])
    # The run folder the command line would make, under the working directory.
    assert Path(cfg.paths.output_dir).parent == tmp_path / "outputs" / cfg.task_name / "runs"
    # +debug=fast after the experiment wins over the experiment's own trainer settings.
    assert (cfg.trainer.max_epochs, cfg.trainer.limit_train_batches, list(cfg.logger)) == (1, 2, ["csv"])
    assert lit_rlhf.compose("rm_tiny").trainer.max_epochs == 3
    with pytest.raises(lit_rlhf.ConfigError, match=r"data=prompts data\.path="):
        lit_rlhf.compose("ppo_kl", ["model=hf", "model.name_or_path=/models/mine"])
    lit_rlhf.compose("ppo_kl", ["model=hf", "model.name_or_path=/models/mine", "data=task_prompts"])


def test_train_runs_a_composed_config_and_raises_user_errors(tmp_path):
    from lit_rlhf.train import train

    cfg = lit_rlhf.compose("sft_tiny", ["+debug=fast", f"paths.output_dir={tmp_path / 'run'}"])
    metrics = train(cfg)
    assert metrics["val/loss"] > 0 and (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "finished"
    bad = lit_rlhf.compose("sft_tiny", ["+debug=fast", f"paths.output_dir={tmp_path / 'bad'}"])
    bad.module.optimizer.lr = -1.0
    with pytest.raises(lit_rlhf.ConfigError, match="lr"):
        train(bad)
