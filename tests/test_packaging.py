"""The package installs like one: a wheel in a fresh environment runs from any directory, with a user's configs."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import CLI_FAST

ROOT = Path(__file__).resolve().parents[1]

USER_EXPERIMENT = """\
# @package _global_
# A user's own experiment, kept outside the package: the shipped rm_tiny with another learning rate.
defaults:
  - rm_tiny

task_name: my_rm
module:
  optimizer:
    lr: 5.0e-4
"""


@pytest.mark.slow
def test_a_wheel_runs_from_another_directory_with_a_users_experiment(tmp_path):
    # Built from a copy of the sources, so the build leaves nothing in the checkout.
    project = tmp_path / "project"
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)]
    subprocess.run([*build, str(project)], check=True, capture_output=True, timeout=300)
    [wheel] = wheels.glob("lit_rlhf-*.whl")

    # A fresh environment with the wheel installed in it; the heavy dependencies come from this one's
    # site-packages (a .pth line), whose editable hook is not read, so only the wheel's copy is importable.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(purelib), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)

    user_conf = tmp_path / "my_conf"
    (user_conf / "experiment").mkdir(parents=True)
    (user_conf / "experiment" / "my_rm.yaml").write_text(USER_EXPERIMENT)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    python = venv / "bin" / "python"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    where = subprocess.run(
        [python, "-c", "import lit_rlhf; print(lit_rlhf.__file__)"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(purelib)), where.stdout + where.stderr

    args = ["-m", "lit_rlhf.train", f"hydra.searchpath=[file://{user_conf}]", "+experiment=my_rm", *CLI_FAST]
    result = subprocess.run([python, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [config] = (workdir / "outputs" / "my_rm" / "runs").glob("*/.hydra/config.yaml")
    assert "lr: 0.0005" in config.read_text()
    assert list((workdir / "outputs" / "my_rm" / "runs").glob("*/export/config.json"))
