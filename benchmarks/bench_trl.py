"""lit-rlhf against TRL: the same training run through both, side by side.

    bash benchmarks/setup_trl.sh     # once: benchmarks/.venv-trl (TRL 1.16.0) and .venv-trl-ppo (TRL 1.12.0)
    benchmarks/.venv-trl/bin/python benchmarks/bench_trl.py dpo reward      # tiny and large model
    benchmarks/.venv-trl/bin/python benchmarks/bench_trl.py rloo grpo [--fixed-length] [--model large]
    benchmarks/.venv-trl-ppo/bin/python benchmarks/bench_trl.py ppo [--iterations 60 --repeats 6 --no-check]

Throughput (preference pairs, or sampled episodes, per second over the steps after a warm-up), peak RSS,
a held-out gold score of each final model, and a check that both learn the same: the per-step losses on
identical batches (dpo, reward; exit 1 if the first step's differ by more than 1e-4), or what each trainer
makes of one identical rollout (rloo, grpo, ppo). Results: benchmarks/results/ALGO[_large][_fixed][_NAME].json
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

import _toolkit as toolkit
import torch
from _online import COMPARISONS as ONLINE
from _preference import COMPARISONS as PREFERENCE

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
    if run.side == "check":
        result = comparison.check(run)
    else:
        result, model, tokenizer = getattr(comparison, run.side)(run)
        result["gold"] = comparison.gold(model, tokenizer)  # after the peak RSS was read
    Path(run.out).write_text(json.dumps(result))


def compare_on(algo: str, model: str, args, workdir: str, environment: dict) -> tuple[str, dict]:
    """Both sides of `algo` on `model`: the results file's name and payload."""
    comparison = COMPARISONS[algo]
    path = toolkit.model_path(comparison.kind, model, workdir)
    initial, (batch_size, steps) = toolkit.load_model(comparison.kind, path), comparison.defaults["sizes"][model]
    run = dict(algo=algo, kind=comparison.kind, unit=comparison.unit, model=model, model_path=path, workdir=workdir)
    run |= dict(batch_size=args.batch_size or batch_size, steps=args.steps or steps, threads=args.threads)
    run |= dict(warmup=args.warmup or comparison.defaults["warmup"], fixed_length=args.fixed_length, seed=args.seed)
    repeats = args.repeats or comparison.defaults["repeats"]
    label = f"{model} ({sum(p.numel() for p in initial[0].parameters()) / 1e6:.2f}M)"
    print(f"{algo}, {label}: {repeats} rounds of {run['steps']} steps ({run['warmup']} warm-up)", flush=True)
    parts = [algo, model if model != "tiny" else "", "fixed" if args.fixed_length else "", args.name]
    name, settings = "_".join(p for p in parts if p), run | dict(repeats=repeats, model_path=None, workdir=None)
    payload = dict(model=label, command=f"{comparison.venv}/bin/python {' '.join(sys.argv)}", settings=settings)
    payload |= dict(gold_before=comparison.gold(*initial)) | toolkit.benchmark(
        comparison, run, repeats, not args.no_check
    )
    payload["environment"] = environment | {"load_average_at_end": os.getloadavg()}
    path = toolkit.BENCHMARKS / "results" / f"{name}.json"
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
            raise SystemExit(f"{algo} needs {comparison.trl_module} ({error}): {setup}")
    environment = toolkit.environment(args.threads) | {"load_average_at_start": os.getloadavg()}
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="lit-rlhf-bench-") as workdir:
        for algo in args.algos:
            for model in (args.model or COMPARISONS[algo].defaults["models"]).split(","):
                name, payload = compare_on(algo, model, args, workdir, environment)
                rows.append(toolkit.table_row(name, COMPARISONS[algo].unit, payload))
                failed |= payload["check"].get("failed", False)
    print(toolkit.TABLE_HEADER, *rows, sep="\n")
    if failed:
        print("FAILED: the first-step losses differ by more than 1e-4", file=sys.stderr)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
