"""Where a rollout's generation time goes on the CPU, and whether a leaner decode path pays.

    python benchmarks/bench_generation.py                       # tiny-sft and the 10.8M Llama, 2 threads
    python benchmarks/bench_generation.py --models large --threads 1 --repeats 5

A PPO/GRPO rollout's shape: 8 prompts × 4 samples of the embedded task (left-padded), 40 new tokens, sampling
at temperature 1 without top-k/top-p, every response forced to the full 40 tokens (EOS suppressed, as
`--fixed-length` does in bench_trl.py) so that every path does the same work. Paths, timed in one process,
rounds rotating their order, medians:

- `generate`: `policy.generate` as `lit_rlhf.ops.generation.generate` calls it (dynamic KV cache);
- `generate_static`: the same with `cache_implementation="static"`;
- `loop`: a hand-written decode loop: one prefill, then one forward of the last token per step with the
  dynamic cache, softmax + multinomial, a stop-token check; nothing else.

Time per generated token (the batch's wall time / 40) is split into model forward (the wall time inside
`policy.forward`, the KV cache's own updates included) and the rest ("overhead": logits processors,
stopping criteria, input preparation, cache bookkeeping outside the model). Greedy decoding checks that
`loop` yields the same tokens as `generate`. A cProfile of one `generate` call lists its top entries outside
the model. Results: outputs/benchmarks/generation.json.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import tempfile
import time
from contextlib import contextmanager

import torch
from toolkit import common as toolkit

PROMPTS, SAMPLES, NEW_TOKENS = 8, 4, 40


@contextmanager
def timed_forward(model, seconds: list[float]):
    """Add the wall time of every `model.forward` call to `seconds[0]`."""
    forward = model.forward

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            seconds[0] += time.perf_counter() - started

    model.forward = timed
    try:
        yield
    finally:
        del model.forward  # back to the class's method


def hf_generate(model, ids, mask, tokenizer, greedy: bool, **extra):
    """`policy.generate` with the arguments `lit_rlhf.ops.generation.generate` passes."""
    sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        eos_token_id=[tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
        **sampling,
        **extra,
    )


@torch.no_grad()
def decode_loop(model, ids, mask, tokenizer, greedy: bool):
    """Prefill, then one token per forward with the dynamic KV cache; EOS suppressed for NEW_TOKENS tokens.

    Args:
        ids, mask: (B, P) left-padded prompts and their attention mask.
    Returns:
        (B, P + NEW_TOKENS) prompts and responses, as `generate` returns them.
    """
    from transformers import DynamicCache

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    cache, mask = DynamicCache(config=model.config), mask.long()
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # (B, P): left padding does not shift the positions
    logits = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]  # (B, V)
    finished, out, last = torch.zeros(len(ids), dtype=torch.bool), [ids], positions[:, -1:]
    for step in range(NEW_TOKENS):
        logits[:, eos] = float("-inf")  # min_new_tokens = NEW_TOKENS, as the generate paths get
        token = logits.argmax(-1) if greedy else torch.multinomial(torch.softmax(logits.float(), -1), 1)[:, 0]
        token = token.masked_fill(finished, pad)  # (B,)
        finished |= token == eos
        out.append(token[:, None])
        if step == NEW_TOKENS - 1:
            break
        mask, last = torch.cat([mask, torch.ones_like(mask[:, :1])], 1), last + 1
        logits = model(
            input_ids=token[:, None], attention_mask=mask, position_ids=last, past_key_values=cache, use_cache=True
        ).logits[:, -1]
    return torch.cat(out, 1)


PATHS = {
    "generate": lambda m, i, a, t, g: hf_generate(m, i, a, t, g),
    "generate_static": lambda m, i, a, t, g: hf_generate(m, i, a, t, g, cache_implementation="static"),
    "loop": decode_loop,
}


def measure(model, tokenizer, batch, repeats: int) -> dict:
    """Median seconds per generated token of each path, split into forward and overhead; greedy agreement."""
    ids, mask = batch.input_ids.repeat_interleave(SAMPLES, 0), batch.attention_mask.repeat_interleave(SAMPLES, 0)
    greedy = {name: path(model, ids, mask, tokenizer, True) for name, path in PATHS.items()}  # also the warm-up
    same = {name: float((out == greedy["generate"]).all(1).float().mean()) for name, out in greedy.items()}
    times = {name: [] for name in PATHS}
    names = list(PATHS)
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            inside = [0.0]
            torch.manual_seed(round_)
            with timed_forward(model, inside):
                started = time.perf_counter()
                out = PATHS[name](model, ids, mask, tokenizer, False)
                total = time.perf_counter() - started
            assert out.shape[1] == ids.shape[1] + NEW_TOKENS
            times[name].append((total, inside[0]))
    result = {}
    for name, pairs in times.items():
        total, forward = statistics.median(t for t, _ in pairs), statistics.median(f for _, f in pairs)
        result[name] = dict(ms_per_token=1e3 * total / NEW_TOKENS, forward_ms_per_token=1e3 * forward / NEW_TOKENS)
        result[name] |= dict(overhead_share=1 - forward / total, tokens_per_second=len(ids) * NEW_TOKENS / total)
        result[name] |= dict(greedy_rows_equal_to_generate=same[name], runs=pairs)
        result[name] |= dict(best_ms_per_token=1e3 * min(t for t, _ in pairs) / NEW_TOKENS)  # least disturbed round
    for name in PATHS:
        result[name]["speedup_vs_generate"] = (
            result[name]["tokens_per_second"] / result["generate"]["tokens_per_second"]
        )
        result[name]["best_speedup_vs_generate"] = (
            result["generate"]["best_ms_per_token"] / result[name]["best_ms_per_token"]
        )
    return result


def generate_profile(model, tokenizer, batch, top: int = 12) -> list[str]:
    """cProfile of one sampled `generate`: the top entries by own time."""
    ids, mask = batch.input_ids.repeat_interleave(SAMPLES, 0), batch.attention_mask.repeat_interleave(SAMPLES, 0)
    profile = cProfile.Profile()
    profile.enable()
    hf_generate(model, ids, mask, tokenizer, False)
    profile.disable()
    stream = io.StringIO()
    pstats.Stats(profile, stream=stream).sort_stats("tottime").print_stats(top)
    return [line for line in stream.getvalue().splitlines() if line.strip()][-top - 1 :]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,large")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    payload = dict(environment=toolkit.environment(args.threads), load_average_at_start=os.getloadavg(), models={})
    with tempfile.TemporaryDirectory() as workdir:
        for model_name in args.models.split(","):
            model, tokenizer = toolkit.load_model("causal-lm", toolkit.model_path("causal-lm", model_name, workdir))
            model.eval()
            batch = toolkit.prompt_batch(tokenizer, toolkit.embedded_prompts("train", count=PROMPTS))
            params = sum(p.numel() for p in model.parameters()) / 1e6
            result = measure(model, tokenizer, batch, args.repeats)
            result["generate_profile"] = generate_profile(model, tokenizer, batch)
            result |= dict(parameters_millions=params, load_average_after=os.getloadavg()[0])
            payload["models"][model_name] = result
            print(
                f"{model_name} ({params:.2f}M), {PROMPTS}x{SAMPLES} rows, {NEW_TOKENS} new tokens, "
                f"{args.threads} threads, load {os.getloadavg()[0]:.1f}:"
            )
            for name in PATHS:
                r = result[name]
                print(
                    f"  {name:16s} {r['ms_per_token']:6.2f} ms/token (forward {r['forward_ms_per_token']:6.2f}, "
                    f"overhead {r['overhead_share']:5.1%}), {r['tokens_per_second']:7.0f} tokens/s, "
                    f"{r['speedup_vs_generate']:.2f}x generate (best round {r['best_ms_per_token']:.2f} ms, "
                    f"{r['best_speedup_vs_generate']:.2f}x); greedy rows equal {r['greedy_rows_equal_to_generate']:.2f}"
                )
            print("  generate, top by own time:", *result["generate_profile"], sep="\n    ")
    path = toolkit.RESULTS / "generation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
