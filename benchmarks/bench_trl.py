"""lit-rlhf against TRL: the same training run through both, side by side.

    bash benchmarks/setup_trl.sh     # once: benchmarks/.venv-trl (TRL 1.16.0) and .venv-trl-ppo (TRL 1.12.0)
    benchmarks/.venv-trl/bin/python benchmarks/bench_trl.py dpo reward      # tiny and large model
    benchmarks/.venv-trl/bin/python benchmarks/bench_trl.py rloo grpo [--fixed-length] [--model large]
    benchmarks/.venv-trl-ppo/bin/python benchmarks/bench_trl.py ppo [--iterations 60 --repeats 6 --no-check]
    benchmarks/.venv-trl/bin/python benchmarks/bench_trl.py dpo reward --model large --data long \
        [--trl-defaults] [--ours-override module.prefix_sharing=false] [--profile DIR]

DPO and reward rows also carry model FLOP/s, MFU against a matmul peak probed in the same run, and
real vs padded tokens (toolkit/flops.py). `--data long`: make_long_pairs.py's 150-400-token prompts;
`--trl-defaults`: a third side, TRL at its own defaults (bf16 autocast, gradient checkpointing, ...);
`--ours-override`: Hydra overrides for our side, after the benchmark's own.

Throughput (preference pairs, or sampled episodes, per second over the steps after a warm-up), peak RSS,
a held-out gold score of each final model, and a check that both learn the same: the per-step losses on
identical batches (dpo, reward; exit 1 if the first step's differ by more than 1e-4), or what each trainer
makes of one identical rollout (rloo, grpo, ppo). Results: outputs/benchmarks/ALGO[_large][_fixed][_NAME].json
and the README rows on stdout. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from toolkit import common as toolkit
from toolkit.online import COMPARISONS as ONLINE
from toolkit.preference import COMPARISONS as PREFERENCE

COMPARISONS = PREFERENCE | ONLINE


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("algos", nargs="*", metavar="ALGO", help=", ".join(COMPARISONS))
    parser.add_argument("--model", "--models", help="tiny, large or tiny,large (default: both for dpo and reward)")
    parser.add_argument("--steps", "--iterations", type=int, help="optimizer steps (online: iterations) per run")
    parser.add_argument("--batch-size", type=int, help="pairs per step or prompts per iteration (default: by model)")
    parser.add_argument("--repeats", type=int, help="rounds per side, median reported (default: 3, online 5)")
    parser.add_argument("--warmup", type=int, help="steps left out of the timing (default: 2, online 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--seed", type=int, default=0, help="online rounds take seed, seed + 1, ...")
    parser.add_argument("--fixed-length", action="store_true", help="online: no EOS before max new tokens, both sides")
    parser.add_argument("--no-check", action="store_true", help="online: skip the identical-rollout check")
    parser.add_argument("--name", default="", help="suffix of the results file (e.g. learning)")
    parser.add_argument("--data", default="embedded", help="dpo, reward: embedded, long or embedded,long")
    parser.add_argument("--long-pairs", help="a make_long_pairs.py folder (default: written into the workdir, seed 0)")
    parser.add_argument("--trl-defaults", action="store_true", help="dpo, reward: also TRL at its own defaults")
    parser.add_argument("--arms", help="dpo, reward: the sides to run, of ours,trl,trl_defaults (default: ours,trl)")
    parser.add_argument(
        "--ours-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dpo, reward: a Hydra override for our side, after the benchmark's own (repeatable)",
    )
    parser.add_argument("--profile", help="dpo, reward: write each side's torch.profiler table into this folder")
    parser.add_argument("--no-gold", action="store_true", help="skip the held-out gold score (long data: always)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one side's settings, as JSON: set by the parent
    args = parser.parse_args(argv)
    models = (args.model or "tiny").split(",")
    if not (args.algos or args.worker) or set(args.algos) - set(COMPARISONS) or set(models) - {"tiny", "large"}:
        parser.error(f"name one or more of {', '.join(COMPARISONS)}, and models tiny and/or large")
    return args


def work(run) -> None:
    """One side (or the check) of one comparison, in this process; its result goes to `run.out`."""
    torch.set_num_threads(run.threads)  # the same on both sides; a fresh process, so inter-op can still be set
    torch.set_num_interop_threads(run.threads)
    comparison = COMPARISONS[run.algo]
    if run.side == "probe":
        result = {"peak": toolkit.matmul_peak(run.threads)}
    elif run.side == "check":
        result = comparison.check(run)
    else:
        run.trl_defaults_arm = run.side == "trl_defaults"
        side = getattr(comparison, "trl" if run.trl_defaults_arm else run.side)
        if run.profile:  # torch.profiler over the whole training run; its top ops by own CPU time
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
                result, model, tokenizer = side(run)
            table = profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            Path(run.profile, f"{run.algo}_{run.model}_{run.data}_{run.side}.txt").write_text(table)
        else:
            result, model, tokenizer = side(run)
        result["gold"] = comparison.gold(model, tokenizer) if run.gold else None  # after the peak RSS was read
    Path(run.out).write_text(json.dumps(result))


def compare_on(algo: str, model: str, data: str, args, workdir: str, environment: dict) -> tuple[str, dict]:
    """Both sides of `algo` on `model` and `data` (embedded or long): the results file's name and payload."""
    comparison = COMPARISONS[algo]
    path = toolkit.model_path(comparison.kind, model, workdir)
    initial, (batch_size, steps) = toolkit.load_model(comparison.kind, path), comparison.defaults["sizes"][model]
    run = dict(algo=algo, kind=comparison.kind, unit=comparison.unit, model=model, model_path=path, workdir=workdir)
    run |= dict(batch_size=args.batch_size or batch_size, steps=args.steps or steps, threads=args.threads)
    run |= dict(warmup=args.warmup or comparison.defaults["warmup"], fixed_length=args.fixed_length, seed=args.seed)
    run |= dict(data=data, long_path=args.long_pairs, trl_defaults=args.trl_defaults, ours_overrides=args.ours_override)
    run |= dict(arms=args.arms.split(",") if args.arms else None, profile=args.profile)
    run |= dict(gold=not args.no_gold and data == "embedded", peak=None)
    repeats = args.repeats or comparison.defaults["repeats"]
    label = f"{model} ({sum(p.numel() for p in initial[0].parameters()) / 1e6:.2f}M)"
    print(f"{algo}, {label}: {repeats} rounds of {run['steps']} steps ({run['warmup']} warm-up)", flush=True)
    parts = [
        algo,
        model if model != "tiny" else "",
        "long" if data == "long" else "",
        "fixed" if args.fixed_length else "",
    ]
    parts.append(args.name)
    name, settings = "_".join(p for p in parts if p), run | dict(repeats=repeats, model_path=None, workdir=None)
    payload = dict(model=label, command=f"{comparison.venv}/bin/python {' '.join(sys.argv)}", settings=settings)
    payload |= dict(gold_before=comparison.gold(*initial) if run["gold"] else None) | toolkit.benchmark(
        comparison, run, repeats, not args.no_check
    )
    payload["environment"] = environment | {"load_average_at_end": os.getloadavg()}
    path = toolkit.RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"  wrote {os.path.relpath(path)}", flush=True)
    return name, payload


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        work(SimpleNamespace(**json.loads(args.worker)))
        return 0
    for algo, comparison in ((algo, COMPARISONS[algo]) for algo in args.algos):
        try:
            importlib.import_module(comparison.trl_module)
        except ImportError as error:
            setup = f"run `bash benchmarks/setup_trl.sh`, then {comparison.venv}/bin/python"
            raise SystemExit(f"{algo} needs {comparison.trl_module} ({error}): {setup}") from None
    environment = toolkit.environment(args.threads) | {"load_average_at_start": os.getloadavg()}
    rows, flop_rows, failed = [], [], False
    with tempfile.TemporaryDirectory(prefix="lit-rlhf-bench-") as workdir:
        if "long" in args.data and not args.long_pairs:
            import make_long_pairs

            args.long_pairs = f"{workdir}/long-pairs"
            make_long_pairs.main([args.long_pairs])
        for algo in args.algos:
            for model in (args.model or COMPARISONS[algo].defaults["models"]).split(","):
                for data in args.data.split(",") if algo in PREFERENCE else ["embedded"]:
                    name, payload = compare_on(algo, model, data, args, workdir, environment)
                    if "trl" in payload["runs"]:
                        rows.append(toolkit.table_row(name, COMPARISONS[algo].unit, payload))
                    if "mfu" in payload["summary"]["ours"]:
                        flop_rows += toolkit.flop_rows(data, name, COMPARISONS[algo].unit, payload)
                    failed |= payload["check"].get("failed", False)
    print(toolkit.TABLE_HEADER, *rows, sep="\n")
    if flop_rows:
        print(toolkit.FLOP_HEADER, *flop_rows, sep="\n")
    if failed:
        print("FAILED: the first-step losses differ by more than 1e-4", file=sys.stderr)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
