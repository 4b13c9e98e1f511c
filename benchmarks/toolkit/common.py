"""What the benchmarks share: data, models, gold scores, step clocks, our configs, worker processes, tables.

Not a command. Each side of a `Comparison` trains in its own subprocess (its own peak RSS), rounds alternate
which side goes first (a burst of load from a neighbour hits both alike), and tables give medians of rounds.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

# Nothing may reach the network: set before transformers, datasets or TRL are imported.
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TRL_EXPERIMENTAL_SILENCE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Only the light parts of lit-rlhf here (no Lightning, no Hydra): TRL's side imports this module too.
from lit_rlhf.data.collate import PromptItem, collate_prompts  # noqa: E402
from lit_rlhf.data.tokenization import encode_prompts  # noqa: E402
from lit_rlhf.models.loading import load_causal_lm, load_reward_model, load_tokenizer  # noqa: E402
from lit_rlhf.modules.common import seeded_samples  # noqa: E402
from lit_rlhf.ops.forward import causal_lm_logits  # noqa: E402
from lit_rlhf.ops.generation import SamplingConfig  # noqa: E402
from lit_rlhf.task.gold_reward import GoldReward  # noqa: E402
from lit_rlhf.task.sources import EmbeddedPrompts  # noqa: E402
from toolkit.flops import FlopCounter, flop_summary, matmul_peak  # noqa: E402, F401 (matmul_peak: for bench_trl.py)

BENCHMARKS = Path(__file__).resolve().parents[1]
# Where every benchmark writes its results: outside the tree (outputs/ is ignored); the docs' Results pages
# summarise them.
RESULTS = BENCHMARKS.parent / "outputs" / "benchmarks"
SEED = 0
# As the data configs: the embedded task's sequences (prompt <= 16 tokens, prompt + response <= 45) fit whole.
MAX_LENGTH, MAX_PROMPT_LENGTH = 64, 24
SAMPLING = SamplingConfig(max_new_tokens=40, temperature=1.0, top_k=0, top_p=1.0)
# `--model large`: a randomly initialised Llama with the tiny tokenizer, 10.8M parameters.
# 512 positions: the long-prompt pairs reach 480 tokens (RoPE has no weights: the same model as at 256).
LARGE_LLAMA = dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, max_position_embeddings=512)
LARGE_LLAMA |= dict(num_attention_heads=6, num_key_value_heads=6, tie_word_embeddings=True)
# Every TRL trainer: fp32 on the CPU as ours (TRL defaults to bf16 autocast and gradient checkpointing),
# no reporting, saving, progress bar or dataloader workers.
TRL_PLAIN = dict(use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[], save_strategy="no")
TRL_PLAIN |= dict(disable_tqdm=True, dataloader_num_workers=0)
RATES = ("rate", "rate_by_median_step", "rate_per_cpu_second")


# ------------------------------------------------------------------------------------ data, models
def embedded_prompts(split: str, seed: int = SEED, count: int | None = None) -> list[str]:
    """The embedded task's prompts (the task, and so its prompts, depends on the seed)."""
    return [r.prompt for r in EmbeddedPrompts(seed).load(split)[:count]]


def prompt_batch(tokenizer, texts: list[str]):
    """A left-padded PromptBatch of `texts`, as our prompt loader collates them."""
    ids, _ = encode_prompts(tokenizer, texts, MAX_PROMPT_LENGTH)
    return collate_prompts([PromptItem(row, text) for row, text in zip(ids, texts)], tokenizer.pad_token_id)


def compose_train(overrides: list[str]):
    """The config `python -m lit_rlhf.train OVERRIDES` composes."""
    from hydra import compose, initialize_config_dir

    from lit_rlhf.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def preference_datamodule(tokenizer, batch_size: int, data: list[str] = ("data=task_pairs",)):
    """Our datamodule on the pairs that the `data` overrides choose (the embedded ones), seed 0; set up."""
    from hydra.utils import instantiate

    sizes = [f"data.batch_size={batch_size}", f"data.val_batch_size={batch_size}"]
    datamodule = instantiate(compose_train([*data, f"seed={SEED}", *sizes]).data, tokenizer=tokenizer)
    datamodule.setup()
    return datamodule


