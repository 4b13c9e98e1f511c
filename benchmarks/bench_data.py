"""Setup time and peak memory of a preference datamodule on a large HH-RLHF-format file.

Each measurement is a fresh process that composes `+experiment=rm_tiny data=hh_rlhf data.path=<file>`,
builds the run and calls `datamodule.setup("fit")`: the seconds of that call and the process's peak RSS
(VmHWM; imports and the tiny models included). The first run tokenizes into an empty cache, the next ones reuse it.

    python benchmarks/make_hh_pairs.py /tmp/hh/train.jsonl
    python benchmarks/bench_data.py /tmp/hh/train.jsonl --runs 3
    python benchmarks/bench_data.py /tmp/hh/train.jsonl --src /path/to/older/checkout/src   # a peer
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = """
import json, sys, time
from hydra import compose, initialize_config_dir
from lit_rlhf.config import CONFIG_DIR, register_resolvers
from lit_rlhf.train import build
register_resolvers()
with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
    cfg = compose("train", overrides=sys.argv[1:])
run = build(cfg)
started = time.perf_counter()
run.datamodule.setup("fit")
seconds = time.perf_counter() - started
# VmHWM, not ru_maxrss: a spawned process starts with its parent's peak as its own.
peak_mib = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) / 1024
print(json.dumps({"setup_seconds": seconds, "peak_rss_mib": peak_mib}))
"""


def measure(data: Path, cache_dir: Path, output_dir: Path, src: Path | None, extra: list[str]) -> dict:
    overrides = [
        "+experiment=rm_tiny",
        "data=hh_rlhf",
        f"data.path={data}",
        "logger=csv",
        f"paths.output_dir={output_dir}",
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LIT_RLHF_CACHE": str(cache_dir)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *overrides], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="an HH-RLHF-format .jsonl file or folder")
    parser.add_argument("--runs", type=int, default=2, help="the first tokenizes, the others reuse the cache")
    parser.add_argument("--src", type=Path, default=None, help="measure another checkout's src/ instead")
    # Anything else on the command line is a config override, e.g. data.num_proc=2.
    args, overrides = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as scratch:
        cache_dir, output_dir = Path(scratch) / "cache", Path(scratch) / "out"
        for run in range(args.runs):
            result = measure(args.data, cache_dir, output_dir, args.src, overrides)
            label = "first (empty cache)" if run == 0 else f"again ({run})"
            print(f"{label}: setup {result['setup_seconds']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
