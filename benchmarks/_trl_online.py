"""Shared plumbing of the online-RL benchmarks against TRL (`bench_trl_rloo_grpo.py`, `bench_trl_ppo.py`).

Each measured run is its own subprocess (`--worker ours|trl`), so peak RSS is per side and nothing is
shared between them; the orchestrator interleaves the two sides, alternating which goes first, and
reports medians. Timing runs between the end of the warm-up iterations and the end of the last one:
episodes (sampled responses) / wall seconds, generation plus update, everything the trainer does
between those two points included (data loading, logging hooks, its own bookkeeping).

Our side is the shipped experiment config composed with Hydra, built the way `lit_rlhf.train.build`
builds it (no logger, no progress bar, no checkpoints); every TRL setting is derived from that
composed config, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
# Config-built Llama for `--model large` (random init, the tiny tokenizer): ~10.6M parameters.
LARGE_LLAMA = dict(
    hidden_size=384,
    intermediate_size=1024,
    num_hidden_layers=6,
    num_attention_heads=6,
    num_key_value_heads=6,
    max_position_embeddings=256,
    tie_word_embeddings=True,
)


# ------------------------------------------------------------------------------------------ process
def configure_process(threads: int) -> None:
    """Same torch threads on both sides (intra-op; inter-op is set once, before any parallel work)."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set in this process
        pass


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def library_versions() -> dict[str, str]:
    import lightning
    import transformers

    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": lightning.__version__,
    }
    try:
        import trl

        versions["trl"] = trl.__version__
    except ImportError:
        pass
    return versions


# ----------------------------------------------------------------------------------------- models
def policy_path(model: str, workdir: Path) -> str:
    """The policy both sides start from: the shipped tiny SFT model, or a config-built ~10M Llama saved once."""
    from lit_rlhf.config import asset_path

    if model == "tiny":
        return asset_path("tiny-sft")
    if model != "large":
        raise SystemExit(f"unknown --model {model!r}; choose tiny or large")
    path = workdir / "large-policy"
    if not (path / "config.json").exists():
        from lit_rlhf.models.loading import build_causal_lm, load_tokenizer

        tokenizer = load_tokenizer(asset_path("tiny-sft"))
        torch.manual_seed(0)
        build_causal_lm(tokenizer, "llama", **LARGE_LLAMA).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return str(path)


def count_parameters(path: str) -> int:
    from lit_rlhf.models.loading import load_causal_lm

    return sum(p.numel() for p in load_causal_lm(path).parameters())


# ------------------------------------------------------------------------------------------- ours
def compose_ours(experiment: str, overrides: Sequence[str] = ()):
    """The shipped experiment's config, as `python -m lit_rlhf.train +experiment=NAME` composes it."""
    from hydra import compose, initialize_config_dir

    from lit_rlhf.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"+experiment={experiment}", *overrides])


def our_overrides(policy: str, seed: int, iterations: int, output_dir: str) -> list[str]:
    """Length in iterations, no validation, logging or checkpoint callbacks; the policy (and reference) at `policy`."""
    return [
        f"seed={seed}",
        f"model.policy.name_or_path={policy}",
        f"trainer.limit_train_batches={iterations}",
        "trainer.val_check_interval=null",
        "+trainer.limit_val_batches=0",
        "+trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "callbacks=none",
        "validate_before_fit=false",
        f"paths.output_dir={output_dir}",
    ]


@dataclass
class Built:
    cfg: object
    module: object
    datamodule: object
    tokenizer: object


