"""Prefix sharing and padding-free rows vs the padded batch: forward + backward time and activation memory.

Two shapes:
- long: a ~10.8M-parameter Llama from LlamaConfig (hidden 384, 6 layers, intermediate 1024, vocabulary 512),
  synthetic pairs with prompts of 150-400 tokens and responses of 20-80;
- short: the shipped tiny policy on the embedded task's own pairs (prompt + response ~20-40 tokens).

Each round times every path once, in an order that alternates between rounds (forward, then reverse), so
load drifts hit all paths alike; ratios are against the padded path of the same run. Memory is what
autograd keeps for the backward pass (distinct storages of the saved tensors), the activations that set
the peak, counted exactly and free of allocator noise; on CUDA the allocator's peak is reported too.

    python benchmarks/bench_packing.py [--stage dpo|rm --pairs 4 --rounds 5 --short-rounds 15 --threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

# (prefix_sharing, padding_free, row length in longest units) of every path; "padded" is the peer.
PATHS = {
    "padded": (False, False, 1),
    "shared": (True, False, 1),
    "padding_free": (False, True, 1),
    "padding_free rows 2x": (False, True, 2),
    "shared + padding_free": (True, True, 1),
    "shared + padding_free rows 2x": (True, True, 2),
}


def long_prompt_pairs(pairs: int, seed: int):
    """A right-padded PreferenceBatch of `pairs` synthetic pairs: prompts 150-400 tokens, responses 20-80."""
    from lit_rlhf.data.batches import PreferenceBatch

    generator = torch.Generator().manual_seed(seed)

    def draw(low: int, high: int) -> list[int]:
        length = int(torch.randint(low, high + 1, (), generator=generator))
        return torch.randint(2, 512, (length,), generator=generator).tolist()

    sequences, prompt_lengths = [], []
    for _ in range(pairs):
        prompt = draw(150, 400)
        for _ in range(2):
            sequences.append(prompt + draw(20, 80))
            prompt_lengths.append(len(prompt))
    width = max(map(len, sequences))
    ids = torch.ones((len(sequences), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    response_mask = torch.zeros((len(sequences), width - 1), dtype=torch.bool)
    for n, (sequence, prompt_length) in enumerate(zip(sequences, prompt_lengths)):
        ids[n, : len(sequence)] = torch.tensor(sequence)
        mask[n, : len(sequence)] = 1
        response_mask[n, prompt_length - 1 : len(sequence) - 1] = True
    pairs_index = torch.arange(pairs)
    return PreferenceBatch(
        ids, mask, response_mask, 2 * pairs_index, 2 * pairs_index + 1, torch.full((pairs,), float("nan")),
        torch.arange(len(sequences)), [], [], ids[:, :1], mask[:, :1], [],
    )  # fmt: skip


def long_prompt_model(stage: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
        num_key_value_heads=6, max_position_embeddings=1024, pad_token_id=1, tie_word_embeddings=True,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    if stage == "rm":
        config.num_labels = 1
        return AutoModelForSequenceClassification.from_config(config)
    return AutoModelForCausalLM.from_config(config)


def short_task_case(pairs: int, stage: str):
    """The shipped tiny policy (with a new scalar head for the RM) and one training batch of the embedded pairs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from toolkit import common as toolkit

    from lit_rlhf.config import asset_path
    from lit_rlhf.models.loading import load_causal_lm, load_reward_model, load_tokenizer

    path = asset_path("tiny-sft")
    tokenizer = load_tokenizer(path)
    datamodule = toolkit.preference_datamodule(tokenizer, pairs)
    model = load_reward_model(path) if stage == "rm" else load_causal_lm(path)
    return model, next(iter(datamodule.train_dataloader()))


def saved_bytes(function) -> int:
    """Bytes of the distinct storages autograd saves while `function` runs (its backward's activations)."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function()
    return sum(storages.values())


def dpo_objective(model, batch, layout) -> torch.Tensor:
    """The policy's summed response log-probs: what a DPO step differentiates."""
    from lit_rlhf.modules.dpo import DPOModule

    return DPOModule.completion_logps(model, batch, layout)[0].sum()


