"""Shared fixtures: tiny configs composed in-process, so end-to-end tests take seconds and never touch a network."""

from __future__ import annotations

import csv
import os
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

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from lit_rlhf.config import CONFIG_DIR, register_resolvers  # noqa: E402

register_resolvers()

# Small everything: 2 training batches, 1 validation batch, short samples, CSV logging only.
FAST = [
    "logger=csv",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.val_check_interval=null",
    "trainer.log_every_n_steps=1",
    "~callbacks.progress_bar",
    "+trainer.enable_progress_bar=false",
    "validate_before_fit=false",
]


def compose_config(experiment: str | None, output_dir: Path, overrides: list[str] = ()) -> DictConfig:
    """The run config of `+experiment=...` with FAST settings, writing under `output_dir`."""
    chosen = [f"+experiment={experiment}"] if experiment else []
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*chosen, *FAST, f"paths.output_dir={output_dir}", *overrides])


def compose_named(config_name: str, output_dir: Path, overrides: list[str] = ()) -> DictConfig:
    """Another command's config (`evaluate`, `generate`), writing under `output_dir`."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=[f"paths.output_dir={output_dir}", *overrides])


# FAST for the command line: `+key` where the key is new, small batches.
CLI_FAST = [arg for arg in FAST if not arg.startswith("~")] + [
    "~callbacks.progress_bar",
    "data.batch_size=4",
    "data.val_batch_size=8",
]


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


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Two cores: torch's default intra-op threads already match; fix them so timings don't vary between tests.
    torch.set_num_threads(2)