def build_ours(cfg) -> Built:
    """Tokenizer, data and module exactly as `lit_rlhf.train.build` makes them (trainer built by the caller)."""
    import lightning as L
    from hydra.utils import instantiate

    from lit_rlhf.train import quiet_third_party_noise

    quiet_third_party_noise()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    tokenizer = instantiate(cfg.model.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    module = instantiate(cfg.module, tokenizer=tokenizer, gold_reward=datamodule.gold_reward)
    return Built(cfg, module, datamodule, tokenizer)


def fit_ours(built: Built, warmup: int) -> dict:
    """`trainer.fit` with an iteration clock; returns the timing and what the rollouts looked like."""
    import lightning as L
    from hydra.utils import instantiate

    class IterationClock(L.Callback):
        def __init__(self):
            self.ends, self.lengths, self.episodes = [], [], 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ends.append(time.perf_counter())
            self.lengths.append(float(trainer.callback_metrics["train/response_length"]))
            self.episodes = len(batch["prompts"].prompts) * pl_module.advantage.samples_per_prompt

    clock = IterationClock()
    trainer = instantiate(built.cfg.trainer, callbacks=[clock], logger=False)
    trainer.fit(built.module, datamodule=built.datamodule)
    return {
        **throughput(clock.ends, clock.episodes, warmup),
        "response_length": statistics.mean(clock.lengths[warmup:]),
    }


# ------------------------------------------------------------------------------------------ timing
def throughput(ends: Sequence[float], episodes_per_iteration: int, warmup: int) -> dict:
    """Episodes per second over the iterations after the `warmup` ones (`warmup` >= 1: the first start is unseen).

    The headline rate uses the median iteration time, which a burst of load from another process on a
    shared machine cannot move much; the rate over the whole timed span is kept beside it.
    """
    if warmup < 1 or len(ends) <= warmup:
        raise RuntimeError(f"{len(ends)} iterations finished; need warmup >= 1 and more than {warmup} of them")
    durations = [b - a for a, b in zip(ends[warmup - 1 : -1], ends[warmup:])]
    return {
        "episodes_per_second": episodes_per_iteration / statistics.median(durations),
        "episodes_per_second_overall": episodes_per_iteration * len(durations) / sum(durations),
        "iteration_seconds": durations,
        "episodes_per_iteration": episodes_per_iteration,
    }


def trl_step_clock(steps_per_iteration: int):
    """A transformers TrainerCallback stamping the end of every iteration (= `steps_per_iteration` optimizer steps)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % steps_per_iteration == 0:
                self.ends.append(time.perf_counter())

    return StepClock()


def drop_console_callbacks(trainer) -> None:
    """No progress bar or printed log lines on the TRL side either (ours runs without them)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)


def fix_length(policy, max_new_tokens: int | None) -> None:
    """`--fixed-length`: no EOS before `max_new_tokens` when this policy samples (None undoes it).

    Both sides sample with transformers' `generate`, which (transformers 5) fills every option a call
    leaves unset from the model's own generation_config, so this reaches ours and TRL's sampling alike.
    """
    policy.generation_config.min_new_tokens = max_new_tokens


# ------------------------------------------------------------------------------------------ reward
class RewardModelScore:
    """A TRL reward function scoring with the same reward model as ours, on the same tokens.

    TRL's built-in path for a model reward decodes the completion *without* its EOS and re-tokenizes
    prompt + completion text; the shipped reward model was trained on sequences ending in EOS and lit-rlhf
    scores it there. So this scores prompt ids + completion ids (EOS included, as TRL hands them over) with
    the model's own sequence-classification forward, which reads the last non-pad token (what TRL's path
    does), and subtracts `missing_eos_penalty` from responses that never stopped, as ours does.
    """

    __name__ = "reward_model"

    def __init__(self, model, tokenizer, missing_eos_penalty: float):
        self.model, self.tokenizer = model, tokenizer
        self.missing_eos_penalty = missing_eos_penalty
        self.lengths: list[float] = []

    @torch.no_grad()
    def __call__(self, prompts, completions, completion_ids, **kwargs) -> list[float]:
        from lit_rlhf.data.collate import pad_right

        prompt_ids = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        ids, mask = pad_right([p + list(c) for p, c in zip(prompt_ids, completion_ids)], self.tokenizer.pad_token_id)
        scores = self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float()
        stopped = torch.tensor([bool(c) and c[-1] == self.tokenizer.eos_token_id for c in completion_ids])
        self.lengths.append(float(sum(len(c) for c in completion_ids)) / len(completion_ids))
        return (scores - self.missing_eos_penalty * (~stopped).float()).tolist()