def rm_objective(model, batch, layout) -> torch.Tensor:
    """The rewards at each completion's last token: what a reward-model step differentiates."""
    from lit_rlhf.modules.reward_model import packed_rewards_and_hidden
    from lit_rlhf.ops.forward import last_token_rewards

    if layout is None:
        return last_token_rewards(model, batch.input_ids, batch.attention_mask).sum()
    return packed_rewards_and_hidden(model, layout, batch.input_ids, batch.attention_mask)[0].sum()


def bench_shape(name: str, model, batch, objective, rounds: int, device: str) -> list[dict]:
    from lit_rlhf.ops.packing import pack_layout

    model = model.to(device)
    batch = type(batch)(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in vars(batch).items()})

    def layout(path: str):
        share, free, factor = PATHS[path]
        if not (share or free):
            return None
        masks = batch.input_ids, batch.attention_mask, batch.response_mask
        longest = max(pack_layout(*masks, share, False).shape[1], 1)
        return pack_layout(*masks, share, free, factor * longest)

    def step(path: str) -> None:
        # The layout is made inside the timed step, as the modules make it.
        objective(model, batch, layout(path)).backward()
        model.zero_grad(set_to_none=True)

    def slots(path: str) -> str:
        """Token slots the path computes, rows x width."""
        packed = layout(path)
        rows, width = batch.input_ids.shape if packed is None else packed.shape
        return f"{rows} x {width}"

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    seconds = {path: [] for path in PATHS}
    order = list(PATHS)
    for path in order:  # warm-up
        step(path)
    for round_index in range(rounds):
        for path in order if round_index % 2 == 0 else order[::-1]:
            synchronize()
            started = time.perf_counter()
            step(path)
            synchronize()
            seconds[path].append(time.perf_counter() - started)
    results = []
    for path in PATHS:
        peak = None
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            step(path)
            peak = torch.cuda.max_memory_allocated() / 2**20
        results.append(
            {
                "shape": name,
                "path": path,
                "slots": slots(path),
                "median_s": statistics.median(seconds[path]),
                "saved_mib": saved_bytes(lambda path=path: step(path)) / 2**20,
                "cuda_peak_mib": peak,
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--short-pairs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--short-rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", nargs="+", default=["long", "short"])
    parser.add_argument("--stage", choices=["dpo", "rm"], default="dpo")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS), help="padded always runs")
    args = parser.parse_args()
    for path in set(PATHS) - {"padded", *args.paths}:
        del PATHS[path]
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.device}, load before {os.getloadavg()}")
    objective, results = dpo_objective if args.stage == "dpo" else rm_objective, []
    if "long" in args.shapes:
        model, batch = long_prompt_model(args.stage), long_prompt_pairs(args.pairs, seed=0)
        name = f"{args.stage} long ({args.pairs} pairs)"
        results += bench_shape(name, model, batch, objective, args.rounds, args.device)
    if "short" in args.shapes:
        model, batch = short_task_case(args.short_pairs, args.stage)
        name = f"{args.stage} short ({args.short_pairs} pairs)"
        results += bench_shape(name, model, batch, objective, args.short_rounds, args.device)
    print(f"load after {os.getloadavg()}")
    print(
        "| shape | path | rows x width | median fwd+bwd (s) | padded / path | saved activations (MiB) | path / padded |"
    )
    print("|---|---|---|---|---|---|---|")
    peers = {r["shape"]: r for r in results if r["path"] == "padded"}
    for r in results:
        peer = peers[r["shape"]]
        cuda = "" if r["cuda_peak_mib"] is None else f" (CUDA peak {r['cuda_peak_mib']:.0f})"
        speed = peer["median_s"] / r["median_s"]
        print(
            f"| {r['shape']} | {r['path']} | {r['slots']} | {r['median_s']:.3f} | {speed:.2f}x "
            f"| {r['saved_mib']:.1f}{cuda} | {r['saved_mib'] / peer['saved_mib']:.2f} |"
        )


if __name__ == "__main__":
    main()
