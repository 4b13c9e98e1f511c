"""Shared fixtures: tiny configs composed in-process, so end-to-end tests take seconds and never touch a network."""

from __future__ import annotations

import ast
import csv
import inspect
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One token cache per test session: tests share tokenized tables but never read a user's.
os.environ.setdefault("LIT_RLHF_CACHE", tempfile.mkdtemp(prefix="lit-rlhf-cache-"))

import pytest
import torch
from omegaconf import DictConfig

from lit_rlhf import compose

# Small everything (`+debug=fast`): 2 training batches, 1 validation batch, CSV logging only.
FAST = ["+debug=fast"]


def compose_config(experiment: str | None, output_dir: Path, overrides: list[str] = ()) -> DictConfig:
    """The run config of `+experiment=...` with FAST settings, writing under `output_dir`."""
    return compose(experiment, [*FAST, f"paths.output_dir={output_dir}", *overrides])


def compose_named(config_name: str, output_dir: Path, overrides: list[str] = ()) -> DictConfig:
    """Another command's config (`evaluate`, `generate`), writing under `output_dir`."""
    return compose(None, [f"paths.output_dir={output_dir}", *overrides], config_name=config_name)


# FAST for the command line, with small batches.
CLI_FAST = [*FAST, "data.batch_size=4", "data.val_batch_size=8"]


def cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m lit_rlhf.train ...` in a directory outside the repository, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "lit_rlhf.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_metrics(output_dir: Path) -> list[dict[str, float]]:
    """Rows of the CSV logger, with empty cells dropped."""
    with open(output_dir / "csv" / "metrics.csv") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def logged_names(output_dir: Path) -> set[str]:
    return {name for row in read_metrics(output_dir) for name in row}


def generation_of(prompt_ids, prompt_mask, response_ids, stop_token_ids):
    """A `Generation` of chosen response ids after the prompts, masked after each row's first stop token."""
    from lit_rlhf.ops.generation import Generation
    from lit_rlhf.ops.masking import response_mask

    mask, has_stop = response_mask(response_ids, stop_token_ids)
    return Generation(
        sequences=torch.cat([prompt_ids, response_ids], dim=1),
        attention_mask=torch.cat([prompt_mask.bool(), mask], dim=1).long(),
        response_ids=response_ids,
        response_mask=mask,
        has_stop=has_stop,
    )


class FixedEngine:
    """A rollout engine that returns what `sample(prompt_ids, prompt_mask, sampling)` chooses, with the engine's
    log-probs `engine_logprobs(generation)` (zeros by default): PPO's rollout on controlled responses."""

    def __init__(self, sample, engine_logprobs=None):
        self.sample, self.engine_logprobs = sample, engine_logprobs

    def generate(self, prompt_ids, prompt_mask, sampling, seed=None):
        from lit_rlhf.generation import Rollout

        generation = self.sample(prompt_ids, prompt_mask, sampling)
        if self.engine_logprobs is not None:
            return Rollout(generation, self.engine_logprobs(generation))
        return Rollout(generation, torch.zeros(generation.response_ids.shape))

    def sync_weights(self, policy) -> None:
        pass


def parameters_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> bool:
    """True if any parameter moved (TRL's smoke-test check)."""
    return any(not torch.equal(before[name], p.detach()) for name, p in model.named_parameters())


# Under pytest-xdist (`-n 2`, the default run) each worker takes one core: one torch thread per worker, and
# the command-line runs a test starts inherit it. The tiny models gain little from a second thread.
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Fixed per run, so timings don't vary between tests.
    torch.set_num_threads(THREADS)


# End-to-end tests carry the `slow` mark without anyone remembering to add it: a test is end-to-end when it,
# a fixture it uses, or a helper of its module (transitively) runs a training loop or a command line.
E2E_CALL = re.compile(r"\b(fit|train|cli|run_cli|Popen|check_output)\(|\bsubprocess\.run\(|\.fit\(")


def end_to_end_names(module) -> set[str]:
    """Module-level functions (tests, fixtures, helpers) that start a training loop or a command line."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return set()
    sources = {
        node.name: ast.get_source_segment(inspect.getsource(module), node) or ""
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
    }
    found = {name for name, source in sources.items() if E2E_CALL.search(source)}
    while True:  # helpers that call helpers
        calls = re.compile(r"\b(" + "|".join(map(re.escape, found)) + r")\(") if found else None
        more = {name for name, source in sources.items() if calls and name not in found and calls.search(source)}
        if not more:
            return found
        found |= more


def pytest_collection_modifyitems(config, items):
    by_module: dict = {}
    for item in items:
        module = getattr(item, "module", None)
        if module is None or item.get_closest_marker("slow"):
            continue
        if module not in by_module:
            by_module[module] = end_to_end_names(module)
        names = by_module[module]
        if item.originalname in names or names & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