def model_path(kind: str, model: str, workdir: str) -> str:
    """The model both sides start from ("causal-lm" or "reward"), saved once under `workdir` if built here.

    tiny: the shipped SFT policy; as a reward model with a new scalar head, as `rm_tiny` starts.
    large: a random Llama (LARGE_LLAMA) with the tiny tokenizer.
    """
    from lit_rlhf.config import asset_path
    from lit_rlhf.models.loading import build_causal_lm, build_reward_model

    path, sft = Path(workdir) / f"{model}-{kind}", asset_path("tiny-sft")
    if model == "tiny" and kind == "causal-lm":
        return sft
    if not path.exists():
        torch.manual_seed(SEED)
        build = build_causal_lm if kind == "causal-lm" else build_reward_model
        built = load_reward_model(sft) if model == "tiny" else build(load_tokenizer(sft), "llama", **LARGE_LLAMA)
        built.save_pretrained(path)
        load_tokenizer(sft).save_pretrained(path)
    return str(path)


def load_model(kind: str, path: str):
    return (load_causal_lm if kind == "causal-lm" else load_reward_model)(path), load_tokenizer(path)


# -------------------------------------------------------------------------------------------- gold
def gold_reward_of_samples(policy, tokenizer, seed: int, prompts: int = 128) -> float:
    """Mean gold reward of responses sampled under `seed` (temperature 1, 40 tokens) to held-out prompts."""
    texts = embedded_prompts("validation", count=prompts)
    batch, stop = prompt_batch(tokenizer, texts), [tokenizer.eos_token_id]
    _, responses = seeded_samples(policy.eval(), tokenizer, batch.input_ids, batch.attention_mask, SAMPLING, stop, seed)
    return float(GoldReward()(texts, responses).mean())


@torch.no_grad()
def gold_accuracy(model, tokenizer, pairs: int = 1000) -> float:
    """How often a reward model orders the first `pairs` validation pairs as the gold reward does (ties left out)."""
    from lit_rlhf.losses.reward import BradleyTerryLoss
    from lit_rlhf.modules.reward_model import RewardModel
    from lit_rlhf.regularizers.nll import NoNLL

    scorer = RewardModel(
        model.eval(),
        BradleyTerryLoss(),
        0.0,
        None,
        False,
        NoNLL(),
        prefix_sharing=False,
        padding_free=False,
        padding_free_row_length=None,
        gold_reward=GoldReward(),
    )
    datamodule = preference_datamodule(tokenizer, batch_size=256)
    datamodule.val_items = datamodule.val_items[:pairs]
    agreement = [scorer.gold_agreement(b, *scorer.pair_rewards(b)) for b in datamodule.val_dataloader()]
    return float(torch.cat(agreement).mean())


