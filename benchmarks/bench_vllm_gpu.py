"""Rollout tokens/s on a GPU: HF generate vs colocated vLLM on a ~0.5B model built from a config.

    pip install -e ".[vllm]" && python benchmarks/bench_vllm_gpu.py                  # a CUDA machine
    python benchmarks/bench_vllm_gpu.py --prompts 64 --samples 8 --new-tokens 512 --dtype bfloat16

NOT RUN ON A GPU: written and run on the CPU only (`--device cpu --preset small`, a smoke test of the code
path). The GPU machine lent to this project cannot install packages, so vLLM never ran on it.

The policy is a randomly initialised Llama of Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV
heads, 151,936 tokens; 494M parameters with tied embeddings): no download. Prompts are random token ids of
`--prompt-length`, each repeated `--samples` times (a GRPO group). A random model seldom samples the stop token,
so nearly every response runs to `--new-tokens`: both engines do the same work. Each round: the engines'
`sync_weights` after the weights move, then one `generate`, engines alternating which goes first; medians of
rollout tokens/s (response tokens / wall time) and sync ms. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from lit_rlhf.generation import HFEngine, VLLMEngine
from lit_rlhf.ops.generation import SamplingConfig

PRESETS = {
    # Qwen2.5-0.5B's shape as a Llama (no attention biases): 494M parameters.
    "qwen0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=4096,
    ),
    # For a CPU smoke test of this script.
    "small": dict(
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1024,
        max_position_embeddings=512,
    ),
}
STOP, PAD = 0, 1


def build_policy(preset: str, dtype: torch.dtype, device: str):
    torch.manual_seed(0)
    config = LlamaConfig(**PRESETS[preset], tie_word_embeddings=True, bos_token_id=2, eos_token_id=STOP)
    config.pad_token_id = PAD
    return AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()


def kv_cache_bytes(config, rows: int, tokens: int, dtype: torch.dtype) -> int:
    """The KV cache one call needs (2 x layers x kv_heads x head_dim per token), with 25% headroom."""
    head_dim = config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * dtype.itemsize
    return int(1.25 * rows * tokens * per_token)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="qwen0.5b", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--prompt-length", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    parser.add_argument("--compiled", action="store_true", help="vLLM with CUDA graphs / torch.compile")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    policy = build_policy(args.preset, dtype, args.device)
    rows = args.prompts * args.samples
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, policy.config.vocab_size, (args.prompts, args.prompt_length), generator=generator)
    ids = prompts.repeat_interleave(args.samples, 0).to(args.device)
    mask = torch.ones_like(ids)
    sampling = SamplingConfig(max_new_tokens=args.new_tokens, temperature=1.0, top_k=0, top_p=1.0)
    max_model_len = args.prompt_length + args.new_tokens
    cache = kv_cache_bytes(policy.config, rows, max_model_len, dtype)

    started = time.perf_counter()
    engines = {
        "vllm": VLLMEngine(
            policy, [STOP], PAD, args.dtype, cache, args.gpu_memory_utilization, not args.compiled, max_model_len
        )
    }
    start_seconds = time.perf_counter() - started
    engines["hf"] = HFEngine(policy, [STOP], PAD)
    for engine in engines.values():
        engine.generate(ids[: args.samples], mask[: args.samples], sampling, seed=0)  # warm-up

    rounds = {side: {"tokens_per_s": [], "sync_ms": [], "tokens": []} for side in engines}
    for round_ in range(args.repeats):
        with torch.no_grad():
            for parameter in policy.parameters():
                parameter.mul_(1.0 + 1e-3 * (round_ + 1))
        for side in engines if round_ % 2 == 0 else reversed(list(engines)):
            synchronize(args.device)
            started = time.perf_counter()
            engines[side].sync_weights(policy)
            synchronize(args.device)
            rounds[side]["sync_ms"].append(1000 * (time.perf_counter() - started))
            started = time.perf_counter()
            rollout = engines[side].generate(ids, mask, sampling, seed=round_)
            synchronize(args.device)
            tokens = int(rollout.generation.response_mask.sum())
            rounds[side]["tokens"].append(tokens)
            rounds[side]["tokens_per_s"].append(tokens / (time.perf_counter() - started))

    summary = {side: {key: statistics.median(values) for key, values in r.items()} for side, r in rounds.items()}
    summary["vllm_over_hf_tokens_per_s"] = summary["vllm"]["tokens_per_s"] / summary["hf"]["tokens_per_s"]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    parameters = sum(p.numel() for p in policy.parameters())
    report = dict(vars(args), device_name=device, parameters=parameters, rows=rows, engine_start_s=start_seconds)
    print(json.dumps(report | dict(summary=summary, rounds=rounds), indent=1))


if __name__ == "__main__":
    main()
