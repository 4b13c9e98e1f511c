"""Speed of the choices lit-rlhf makes, each against its naive peer measured in the same process.

    python benchmarks/bench_speed.py [--repeats 15] [--device cpu|cuda]

Pairs (median seconds over repeats, and the ratio naive / ours):
  * rollout generation with the KV cache vs. without it;
  * DPO step: one concatenated forward+backward over chosen and rejected vs. two passes;
  * DPO reference log-probs: cached lookup vs. an online reference forward.
Machines are shared and noisy: read the ratios, and compare absolute times only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from lightning.pytorch.utilities import move_data_to_device  # noqa: E402

from lit_rlhf.config import asset_path  # noqa: E402
from lit_rlhf.data.collate import (  # noqa: E402
    PromptItem,
    collate_preferences,  # noqa: E402
    collate_prompts,
)
from lit_rlhf.data.datamodules import PreferenceDataModule  # noqa: E402
from lit_rlhf.data.tokenization import encode_prompts  # noqa: E402
from lit_rlhf.models.loading import load_causal_lm, load_tokenizer  # noqa: E402
from lit_rlhf.modules.dpo import DPOModule  # noqa: E402
from lit_rlhf.task.sources import EmbeddedPreferencePairs, EmbeddedPrompts  # noqa: E402


def median_seconds(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_generation(policy, tokenizer, device, repeats: int, batch_size: int, new_tokens: int) -> dict:
    prompts = [r.prompt for r in EmbeddedPrompts().load("validation")[:batch_size]]
    prompt_ids, _ = encode_prompts(tokenizer, prompts, 24)
    items = [PromptItem(ids, p) for ids, p in zip(prompt_ids, prompts)]
    batch = collate_prompts(items, tokenizer.pad_token_id)
    ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)

    def run(use_cache: bool):
        with torch.no_grad():
            policy.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=use_cache,
            )

    return {
        "ours": median_seconds(lambda: run(True), repeats, device),
        "naive": median_seconds(lambda: run(False), repeats, device),
    }


def bench_dpo(policy, tokenizer, device, repeats: int, batch_size: int) -> tuple[dict, dict]:
    datamodule = PreferenceDataModule(
        EmbeddedPreferencePairs(),
        tokenizer,
        batch_size=batch_size,
        val_batch_size=batch_size,
        max_length=64,
        max_prompt_length=24,
        train_split="train",
        val_split="validation",
        val_fraction=0.05,
        seed=0,
    )
    datamodule.setup()
    items = datamodule.val_items[:batch_size]
    pad = tokenizer.pad_token_id
    together = collate_preferences(items, pad)
    sides = [collate_preferences([item.only(s) for item in items], pad) for s in (0, 1)]
    together, sides = move_data_to_device(together, device), [move_data_to_device(b, device) for b in sides]

    def concatenated():
        policy.zero_grad()
        DPOModule.completion_logps(policy, together)[0].sum().backward()

    def separate():
        policy.zero_grad()
        for side in sides:
            DPOModule.completion_logps(policy, side)[0].sum().backward()

    reference = load_causal_lm(asset_path("tiny-sft")).to(device).eval()
    cache = torch.randn(int(together.sequence_ids.max()) + 1)

    def online_reference():
        with torch.no_grad():
            DPOModule.completion_logps(reference, together)

    def cached_reference():
        cache[together.sequence_ids.cpu()].to(device)

    forward = {
        "ours": median_seconds(concatenated, repeats, device),
        "naive": median_seconds(separate, repeats, device),
    }
    ref = {
        "ours": median_seconds(cached_reference, repeats, device),
        "naive": median_seconds(online_reference, repeats, device),
    }
    return forward, ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=40)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    tokenizer = load_tokenizer(asset_path("tiny-sft"))
    policy = load_causal_lm(asset_path("tiny-sft")).to(device)
    results = {
        "generation (KV cache vs none)": bench_generation(
            policy, tokenizer, device, args.repeats, args.batch_size, args.new_tokens
        )
    }
    forward, reference = bench_dpo(policy, tokenizer, device, args.repeats, args.batch_size)
    results["DPO step (1 concatenated pass vs 2)"] = forward
    results["DPO reference log-probs (cache vs forward)"] = reference
    print(f"device={device} threads={torch.get_num_threads()} repeats={args.repeats} batch={args.batch_size}")
    print("| pair | ours (s, median) | naive (s, median) | naive / ours |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['ours']:.4f} | {r['naive']:.4f} | {r['naive'] / r['ours']:.2f}x |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