# ------------------------------------------------------------------------------------------ timing
def memory_mib(field: str) -> float:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM).

    Not ru_maxrss: a process spawned from a larger one starts with the parent's peak as its own.
    """
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1]) / 1024


class Clock:
    """Wall and CPU time at the end of every step (so what runs between steps is in, setup is not), and metrics.

    Rates: over all timed steps; of the median step, which a burst of load from another process barely
    moves; per CPU-second of the process, which counts work rather than waiting.
    """

    def __init__(self, counter: FlopCounter | None = None, peak: dict | None = None):
        """`counter`: count tokens and model FLOPs of every step (see _flops.py); `peak`: matmul FLOP/s by dtype."""
        self.walls, self.cpus, self.metrics, self.pending = [], [], {}, {}
        self.rss_before, self.first_batch, self.counter, self.peak = None, None, counter, peak

    def start(self) -> None:
        self.rss_before = memory_mib("VmRSS")
        if self.counter:
            self.counter.patch().start()  # for the rest of this worker process

    def tick(self, **metrics) -> None:
        self.walls.append(time.perf_counter())
        self.cpus.append(time.process_time())
        metrics |= self.counter.take() if self.counter else {}
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append(float(value))

    def result(self, units_per_step: int, warmup: int) -> dict:
        """Rates over the steps after `warmup` (>= 1: the first step's start is not seen), and peak RSS so far."""
        if warmup < 1 or len(self.walls) <= warmup:
            raise RuntimeError(f"{len(self.walls)} steps finished; need warmup >= 1 and more than {warmup} steps")
        walls, cpus = self.walls[warmup - 1 :], self.cpus[warmup - 1 :]
        steps = [b - a for a, b in itertools.pairwise(walls)]
        units, median_step = units_per_step * len(steps), statistics.median(steps)
        result = dict(rate=units / (walls[-1] - walls[0]), rate_by_median_step=units_per_step / median_step)
        result |= dict(rate_per_cpu_second=units / (cpus[-1] - cpus[0]), units_per_step=units_per_step)
        result |= dict(step_seconds=steps, rss_before_training_mib=self.rss_before, peak_rss_mib=memory_mib("VmHWM"))
        means = {name: statistics.mean(values[warmup:]) for name, values in self.metrics.items() if values[warmup:]}
        if self.counter:
            dtype = "bfloat16" if "torch.bfloat16" in self.counter.dtypes else "float32"
            means |= flop_summary(self.metrics, warmup, walls[-1] - walls[0], self.peak, dtype)
        return result | means | {"per_step": self.metrics}


def lightning_clock(clock: Clock, metrics: dict[str, str]):
    """A Lightning callback ticking `clock` after every step with the logged values of `metrics` (ours: logged)."""
    import lightning as L

    class Tick(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock.first_batch = batch if batch_idx == 0 else clock.first_batch
            clock.tick(**{ours: trainer.callback_metrics[logged] for ours, logged in metrics.items()})

    return Tick()


def train_trl(trainer, clock: Clock, steps_per_tick: int = 1) -> None:
    """`trainer.train()` without progress bar or printed logs (as ours), ticking `clock` with `clock.pending`."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class Tick(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % steps_per_tick == 0:
                clock.tick(**clock.pending)

    trainer.add_callback(Tick())
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    clock.start()
    trainer.train()


def fixed_length(policy, max_new_tokens: int | None):
    """`--fixed-length`: no EOS before `max_new_tokens` while this policy samples (None: as it is).

    On both sides: transformers' `generate` takes every option a call leaves unset from generation_config.
    """
    fixed = mock.patch.object(policy.generation_config, "min_new_tokens", max_new_tokens)
    return fixed if max_new_tokens else contextlib.nullcontext()


# ----------------------------------------------------------------------- our side of online RL
def our_config(run, experiment: str, iterations: int | None = None):
    """`python -m lit_rlhf.train +experiment=NAME`'s config for this run, less validation, logs and checkpoints."""
    overrides = [f"+experiment={experiment}", f"seed={run.seed}", f"model.policy.name_or_path={run.model_path}"]
    overrides += [f"trainer.limit_train_batches={iterations or run.steps}", "trainer.val_check_interval=null"]
    overrides += ["trainer.limit_val_batches=0", "+trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]
    overrides += ["callbacks=none", "validate_before_fit=false", f"paths.output_dir={run.workdir}/ours"]
    return compose_train(overrides + ([f"data.batch_size={run.batch_size}"] if run.batch_size else []))


def build_ours(cfg):
    """Data and module as `lit_rlhf.train.build` makes them (the trainer is the caller's)."""
    import lightning as L
    from hydra.utils import instantiate

    from lit_rlhf.train import quiet_third_party_noise

    quiet_third_party_noise()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    tokenizer = instantiate(cfg.model.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    return instantiate(cfg.module, tokenizer=tokenizer, gold_reward=datamodule.gold_reward), datamodule


def ours_online(experiment: str, run):
    """Our PPOModule on `experiment` under the config's Lightning Trainer: episodes per iteration, timed."""
    from hydra.utils import instantiate

    cfg, clock = our_config(run, experiment), Clock()
    module, datamodule = build_ours(cfg)
    tick = lightning_clock(clock, {"response_length": "train/response_length"})
    trainer = instantiate(cfg.trainer, callbacks=[tick], logger=False)
    with fixed_length(module.policy, cfg.module.sampling.max_new_tokens if run.fixed_length else None):
        clock.start()
        trainer.fit(module, datamodule=datamodule)
    episodes = cfg.data.batch_size * module.advantage.samples_per_prompt
    return clock.result(episodes, run.warmup), module.policy, module.tokenizer


# ------------------------------------------------------------------ one identical rollout, both sides
def our_rollout(module, cfg, seed: int):
    """The first training batch's prompts (each `samples_per_prompt` times), responses sampled once, our experience."""
    batch = prompt_batch(module.tokenizer, embedded_prompts("train", cfg.seed, cfg.data.batch_size))
    repeats, stop = module.advantage.samples_per_prompt, [module.tokenizer.eos_token_id]
    ids, mask = batch.input_ids.repeat_interleave(repeats, 0), batch.attention_mask.repeat_interleave(repeats, 0)
    generation, _ = seeded_samples(module.policy, module.tokenizer, ids, mask, module.sampling, stop, seed)
    rollout = SimpleNamespace(prompts=batch, prompt_ids=ids, prompt_mask=mask, response_ids=generation.response_ids)
    module.engine = ScriptedEngine(generation)
    experience, metrics, _, _ = module.rollout(batch)
    return rollout, experience, metrics


class ScriptedEngine:
    """A rollout engine that returns one fixed generation (its log-probs: zeros; the comparisons never read them)."""

    def __init__(self, generation):
        self.generation = generation

    def generate(self, prompt_ids, prompt_mask, sampling, seed=None):
        from lit_rlhf.generation import Rollout

        return Rollout(self.generation, torch.zeros(self.generation.response_ids.shape))

    def sync_weights(self, policy) -> None:
        pass


@contextlib.contextmanager
def scripted_generate(policy, rollout, pad: int):
    """`policy.generate` hands out the rollout's responses, matched by prompt (padding ignored), in order.

    As a tensor, or (TRL PPO) with the policy's logits as `output_scores`. Yields the rollout rows served.
    """
    rows, served = {}, []
    for row, (ids, mask) in enumerate(zip(rollout.prompt_ids, rollout.prompt_mask)):
        rows.setdefault(tuple(ids[mask.bool()].tolist()), []).append(row)

    def generate(input_ids, attention_mask, return_dict_in_generate=False, output_scores=False, **kwargs):
        picked = [rows[tuple(ids[mask.bool()].tolist())].pop(0) for ids, mask in zip(input_ids, attention_mask)]
        served.extend(picked)
        responses = rollout.response_ids[picked]
        sequences = torch.cat([input_ids, responses], dim=1)
        if not return_dict_in_generate:
            return sequences
        full_mask = torch.cat([attention_mask.long(), (responses != pad).long()], dim=1)
        with torch.no_grad():
            logits = causal_lm_logits(policy, sequences, full_mask, input_ids.shape[1] - 1)[:, :-1]
        return SimpleNamespace(sequences=sequences, scores=tuple(logits.unbind(1)))

    with mock.patch.object(policy, "generate", generate):
        yield served


def compare(what: str, ours: float | None, trl: float | None, diff=None, **extra) -> dict:
    """One entry of a check: two values, or (elementwise) `diff`, a float or a tensor of differences."""
    abs_diff = abs(ours - trl) if diff is None else float(torch.as_tensor(diff).abs().max())
    return {"what": what, "ours": ours, "trl": trl, "abs_diff": abs_diff, **extra}


def check_line(compared: list[dict]) -> str:
    """A check's entries for the table: ours / TRL (|diff|), or the largest elementwise |diff|."""
    values = [f"{c['ours']:.8g} / {c['trl']:.8g} " if c["ours"] is not None else "" for c in compared]
    return "; ".join(f"{c['what']}: {v}(\\|diff\\| {c['abs_diff']:.1e})" for c, v in zip(compared, values)) or "skipped"


# ---------------------------------------------------------------------------------- orchestration
@dataclass(frozen=True)
class Comparison:
    """One lit-rlhf stage against its TRL trainer.

    `ours` and `trl` train one side in a worker and return (timing result, trained model, tokenizer); `gold`
    scores a model. `check`, a worker too, feeds both sides identical inputs; without one the first round's
    per-step losses are compared. `defaults`: repeats, warmup, models, and by model (batch size, steps).
    """

    kind: str  # the model both sides start from: "causal-lm" or "reward"
    unit: str  # what a step processes: "pairs" or "episodes"
    ours: object
    trl: object
    gold: object
    defaults: dict
    check: object = None
    seed_per_round: bool = False  # preference rounds repeat one run; online rounds each take the next seed
    prepare: object = None  # run in the parent before the workers, e.g. to plan the data order
    trl_module: str = "trl"
    venv: str = "benchmarks/.venv-trl"


def run_worker(run: dict, side: str, seed: int) -> dict:
    """Run one side in a fresh interpreter of this venv; return the JSON it wrote."""
    # Passive OpenMP waits: on a shared machine, threads that spin at every barrier while another
    # process holds the core make each op several times slower, at random (measured: 2-10x at 2 threads).
    threads = str(run["threads"])
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OMP_WAIT_POLICY="PASSIVE")
    with tempfile.TemporaryDirectory() as tmp:
        out, started = Path(tmp) / "result.json", time.perf_counter()
        command = [sys.executable, str(BENCHMARKS / "bench_trl.py"), "--worker"]
        command.append(json.dumps(run | {"side": side, "seed": seed, "out": str(out)}))
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise SystemExit(f"{side} worker of {run['algo']} on {run['model']} failed (exit {proc.returncode})")
        result = json.loads(out.read_text())
    if side == "probe":
        print(
            "  matmul peak: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in result["peak"].items()), flush=True
        )
    elif side != "check":
        rates, memory = ", ".join(f"{result[k]:.1f}" for k in RATES), f"peak RSS {result['peak_rss_mib']:.0f} MiB"
        gold = "" if result.get("gold") is None else f", gold {result['gold']:.3f}"
        flops = f", MFU {result['mfu']:.1%}, padding {result['padding_waste']:.1%}" if "mfu" in result else ""
        print(f"  {side:4s} seed {seed}: {run['unit']}/s {rates}, {memory}{gold}{flops}", flush=True)
    return result | {"process_seconds": time.perf_counter() - started, "load_average_after": os.getloadavg()[0]}


def benchmark(comparison: Comparison, run: dict, repeats: int, check: bool) -> dict:
    """Every side `repeats` times, rounds rotating which goes first, between two matmul-peak probes; the check.

    Sides: ours and TRL as matched to ours, and with `run["trl_defaults"]` TRL at its own defaults too.
    MFU is against the higher of the two probes' peaks (a neighbour's load only lowers it); both are kept.
    """
    if comparison.prepare:
        comparison.prepare(SimpleNamespace(**run))
    sides = ("ours", "trl", "trl_defaults") if run.get("trl_defaults") else ("ours", "trl")
    sides = tuple(run.get("arms") or sides)
    peaks = [run_worker(run, "probe", run["seed"])["peak"]]
    run = run | {"peak": peaks[0]}
    runs = {side: [] for side in sides}
    for round_ in range(repeats):
        for side in sides[round_ % len(sides) :] + sides[: round_ % len(sides)]:
            runs[side].append(run_worker(run, side, run["seed"] + round_ * comparison.seed_per_round))
    peaks.append(run_worker(run, "probe", run["seed"])["peak"])
    peak = {key: max(p[key] for p in peaks) for key in peaks[0]}  # the neighbours' load only ever lowers it
    for result in (r for rs in runs.values() for r in rs if "model_flops_per_second" in r):
        result |= dict(mfu=result["model_flops_per_second"] / peak[result["compute_dtype"]])
        result |= dict(mfu_vs_float32_peak=result["model_flops_per_second"] / peak["float32"])
        result |= dict(peak_flops_per_second=peak[result["compute_dtype"]])
    if comparison.check:
        agreement = run_worker(run, "check", run["seed"]) if check else {"compared": []}
    else:
        compared = loss_agreement(runs) if "trl" in runs else [{"abs_diff": 0.0}]  # first: the first step's loss
        agreement = {"compared": compared if "trl" in runs else [], "failed": compared[0]["abs_diff"] > 1e-4}
        if "trl_defaults" in runs:  # bf16 and clipped: not expected to agree, reported
            agreement["trl_defaults"] = loss_agreement({"ours": runs["ours"], "trl": runs["trl_defaults"]})
    return {"summary": summarize(runs), "check": agreement, "matmul_peaks": peaks, "runs": runs}


FLOP_SUMMARY = ("mfu", "mfu_vs_float32_peak", "model_flops_per_second", "padded_flops_per_second", "padding_waste")


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Medians per side, and ours / TRL (each TRL side) of each median rate (> 1: ours is faster)."""
    keys = (*RATES, "peak_rss_mib", "rss_before_training_mib", "response_length", "gold", *FLOP_SUMMARY)
    present = lambda rs, k: k in rs[0] and all(r.get(k) is not None for r in rs)  # noqa: E731
    summary = {
        side: {k: statistics.median(r[k] for r in rs) for k in keys if present(rs, k)} for side, rs in runs.items()
    }
    for side in runs:
        if "compute_dtype" in runs[side][0]:
            summary[side]["compute_dtype"] = runs[side][0]["compute_dtype"]
    ratios = {
        f"ours_over_{side}": {k: summary["ours"][k] / summary[side][k] for k in RATES}
        for side in runs
        if side != "ours"
    }
    return summary | ratios


def loss_agreement(runs: dict[str, list[dict]]) -> list[dict]:
    """The first step's metrics of the two sides on the same batch, and how far their losses drift later."""
    ours, trl = runs["ours"][0]["per_step"], runs["trl"][0]["per_step"]
    diffs = [abs(a - b) for a, b in zip(ours["loss"], trl["loss"])]
    first = [
        compare(f"first-step {name}", ours[name][0], trl[name][0]) for name in ours if not name.startswith("flops")
    ]
    return [*first, compare(f"loss over {len(diffs)} steps, max", None, None, max(diffs), per_step=diffs)]


def environment(threads: int) -> dict:
    packages = ("torch", "transformers", "trl", "lightning", "accelerate", "datasets")
    with open("/proc/cpuinfo") as cpuinfo:
        cpu = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    installed = {d.metadata["Name"].lower(): d.version for d in metadata.distributions()}
    setup = dict(cpu=cpu[0] if cpu else platform.processor(), cpu_count=os.cpu_count(), threads=threads)
    return setup | dict(versions={p: installed.get(p) for p in packages}, python=platform.python_version())


TABLE_HEADER = "| benchmark | model | batch × steps (timed) | ours | TRL | ours / TRL (median step, per CPU-second) "
TABLE_HEADER += "| peak RSS MiB ours / TRL | gold ours / TRL (before) | check |\n" + "|---" * 9 + "|"


def table_row(name: str, unit: str, payload: dict) -> str:
    """The README row: rates over all timed steps (of the median step), medians over the rounds."""
    s, steps, warmup = payload["summary"], payload["settings"]["steps"], payload["settings"]["warmup"]
    (ours, trl), ratio = (s["ours"], s["trl"]), s["ours_over_trl"]
    rates = [f"{side['rate']:.1f} ({side['rate_by_median_step']:.1f}) {unit}/s" for side in (ours, trl)]
    ratios = f"**{ratio['rate']:.2f}x** ({ratio['rate_by_median_step']:.2f}x, {ratio['rate_per_cpu_second']:.2f}x)"
    memory = f"{ours['peak_rss_mib']:.0f} / {trl['peak_rss_mib']:.0f}"
    gold = f"{ours['gold']:.3f} / {trl['gold']:.3f}" if "gold" in ours else "—"
    batch = payload["runs"]["ours"][0]["units_per_step"]
    cells = [name, payload["model"], f"{batch} × {steps} ({steps - warmup})", *rates, ratios]
    before = f" ({payload['gold_before']:.3f})" if payload.get("gold_before") is not None else ""
    cells += [memory, gold + before, check_line(payload["check"]["compared"])]
    return "| " + " | ".join(cells) + " |"


FLOP_HEADER = "| set | benchmark | TRL arm | batch × steps (timed) | ours | TRL | ours / TRL (median step, per CPU-s) "
FLOP_HEADER += "| peak RSS MiB ours / TRL | MFU ours / TRL | model GFLOP/s ours / TRL | padding waste ours / TRL "
FLOP_HEADER += "| first-step loss ours / TRL (\\|diff\\|) | load |\n" + "|---" * 13 + "|"


def flop_rows(data: str, name: str, unit: str, payload: dict) -> list[str]:
    """The rows of the MFU-and-padding table, one per TRL arm: medians over the rounds."""
    s, settings, rows = payload["summary"], payload["settings"], []
    steps, warmup, ours = settings["steps"], settings["warmup"], s["ours"]
    loads = [r["load_average_after"] for rs in payload["runs"].values() for r in rs]
    for side, arm in (("trl", "fp32, matched to ours"), ("trl_defaults", "its defaults")):
        if side not in s:
            continue
        trl, ratio = s[side], s[f"ours_over_{side}"]
        check = payload["check"]["compared"] if side == "trl" else payload["check"]["trl_defaults"]
        first = check[0]
        cells = [
            data,
            name,
            f"{arm} ({trl.get('compute_dtype', '?')})",
            f"{settings['batch_size']} × {steps} ({steps - warmup})",
        ]
        cells += [f"{ours['rate']:.2f} {unit}/s", f"{trl['rate']:.2f} {unit}/s"]
        cells += [
            f"**{ratio['rate']:.2f}x** ({ratio['rate_by_median_step']:.2f}x, {ratio['rate_per_cpu_second']:.2f}x)"
        ]
        cells += [f"{ours['peak_rss_mib']:.0f} / {trl['peak_rss_mib']:.0f}", f"{ours['mfu']:.1%} / {trl['mfu']:.1%}"]
        cells += [f"{ours['model_flops_per_second'] / 1e9:.1f} / {trl['model_flops_per_second'] / 1e9:.1f}"]
        cells += [f"{ours['padding_waste']:.1%} / {trl['padding_waste']:.1%}"]
        cells += [
            f"{first['ours']:.6f} / {first['trl']:.6f} ({first['abs_diff']:.1e})",
            f"{min(loads):.1f}–{max(loads):.1f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows
