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


# The rooms of src/lit_rlhf (its packages and top-level modules), lowest first. A room imports only rooms of a
# layer below its own: never one above, never one beside it, so no two rooms can import each other. A new
# package or module gets a layer here, or test_every_room_has_a_layer fails.
LAYERS = [
    # 0. Foundations: import nothing of lit_rlhf.
    ["errors", "signals", "conf"],
    # 1. Helpers every stage uses: tensor ops (masking, log-probs, sampling), records/batches/datamodules, what a
    #    command writes, reading W&B files, the run checks, the Optuna pieces a search and its trials share.
    ["ops", "data", "outputs", "wandb_history", "checks", "search"],
    # 2. Pure losses, the embedded task, config and command plumbing, reading finished runs, loggers.
    ["losses", "task", "config", "command", "runs", "loggers"],
    # 3. Models (loading, adapters, the reference), RL estimators on top of the losses, resume checks.
    ["models", "rl", "resume"],
    # 4. What a stage module composes: rewards, regularizers (KL and the rest), generation engines.
    ["rewards", "regularizers", "generation"],
    # 5. The four stage modules.
    ["modules"],
    # 6. Around a stage: Lightning callbacks, evaluation, best-of-n and reward-model over-optimization.
    ["callbacks", "evaluation", "overoptimization"],
    # 7. Analysis of finished runs: figures and fits (nothing below the commands imports it).
    ["analysis"],
    # 8. Commands and their Hydra plumbing: python -m lit_rlhf.{train,evaluate,generate,plot}, the sweep summary.
    ["train", "evaluate", "generate", "plot", "sweep"],
]
LAYER = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}
PACKAGE = ROOT / "src" / "lit_rlhf"


def rooms_on_disk() -> set[str]:
    """Every package (a folder with `__init__.py`) and top-level module of lit_rlhf, the package's own
    `__init__.py` (the lazy public facade) aside."""
    modules = {path.stem for path in PACKAGE.glob("*.py") if path.name != "__init__.py"}
    return modules | {path.parent.name for path in PACKAGE.glob("*/__init__.py")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT / "src").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The absolute names a source file imports, anywhere in the file (lazy imports included); relative imports
    resolved; `from package import name` gives `package.name` when that is a module, else `package`."""
    name = module_name(path)
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = (ROOT / "src" / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    ROOT / "src" / candidate.replace(".", "/") / "__init__.py"
                ).exists()
                imported.add(candidate if is_module else base)
    return imported


def room_of(module: str) -> str | None:
    """The room a module name belongs to; `lit_rlhf` alone is the facade, outside every room."""
    if module.startswith("hydra_plugins"):
        return "hydra_plugins"  # the sweeper plugin imports lit_rlhf, never the other way round
    parts = module.split(".")
    if parts[0] != "lit_rlhf":
        return None
    return parts[1] if len(parts) > 1 else "lit_rlhf"


def test_every_room_has_a_layer():
    listed = [room for rooms in LAYERS for room in rooms]
    assert len(listed) == len(set(listed)), "a room is listed twice in LAYERS"
    on_disk = rooms_on_disk()
    assert not on_disk - set(listed), f"give these rooms a layer in LAYERS: {sorted(on_disk - set(listed))}"
    assert not set(listed) - on_disk, f"LAYERS lists rooms that no longer exist: {sorted(set(listed) - on_disk)}"


def room_files(room: str) -> list[Path]:
    return sorted((PACKAGE / room).rglob("*.py")) if (PACKAGE / room).is_dir() else [PACKAGE / f"{room}.py"]


@pytest.mark.parametrize("room", sorted(LAYER))
def test_imports_flow_one_way(room):
    """Every import of another room goes to a lower layer (no upward import, none beside, so no cycle)."""
    wrong = {}
    for path in room_files(room):
        targets = {room_of(module) for module in imported_modules(path)} - {None, room}
        bad = sorted(target for target in targets if LAYER.get(target, len(LAYERS)) >= LAYER[room])
        if bad:
            wrong[str(path.relative_to(PACKAGE))] = bad
    assert not wrong, f"{room} (layer {LAYER[room]}) imports rooms at or above its layer: {wrong}"


def test_no_module_import_cycle():
    """Within rooms too: no lit_rlhf module imports itself through others (package `__init__`s included)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py") if path != PACKAGE / "__init__.py"}
    edges = {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = [*trail[trail.index(name) :], name]
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
        if name in done:
            return
        for target in sorted(edges[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(modules):
        visit(name, [])
