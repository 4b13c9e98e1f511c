"""Entry point: `python -m lit_rlhf.generate [overrides]` (config: conf/generate.yaml).

Every prompt of `data.path` (its `split`, or all splits) gets `n` sampled completions, written as JSON
lines: the row's other columns, `prompt` (the text the model saw: a chat rendered by its template),
`completion` and `sample` (0..n-1).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from lit_rlhf.command import run_command
from lit_rlhf.config import CONFIG_MODULE, check_embedded_task, register_resolvers
from lit_rlhf.data.records import PromptRecord
from lit_rlhf.errors import ConfigError
from lit_rlhf.evaluation.generate import generate_completions
from lit_rlhf.evaluation.outputs import write_jsonl
from lit_rlhf.models.loading import check_model_paths

register_resolvers()
log = logging.getLogger("lit_rlhf")


def read_prompts(source, split: str) -> list[PromptRecord]:
    """Every prompt record of `split` (or of every split, for `all`)."""
    available = source.splits()
    if split != "all" and split not in available:
        raise ConfigError(f"unknown split '{split}'; choose one of: all, {', '.join(available)}")
    return [record for name in (available if split == "all" else [split]) for record in source.load(name)]


def generate(cfg: DictConfig) -> Path:
    L.seed_everything(cfg.seed, workers=True)
    check_model_paths(cfg.model.policy)
    if cfg.n < 1 or cfg.batch_size < 1:
        raise ConfigError(f"n and batch_size must be positive integers, got n={cfg.n}, batch_size={cfg.batch_size}")
    output = Path(cfg.output).expanduser()
    if output.exists() and not cfg.overwrite:
        raise ConfigError(f"{output} exists; choose another output=<file>, or overwrite=true to replace it")
    tokenizer = instantiate(cfg.model.tokenizer)
    records = read_prompts(instantiate(cfg.data.source), cfg.split)
    policy = instantiate(cfg.model.policy).eval().requires_grad_(False)
    engine = instantiate(cfg.generation)(
        policy=policy, stop_token_ids=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id
    )
    rows: Iterator[dict] = generate_completions(
        engine,
        tokenizer,
        tqdm(records, desc="generating", unit="prompt"),
        instantiate(cfg.sampling),
        n=cfg.n,
        batch_size=cfg.batch_size,
        max_prompt_length=cfg.data.max_prompt_length,
        seed=cfg.seed,
    )
    write_jsonl(output, rows)
    print(f"wrote {len(records) * cfg.n} completions of {len(records)} prompts to {output}")
    return output


def run(cfg: DictConfig) -> None:
    check_embedded_task(cfg)
    with torch.no_grad():
        generate(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_MODULE, config_name="generate")
def main(cfg: DictConfig) -> None:
    # One-line errors, signals, the run folder claimed and locked, status.json (lit_rlhf.command).
    run_command(cfg, run, "generate")


if __name__ == "__main__":
    main()