# -------------------------------------------------------------------------------------------- gold
def gold_reward_of(policy, tokenizer, max_new_tokens: int, prompts: int = 128, seed: int = 1234) -> float:
    """Mean gold reward of responses sampled (fixed seed, temperature 1) for held-out prompts."""
    from lit_rlhf.data.collate import PromptItem, collate_prompts
    from lit_rlhf.data.tokenization import encode_prompts
    from lit_rlhf.ops.generation import SamplingConfig, decode_responses, generate
    from lit_rlhf.task.gold_reward import GoldReward
    from lit_rlhf.task.sources import EmbeddedPrompts

    texts = [r.prompt for r in EmbeddedPrompts(seed=0).load("validation")[:prompts]]
    ids, _ = encode_prompts(tokenizer, texts, 24)
    batch = collate_prompts([PromptItem(i, t) for i, t in zip(ids, texts)], tokenizer.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        generation = generate(
            policy,
            batch.input_ids,
            batch.attention_mask,
            SamplingConfig(max_new_tokens=max_new_tokens),
            [tokenizer.eos_token_id],
            tokenizer.pad_token_id,
        )
    return float(GoldReward()(texts, decode_responses(tokenizer, generation)).mean())


# ------------------------------------------------------------------------------ scripted rollouts
class ScriptedGenerate:
    """Make `policy.generate` return pre-sampled responses, so both trainers see identical rollouts.

    Rows are matched by prompt (the real prompt tokens, padding ignored); a prompt's responses are handed
    out in order. Wraps both HF return styles: a tensor, or (TRL PPO) `return_dict_in_generate` with
    `output_scores`, whose scores are then the policy's logits at each response position.
    """

    def __init__(self, policy, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor, pad):
        self.policy, self.pad, self.response_ids = policy, pad, response_ids
        self.rows: dict[tuple, list[int]] = {}
        for row, (ids, mask) in enumerate(zip(prompt_ids, prompt_mask)):
            self.rows.setdefault(tuple(ids[mask.bool()].tolist()), []).append(row)
        self.served: list[int] = []  # which pre-sampled row each generated row was, in the order asked for

    def __enter__(self):
        self.policy.generate = self.generate
        return self

    def __exit__(self, *exc):
        del self.policy.generate

    def generate(self, input_ids, attention_mask, return_dict_in_generate=False, output_scores=False, **kwargs):
        rows = [self.rows[tuple(ids[mask.bool()].tolist())].pop(0) for ids, mask in zip(input_ids, attention_mask)]
        self.served.extend(rows)
        responses = self.response_ids[rows]
        sequences = torch.cat([input_ids, responses], dim=1)
        if not return_dict_in_generate:
            return sequences
        from types import SimpleNamespace

        from lit_rlhf.ops.forward import causal_lm_logits

        full_mask = torch.cat([attention_mask.long(), (responses != self.pad).long()], dim=1)
        with torch.no_grad():
            logits = causal_lm_logits(self.policy, sequences, full_mask)[:, input_ids.shape[1] - 1 : -1]
        return SimpleNamespace(sequences=sequences, scores=tuple(logits.unbind(1)))


def sample_rollout(policy, tokenizer, prompts: Sequence[str], repeats: int, max_new_tokens: int, seed: int):
    """One batch of prompts (each repeated `repeats` times) and responses sampled from `policy`."""
    from lit_rlhf.data.collate import PromptItem, collate_prompts
    from lit_rlhf.data.tokenization import encode_prompts
    from lit_rlhf.ops.generation import SamplingConfig, generate

    ids, _ = encode_prompts(tokenizer, prompts, 24)
    batch = collate_prompts([PromptItem(i, p) for i, p in zip(ids, prompts)], tokenizer.pad_token_id)
    prompt_ids, prompt_mask = (
        batch.input_ids.repeat_interleave(repeats, 0),
        batch.attention_mask.repeat_interleave(repeats, 0),
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        generation = generate(
            policy,
            prompt_ids,
            prompt_mask,
            SamplingConfig(max_new_tokens=max_new_tokens),
            [tokenizer.eos_token_id],
            tokenizer.pad_token_id,
        )
    return batch, prompt_ids, prompt_mask, generation


def compare(name: str, ours: float, peer: float) -> dict:
    return {"what": name, "ours": ours, "trl": peer, "abs_diff": abs(ours - peer)}


def max_diff(name: str, diff: torch.Tensor) -> dict:
    """An elementwise comparison: the largest |ours - TRL| (no single value per side)."""
    return {"what": name, "ours": None, "trl": None, "abs_diff": float(diff.abs().max())}


def flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def gradient_agreement(ours: torch.Tensor, peer: torch.Tensor) -> dict:
    """Cosine and norm ratio of two flattened gradients of the same parameters."""
    cosine = torch.nn.functional.cosine_similarity(ours.double(), peer.double(), dim=0)
    return {"cosine": float(cosine), "norm_ours": float(ours.norm()), "norm_trl": float(peer.norm())}


# ---------------------------------------------------------------------------------- orchestration
def run_worker(script: Path, args: Sequence[str], threads: int) -> dict:
    """Run `script --worker ...` in a fresh interpreter (this venv) and return the JSON it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(script), *args, "--out", str(out)], env=env, capture_output=True, text=True
        )
        if proc.returncode != 0 or not out.exists():
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise SystemExit(f"worker {' '.join(args)} failed (exit {proc.returncode})")
        result = json.loads(out.read_text())
        result["process_seconds"] = time.perf_counter() - started
        # The machine is shared: the 1-minute load average around the run says how contended it was.
        result["load_average_1min"] = [load_before, os.getloadavg()[0]]
        return result


def interleaved(script: Path, common: Sequence[str], repeats: int, threads: int, seed: int) -> dict[str, list]:
    """`repeats` rounds of ours and TRL, alternating which side goes first; seed + round for both sides."""
    runs = {"ours": [], "trl": []}
    for round_ in range(repeats):
        order = ("ours", "trl") if round_ % 2 == 0 else ("trl", "ours")
        for side in order:
            result = run_worker(script, ["--worker", side, *common, "--seed", str(seed + round_)], threads)
            runs[side].append(result)
            print(
                f"  round {round_ + 1}/{repeats} {side:4s}: {result['episodes_per_second']:7.1f} episodes/s, "
                f"peak RSS {result['peak_rss_mib']:.0f} MiB, response length {result['response_length']:.1f}",
                flush=True,
            )
    return runs


def summarize(runs: dict[str, list]) -> dict:
    """Medians per side and the ratio of the medians (ours / TRL episodes per second)."""
    keys = ("episodes_per_second", "episodes_per_second_overall", "peak_rss_mib", "response_length", "gold_reward")
    summary = {
        side: {key: statistics.median(r[key] for r in results) for key in keys if key in results[0]}
        for side, results in runs.items()
    }
    summary["ratio_ours_over_trl"] = summary["ours"]["episodes_per_second"] / summary["trl"]["episodes_per_second"]
    return summary


def write_results(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def markdown_row(name: str, model: str, summary: dict, check: str) -> str:
    ours, trl = summary["ours"], summary["trl"]
    return (
        f"| {name} | {model} | {ours['episodes_per_second']:.1f} | {trl['episodes_per_second']:.1f} | "
        f"{summary['ratio_ours_over_trl']:.2f}x | {ours['peak_rss_mib']:.0f} / {trl['peak_rss_mib']:.0f} MiB | "
        f"{check} |"
    )


def learning_line(name: str, summary: dict, iterations: int) -> str:
    """Gold reward of the final policies and the mean response lengths, beside the speed row."""
    ours, trl = summary["ours"], summary["trl"]
    return (
        f"{name}: gold reward after {iterations} iterations (median over runs) ours {ours['gold_reward']:.2f}, "
        f"TRL {trl['gold_reward']:.2f}; mean response length ours {ours['response_length']:.1f}, "
        f"TRL {trl['response_length']:.1f} tokens"
    )


MARKDOWN_HEADER = (
    "| benchmark | model | ours (episodes/s) | TRL (episodes/s) | ours / TRL | peak RSS ours / TRL "
    "| first-step check |\n"
    "|---|---|---|---|---|---|---|"
)
