"""What the benchmarks against TRL share: step timing, memory, data order, models, interleaved subprocess runs.

Not a command: `bench_trl_dpo.py` and `bench_trl_reward.py` use it. Each side of a comparison runs in
its own subprocess (so its peak RSS is its own), repetitions alternate which side goes first (so a
burst of load from another process on the shared machine hits both sides alike), and the reported
numbers are medians over repetitions. Both sides see the same records in the same order: the order
our shuffled loader yields, handed to TRL with its sequential sampler.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

# Nothing may reach the network: set before transformers / datasets / TRL are imported.
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SIDES = ("ours", "trl")
SEED = 0
# The embedded task's sequences (prompt <= 16 tokens, prompt + response <= 45): nothing is truncated.
MAX_LENGTH, MAX_PROMPT_LENGTH = 64, 24


# ------------------------------------------------------------------ timing and memory, in a worker
@dataclass
class StepWindow:
    """Wall time of training steps `warmup` .. last, the loss of every step, and first-step metrics.

    The window opens when step `warmup` starts and closes when the last step ends, so it holds the
    steady-state steps with everything between them (data loading, logging, the optimizer), and no
    setup. Each step's cycle (its start to the next one's) is kept too: their median shrugs off a
    burst of load from other processes; so does the CPU time of the process over the window (all
    its threads), which counts work rather than waiting.
    """

    warmup: int
    pairs_per_step: int
    begins: list = field(default_factory=list)
    end: float | None = None
    cpu_start: float | None = None
    cpu_end: float | None = None
    losses: list = field(default_factory=list)
    first_step: dict = field(default_factory=dict)
    first_records: list = field(default_factory=list)
    pending_loss: object = None

    @property
    def steps(self) -> int:
        return len(self.losses)

    def step_begin(self) -> None:
        if len(self.begins) == self.warmup:
            self.cpu_start = time.process_time()
        self.begins.append(time.perf_counter())

    def step_end(self, loss) -> None:
        self.end, self.cpu_end = time.perf_counter(), time.process_time()
        self.losses.append(loss.detach())  # a reference, no .item(): nothing waits on it

    def summary(self) -> dict:
        timed = self.steps - self.warmup
        if timed < 1:
            raise RuntimeError(f"only {self.steps} steps ran; need more than warmup={self.warmup}")
        seconds = self.end - self.begins[self.warmup]
        cycles = [b - a for a, b in zip(self.begins[self.warmup :], self.begins[self.warmup + 1 :])]
        median_cycle = statistics.median(cycles + [self.end - self.begins[-1]])
        return {
            "timed_steps": timed,
            "seconds": seconds,
            "pairs_per_second": timed * self.pairs_per_step / seconds,
            "seconds_per_step": seconds / timed,
            "pairs_per_second_by_median_step": self.pairs_per_step / median_cycle,
            "pairs_per_cpu_second": timed * self.pairs_per_step / (self.cpu_end - self.cpu_start),
            "losses": [float(x) for x in self.losses],
            "first_step": self.first_step,
        }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def write_worker_result(path: str, window: StepWindow, rss_before_training_mb: float, **extra) -> None:
    result = window.summary() | {"rss_before_training_mb": rss_before_training_mb, "peak_rss_mb": peak_rss_mb()}
    Path(path).write_text(json.dumps(result | extra))


# ------------------------------------------------------------------ our side
def preference_datamodule(tokenizer, batch_size: int):
    """Our datamodule on the embedded pairs, as the `task_pairs` data config builds it."""
    from lit_rlhf.data.datamodules import PreferenceDataModule
    from lit_rlhf.task.sources import EmbeddedPreferencePairs

    return PreferenceDataModule(
        EmbeddedPreferencePairs(SEED),
        tokenizer,
        batch_size=batch_size,
        val_batch_size=batch_size,
        max_length=MAX_LENGTH,
        max_prompt_length=MAX_PROMPT_LENGTH,
        train_split="train",
        val_split="validation",
        val_fraction=0.05,
        seed=SEED,
    )


def record_indices(batch) -> list[int]:
    """Training-record indices of a pairwise batch: completion ids count from 0, two per record."""
    return (batch.sequence_ids[::2] // 2).tolist()


def training_order(tokenizer, batch_size: int, steps: int) -> list[int]:
    """Indices of the training records in the order our shuffled loader yields them."""
    datamodule = preference_datamodule(tokenizer, batch_size)
    datamodule.setup()
    return [i for batch, _ in zip(datamodule.train_dataloader(), range(steps)) for i in record_indices(batch)]


def lightning_trainer(steps: int, window: StepWindow, first_step_metrics: tuple[str, ...]):
    """A Lightning Trainer as `conf/trainer/cpu.yaml` builds it, without validation, logger or checkpoints.

    Its callback times every step into `window`, and at the first step keeps the batch's records and
    the logged `train/<name>` values of `first_step_metrics`.
    """
    import lightning as L

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            window.step_begin()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            window.step_end(outputs["loss"])
            if batch_idx == 0:
                window.first_records.extend(record_indices(batch))
                metrics = trainer.callback_metrics
                window.first_step.update({name: float(metrics[f"train/{name}"]) for name in first_step_metrics})

    return L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        callbacks=[Timer()],
    )


def check_first_batch(window: StepWindow, order: list[int]) -> None:
    if window.first_records != order[: len(window.first_records)]:
        raise RuntimeError("our first batch is not the planned one: the two sides would see different data")


# ------------------------------------------------------------------ TRL's side
def trl_arguments(args, output_dir: str) -> dict:
    """TrainingArguments that make a TRL trainer do what ours does (TRL's own defaults differ where noted)."""
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",  # torch.optim.AdamW as ours; TRL's default is the fused variant
        weight_decay=0.0,
        max_grad_norm=0.0,  # no clipping, as Lightning's default; TRL's default clips at 1.0
        max_length=MAX_LENGTH,
        gradient_checkpointing=False,  # TRL's default is on; ours never checkpoints
        bf16=False,  # TRL's default is bf16 autocast; ours trains in fp32 (precision 32-true)
        use_cpu=True,
        seed=SEED,
        train_sampling_strategy="sequential",  # the dataset is already in our shuffled order
        dataloader_num_workers=0,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )


