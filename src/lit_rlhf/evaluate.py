"""Entry point: `python -m lit_rlhf.evaluate [overrides]` (config: conf/evaluate.yaml)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from lit_rlhf.command import run_command
from lit_rlhf.config import CONFIG_MODULE, check_embedded_task, loggable_config, register_resolvers
from lit_rlhf.data.record_datamodule import eval_loader
from lit_rlhf.errors import ConfigError
from lit_rlhf.evaluation.evaluate import Evaluation, Evaluator, Reference
from lit_rlhf.evaluation.outputs import print_table, write_json, write_jsonl
from lit_rlhf.loggers import close_loggers
from lit_rlhf.models.loading import check_model_paths, load_causal_lm, load_tokenizer
from lit_rlhf.rewards import as_reward

register_resolvers()
log = logging.getLogger("lit_rlhf")

METRICS_FILE, SAMPLES_FILE = "metrics.json", "samples.jsonl"
SPLITS = ("validation", "all")


def prompt_batches(cfg: DictConfig, datamodule):
    """The prompts of `cfg.split`, at most `cfg.num_prompts` of them, in order."""
    if cfg.split not in SPLITS:
        raise ConfigError(f"unknown split '{cfg.split}'; choose one of: {', '.join(SPLITS)}")
    datamodule.setup("validate")
    parts = [datamodule.val_items] if cfg.split == "validation" else [datamodule.train_items, datamodule.val_items]
    remaining = cfg.num_prompts
    for items in parts:
        for batch in eval_loader(items, datamodule.val_batch_size, datamodule.collate, 0, rank=0, world_size=1):
            if remaining is not None:
                if remaining <= 0:
                    return
                if len(batch.prompts) > remaining:
                    batch = type(batch)(
                        batch.input_ids[:remaining],
                        batch.attention_mask[:remaining],
                        batch.prompts[:remaining],
                        batch.columns[:remaining],
                    )
                remaining -= len(batch.prompts)
            yield batch


def load_reference(cfg: DictConfig, policy_tokenizer) -> Reference | None:
    """The reference model of `cfg.reference`, with its own tokenizer (the policy's if its folder has none)."""
    node = cfg.reference
    if node.name_or_path is None:
        return None
    model = load_causal_lm(node.name_or_path, trust_remote_code=node.trust_remote_code, dtype=node.dtype)
    has_tokenizer = not Path(node.name_or_path).is_dir() or (Path(node.name_or_path) / "tokenizer_config.json").exists()
    tokenizer = load_tokenizer(node.name_or_path, node.trust_remote_code) if has_tokenizer else policy_tokenizer
    return Reference(model.eval().requires_grad_(False), tokenizer)


def evaluate(cfg: DictConfig) -> Evaluation:
    """Build what `cfg` names, evaluate, write metrics.json and samples.jsonl into the output folder."""
    L.seed_everything(cfg.seed, workers=True)
    for node in (cfg.model.policy, cfg.reward, cfg.gold_reward):
        if node is not None:
            check_model_paths(node)
    if cfg.samples_per_prompt < 1 or any(not 0 < k <= cfg.samples_per_prompt for k in cfg.ks):
        raise ConfigError(
            f"samples_per_prompt must be >= 1 and every k in ks at most samples_per_prompt; got "
            f"samples_per_prompt={cfg.samples_per_prompt}, ks={list(cfg.ks)}"
        )
    tokenizer = instantiate(cfg.model.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    reward = instantiate(cfg.reward) if cfg.reward is not None else None
    gold_reward = as_reward(instantiate(cfg.gold_reward))
    for judge in (reward, gold_reward):
        if judge is not None and hasattr(datamodule, "column_names"):
            datamodule.setup("validate")
            judge.check_columns(datamodule.column_names(), "the prompt data")
    evaluator = Evaluator(
        instantiate(cfg.model.policy),
        tokenizer,
        reward,
        gold_reward,
        load_reference(cfg, tokenizer),
        instantiate(cfg.sampling),
        instantiate(cfg.generation),
        cfg.samples_per_prompt,
        list(cfg.ks),
        cfg.seed,
        datamodule.max_prompt_length,
    )
    loggers = [instantiate(node) for node in (cfg.logger or {}).values()]
    for logger in loggers:
        logger.log_hyperparams(loggable_config(cfg))
    try:
        result = evaluator.run(prompt_batches(cfg, datamodule))
        if not result.samples:
            raise ConfigError(f"the {cfg.split} split has no prompts to evaluate")
        for logger in loggers:
            logger.log_metrics(result.metrics, step=0)
    except BaseException:
        close_loggers(loggers, "failed")
        raise
    close_loggers(loggers, "success")
    output = Path(cfg.paths.output_dir)
    write_json(output / METRICS_FILE, result.metrics)
    write_jsonl(output / SAMPLES_FILE, result.samples)
    print_table(result.metrics)
    print(f"wrote {output / METRICS_FILE} and {output / SAMPLES_FILE}")
    return result


def run(cfg: DictConfig) -> float | None:
    check_embedded_task(cfg)
    metrics = evaluate(cfg).metrics
    return metrics.get(cfg.optimized_metric)


@hydra.main(version_base="1.3", config_path=CONFIG_MODULE, config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    # One-line errors, signals, the run folder claimed and locked, status.json (lit_rlhf.command).
    return run_command(cfg, run, "evaluate")


if __name__ == "__main__":
    main()
