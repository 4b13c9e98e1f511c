"""Per-token log-probs with a 151,936-token vocabulary: the full (B, T, V) logits vs the chunked LM head.

A Qwen2 built from a config with Qwen2's vocabulary and a small body (hidden 64, 2 layers), so the
LM head dominates as it does in a real model's log-prob pass. Each (path, pass) runs in its own
process, so its peak RSS (ru_maxrss) above the process's state after building the model and batch
is that path's own. Times are medians over repeats after one warm-up.

    python benchmarks/bench_logprobs.py [--batch 4 --length 512 --repeats 5 --threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VOCAB = 151_936
BODY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)


def measure(path: str, backward: bool, batch: int, length: int, repeats: int) -> dict:
    """Median seconds and peak RSS increase (MiB) of one path's log-prob pass (with its backward if asked)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from lit_rlhf.ops.forward import sequence_logprobs, sequence_token_logprobs

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, tie_word_embeddings=True, max_position_embeddings=length, **BODY)
    model = AutoModelForCausalLM.from_config(config)
    ids = torch.randint(0, VOCAB, (batch, length))
    mask = torch.ones_like(ids)

    def run() -> None:
        with torch.set_grad_enabled(backward):
            if path == "full":
                logprobs, _ = sequence_token_logprobs(model, ids, mask)
            else:
                logprobs, _ = sequence_logprobs(model, ids, mask)
            if backward:
                logprobs.mean().backward()
                model.zero_grad(set_to_none=True)

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()  # warm-up; it also reaches the peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return {"median_s": statistics.median(seconds), "peak_rss_mib": (peak - baseline) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", nargs=2, metavar=("PATH", "PASS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        path, kind = args.one
        print(json.dumps(measure(path, kind == "train", args.batch, args.length, args.repeats)))
        return
    print(f"load average {os.getloadavg()}; B={args.batch}, T={args.length}, V={VOCAB}, {args.threads} thread(s)")
    print("| pass | path | median time (s) | peak RSS above model + batch (MiB) |")
    print("|---|---|---|---|")
    for kind in ("no_grad", "train"):
        results = {}
        for path in ("full", "chunked"):
            command = [sys.executable, __file__, "--one", path, kind, *sys.argv[1:]]
            results[path] = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
            print(f"| {kind} | {path} | {results[path]['median_s']:.3f} | {results[path]['peak_rss_mib']:.0f} |")
        full, chunked = results["full"], results["chunked"]
        print(
            f"| {kind} | chunked / full | {chunked['median_s'] / full['median_s']:.2f}x | "
            f"{chunked['peak_rss_mib'] / full['peak_rss_mib']:.3f}x |"
        )


if __name__ == "__main__":
    main()