def trl_preference_dataset(order: list[int]):
    """The embedded training pairs `order` lists, as the text columns TRL tokenizes itself."""
    from datasets import Dataset

    from lit_rlhf.task.sources import EmbeddedPreferencePairs

    records = EmbeddedPreferencePairs(SEED).load("train")
    rows = [records[i] for i in order]
    return Dataset.from_dict({key: [getattr(r, key) for r in rows] for key in ("prompt", "chosen", "rejected")})


def hf_timer(window: StepWindow):
    """A transformers TrainerCallback feeding `window`; the loss comes from `recording_trainer`."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            window.step_begin()

        def on_step_end(self, args, state, control, **kwargs):
            window.step_end(window.pending_loss)

    return Timer()


def recording_trainer(trainer_cls, window: StepWindow, first_step_metrics: dict[str, str]):
    """`trainer_cls` whose compute_loss hands its loss to `window`, and at step 0 some of TRL's own metrics.

    `first_step_metrics` maps our metric names to keys of TRL's `_metrics["train"]`.
    """

    class Recording(trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            window.pending_loss = loss[0] if return_outputs else loss
            if window.steps == 0 and not window.first_step:
                logged = self._metrics["train"]
                window.first_step.update({ours: logged[key][-1] for ours, key in first_step_metrics.items()})
            return loss

    return Recording


# ------------------------------------------------------------------ models
def build_large_model(kind: str, out_dir: str, hidden: int, layers: int) -> str:
    """A randomly initialised Llama with the tiny tokenizer, saved to `out_dir` (kind: "causal-lm" or "reward").

    Heads of 64 dimensions, an MLP of 8/3 hidden (Llama's ratio, rounded up to 64), tied embeddings.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

    from lit_rlhf.config import asset_path
    from lit_rlhf.models.loading import load_tokenizer

    tokenizer = load_tokenizer(asset_path("tiny-sft"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=(hidden * 8 // 3 + 63) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        num_labels=1,
    )
    torch.manual_seed(SEED)
    model_cls = AutoModelForCausalLM if kind == "causal-lm" else AutoModelForSequenceClassification
    model_cls.from_config(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def parameter_count(path: str) -> int:
    """Parameters of a saved model, read from its safetensors header (tied weights once)."""
    from safetensors import safe_open

    with safe_open(str(Path(path) / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())


# ------------------------------------------------------------------ the parent
def add_arguments(parser: argparse.ArgumentParser, tiny: tuple[int, int], large: tuple[int, int], lr: float) -> None:
    """Flags both benchmarks take; `tiny` and `large` are the default (batch size, steps) of each model."""
    parser.add_argument("--repeats", type=int, default=3, help="runs per side and model (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads, both sides")
    parser.add_argument("--models", default="tiny,large", help="comma-separated: tiny, large")
    parser.add_argument("--tiny-batch-size", type=int, default=tiny[0])
    parser.add_argument("--tiny-steps", type=int, default=tiny[1])
    parser.add_argument("--large-batch-size", type=int, default=large[0])
    parser.add_argument("--large-steps", type=int, default=large[1])
    parser.add_argument("--large-hidden", type=int, default=384)
    parser.add_argument("--large-layers", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--output", help="results/<output>.json (default: the benchmark's name)")
    # One side, one model, one process: set by the parent.
    for name, kind in (("worker", str), ("model-path", str), ("batch-size", int), ("steps", int)):
        parser.add_argument(f"--{name}", type=kind, help=argparse.SUPPRESS)
    for name, kind in (("plan", str), ("result", str), ("gold", int)):
        parser.add_argument(f"--{name}", type=kind, help=argparse.SUPPRESS)


@dataclass(frozen=True)
class ModelSpec:
    """One model a benchmark runs on, with the batch size and steps that go with its size."""

    name: str
    path: str
    params: int
    batch_size: int
    steps: int


def tiny_model(kind: str, workdir: str) -> str:
    """The shipped tiny SFT policy; for a reward model, with a new scalar head saved once, as `rm_tiny` starts."""
    import torch

    from lit_rlhf.config import asset_path
    from lit_rlhf.models.loading import load_reward_model, load_tokenizer

    if kind == "causal-lm":
        return asset_path("tiny-sft")
    torch.manual_seed(SEED)
    out_dir = f"{workdir}/tiny-reward-init"
    load_reward_model(asset_path("tiny-sft")).save_pretrained(out_dir)
    load_tokenizer(asset_path("tiny-sft")).save_pretrained(out_dir)
    return out_dir


def model_specs(args, workdir: str, kind: str) -> list[ModelSpec]:
    """The models of `args.models`: kind "causal-lm" (DPO) or "reward"."""
    specs = []
    for name in args.models.split(","):
        if name == "tiny":
            path, batch, steps = tiny_model(kind, workdir), args.tiny_batch_size, args.tiny_steps
        elif name == "large":
            path = build_large_model(kind, f"{workdir}/large", args.large_hidden, args.large_layers)
            batch, steps = args.large_batch_size, args.large_steps
        else:
            raise SystemExit(f"unknown model {name!r}: use tiny and/or large")
        specs.append(ModelSpec(name, path, parameter_count(path), batch, steps))
    return specs


def run_worker(script: str, side: str, spec: ModelSpec, args, plan: Path, gold: int) -> dict:
    """Run one side on one model in a fresh process; return its result."""
    # Passive OpenMP waits: on a shared machine, threads that spin at every barrier while another
    # process holds the core make each op several times slower, at random (measured: 2-10x at 2 threads).
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OMP_WAIT_POLICY="PASSIVE")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = handle.name
    flags = {"worker": side, "model-path": spec.path, "batch-size": spec.batch_size, "steps": spec.steps}
    flags |= {"threads": threads, "warmup": args.warmup, "lr": args.lr, "plan": plan, "result": result_path}
    command = [sys.executable, script, *[str(x) for k, v in flags.items() for x in (f"--{k}", v)]]
    command += ["--gold", str(gold), *getattr(args, "worker_flags", [])]
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout[-5000:] + completed.stderr[-10000:])
        raise RuntimeError(f"{side} worker on {spec.name} failed (exit {completed.returncode})")
    result = json.loads(Path(result_path).read_text())
    os.unlink(result_path)
    return result | {"process_seconds": time.perf_counter() - started, "load_average_after": os.getloadavg()[0]}


def benchmark_model(script: str, args, spec: ModelSpec, workdir: str, gold: int, gold_before=None) -> dict:
    """Both sides on one model, `args.repeats` times interleaved.

    On the tiny model the first repetition's workers measure the gold metric after training on `gold`
    held-out examples, and `gold_before(path)` measures it on the initial model.
    """
    from lit_rlhf.models.loading import load_tokenizer

    plan = Path(workdir) / f"plan-{spec.name}.json"
    plan.write_text(json.dumps(training_order(load_tokenizer(spec.path), spec.batch_size, spec.steps)))
    print(f"{spec.name}: {spec.params / 1e6:.2f}M parameters, batch {spec.batch_size}, {spec.steps} steps", flush=True)
    runs = {side: [] for side in SIDES}
    for repetition in range(args.repeats):
        for side in SIDES if repetition % 2 == 0 else SIDES[::-1]:
            result = run_worker(script, side, spec, args, plan, gold if spec.name == "tiny" and not repetition else 0)
            runs[side].append(result)
            print(
                f"  [{repetition + 1}/{args.repeats}] {side:4s} {result['pairs_per_second']:8.1f} pairs/s "
                f"(by median step {result['pairs_per_second_by_median_step']:6.1f}, "
                f"per CPU-second {result['pairs_per_cpu_second']:6.1f}), "
                f"peak RSS {result['peak_rss_mb']:.0f} MB ({result['process_seconds']:.0f} s, "
                f"load {result['load_average_after']:.1f})",
                flush=True,
            )
    entry = {"params": spec.params, "batch_size": spec.batch_size, "steps": spec.steps, "warmup_steps": args.warmup}
    entry |= {"summary": summarize(runs), "agreement": agreement(runs["ours"][0], runs["trl"][0]), "runs": runs}
    if spec.name == "tiny" and gold and gold_before is not None:
        entry["agreement"]["gold"]["before_training"] = gold_before(spec.path)
    return entry


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Medians per side, and the ratio ours / TRL in throughput (> 1: ours is faster)."""
    keys = ("pairs_per_second", "pairs_per_second_by_median_step", "pairs_per_cpu_second")
    keys += ("peak_rss_mb", "rss_before_training_mb")
    summary = {
        side: {f"{k}_median": statistics.median(r[k] for r in results) for k in keys} for side, results in runs.items()
    }
    for side, results in runs.items():
        summary[side]["pairs_per_second_runs"] = [r["pairs_per_second"] for r in results]
    ours, trl = summary["ours"], summary["trl"]
    summary["throughput_ratio_ours_over_trl"] = ours["pairs_per_second_median"] / trl["pairs_per_second_median"]
    for key in ("pairs_per_second_by_median_step", "pairs_per_cpu_second"):
        summary[f"ratio_{key}"] = ours[f"{key}_median"] / trl[f"{key}_median"]
    return summary


def agreement(ours: dict, trl: dict) -> dict:
    """The two sides' per-step training losses on the same batches, and the first step's metrics."""
    diffs = [abs(a - b) for a, b in zip(ours["losses"], trl["losses"])]
    return {
        "first_step_loss": {"ours": ours["losses"][0], "trl": trl["losses"][0]},
        "first_step_abs_diff": diffs[0],
        "max_abs_diff_over_steps": max(diffs),
        "per_step_abs_diff": diffs,
        "first_step_metrics": {"ours": ours["first_step"], "trl": trl["first_step"]},
        "gold": {side: r["gold"] for side, r in (("ours", ours), ("trl", trl)) if "gold" in r},
    }


def environment(threads: int) -> dict:
    versions = {}
    for package in ("torch", "transformers", "trl", "lightning", "accelerate", "datasets"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "omp_wait_policy": "PASSIVE",
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": os.getloadavg(),
        "note": "shared machine, other processes running: compare the ratios, not absolute numbers",
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def report(benchmark: str, args, per_model: dict, environment_: dict, gold_name: str) -> int:
    """Write results/<name>.json, print the README rows and the agreement; 1 when the first-step check fails."""
    environment_["load_average_at_end"] = os.getloadavg()
    settings = {k: v for k, v in vars(args).items() if v is not None and k not in ("worker", "result", "plan")}
    path = RESULTS_DIR / f"{args.output or benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": benchmark, "environment": environment_, "settings": settings, "models": per_model}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print("| benchmark | model | ours (pairs/s) | TRL (pairs/s) | ours / TRL | peak RSS MB ours / TRL |")
    print("|---|---|---|---|---|---|")
    for name, entry in per_model.items():
        s = entry["summary"]
        print(
            f"| {benchmark} | {name} ({entry['params'] / 1e6:.2f}M, batch {entry['batch_size']}) "
            f"| {s['ours']['pairs_per_second_median']:.1f} | {s['trl']['pairs_per_second_median']:.1f} "
            f"| **{s['throughput_ratio_ours_over_trl']:.2f}x** "
            f"| {s['ours']['peak_rss_mb_median']:.0f} / {s['trl']['peak_rss_mb_median']:.0f} |"
        )
    failed = False
    for name, entry in per_model.items():
        a = entry["agreement"]
        loss = a["first_step_loss"]
        print(
            f"{name}: first-step loss ours {loss['ours']:.6f} TRL {loss['trl']:.6f}, "
            f"|diff| {a['first_step_abs_diff']:.1e}"
            f"; max |diff| over {len(a['per_step_abs_diff'])} steps {a['max_abs_diff_over_steps']:.1e}"
            f"; first-step metrics {a['first_step_metrics']}"
        )
        if a["gold"]:
            print(f"{name}: {gold_name} {a['gold']}")
        failed |= a["first_step_abs_diff"] > 1e-4
    print(f"wrote {path}")
    if failed:
        print("FAILED: the first-step losses differ by more than 1e-4", file=sys.stderr)
    return int(failed)
