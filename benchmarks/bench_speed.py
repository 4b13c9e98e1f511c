"""Speed of the choices lit-rlhf makes, each against its naive peer measured in the same process.

    python benchmarks/bench_speed.py [--repeats 15] [--device cpu|cuda]

Median seconds, and naive / ours, of: generation with vs. without the KV cache; a DPO step as one concatenated
forward+backward over chosen and rejected vs. two; DPO reference log-probs cached vs. forwarded. Machines are
shared and noisy: read the ratios, and compare absolute times only within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from lightning.pytorch.utilities import move_data_to_device
from toolkit import common as toolkit

from lit_rlhf.config import asset_path
from lit_rlhf.data.collate import collate_preferences
from lit_rlhf.modules.dpo import DPOModule


def median_seconds(fn, repeats: int, device: torch.device) -> float:
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pair(ours, naive, args) -> dict:
    return {name: median_seconds(fn, args.repeats, args.device) for name, fn in (("ours", ours), ("naive", naive))}


@torch.no_grad()
def bench_generation(policy, tokenizer, args) -> dict:
    prompts = toolkit.prompt_batch(tokenizer, toolkit.embedded_prompts("validation", count=args.batch_size))
    batch = move_data_to_device(prompts, args.device)
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, pad_token_id=tokenizer.pad_token_id)
    inputs |= dict(do_sample=True, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    return pair(
        lambda: policy.generate(**inputs, use_cache=True), lambda: policy.generate(**inputs, use_cache=False), args
    )


def bench_dpo(policy, tokenizer, args) -> tuple[dict, dict]:
    items = toolkit.preference_datamodule(tokenizer, args.batch_size).val_items[: args.batch_size]
    together = move_data_to_device(collate_preferences(items, tokenizer.pad_token_id), args.device)
    sides = [collate_preferences([item.only(side) for item in items], tokenizer.pad_token_id) for side in (0, 1)]
    sides = move_data_to_device(sides, args.device)

    def backward(*batches):
        policy.zero_grad()
        for batch in batches:
            DPOModule.completion_logps(policy, batch)[0].sum().backward()

    reference = toolkit.load_model("causal-lm", asset_path("tiny-sft"))[0].to(args.device).eval()
    cache = torch.randn(int(together.sequence_ids.max()) + 1)

    @torch.no_grad()
    def online_reference():
        DPOModule.completion_logps(reference, together)

    step = pair(lambda: backward(together), lambda: backward(*sides), args)
    return step, pair(lambda: cache[together.sequence_ids.cpu()].to(args.device), online_reference, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", type=torch.device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)
    policy, tokenizer = toolkit.load_model("causal-lm", asset_path("tiny-sft"))
    policy.to(args.device)
    results = {"generation (KV cache vs none)": bench_generation(policy, tokenizer, args)}
    step, reference = bench_dpo(policy, tokenizer, args)
    results |= {"DPO step (1 concatenated pass vs 2)": step, "DPO reference log-probs (cache vs forward)": reference}
    print(f"device={args.device} threads={torch.get_num_threads()} repeats={args.repeats} batch={args.batch_size}")
    print("| pair | ours (s, median) | naive (s, median) | naive / ours |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['ours']:.4f} | {r['naive']:.4f} | {r['naive'] / r['ours']:.2f}x |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
