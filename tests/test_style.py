"""The code stays lint-clean and formatted (ruff, configured in pyproject.toml)."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["src", "tests", "benchmarks"]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff comes with the dev extra")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command):
    result = subprocess.run(["ruff", *command, *PATHS], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# Which rooms each room may import from: imports flow one way, from the stages down to the helpers.
ALLOWED_IMPORTS = {
    "ops": {"ops", "errors"},
    "models": {"models", "errors", "task"},
    "data": {"data", "errors"},
    "task": {"task", "data", "errors"},
    "losses": {"losses", "ops", "errors"},
    "regularizers": {"regularizers", "ops", "data", "errors"},
    "rl": {"rl", "losses", "ops", "errors"},
    "generation": {"generation", "ops", "errors"},
}


def lit_rlhf_imports(path: Path) -> set[str]:
    """The top-level `lit_rlhf` rooms a source file imports (anywhere in the file, lazy imports included)."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        rooms |= {name.split(".")[1] for name in names if name.startswith("lit_rlhf.") and name.count(".") >= 1}
    return rooms


@pytest.mark.parametrize("room", sorted(ALLOWED_IMPORTS))
def test_imports_flow_one_way(room):
    package = ROOT / "src" / "lit_rlhf" / room
    wrong = {
        str(path.relative_to(package)): sorted(lit_rlhf_imports(path) - ALLOWED_IMPORTS[room])
        for path in package.rglob("*.py")
    }
    wrong = {path: rooms for path, rooms in wrong.items() if rooms}
    assert not wrong, f"{room}/ imports rooms above it: {wrong}"
