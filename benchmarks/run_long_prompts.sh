#!/usr/bin/env bash
# The "Against TRL 1.16 on long prompts: MFU and padding" campaign (README), one session, ~55 min on 2 cores.
# Extra arguments (e.g. --ours-override module.prefix_sharing=false --name noshare) go to every command.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=benchmarks/.venv-trl/bin/python
LONG=${LONG_PAIRS:-/tmp/long-pairs}
[ -f "$LONG/train.jsonl" ] || .venv/bin/python benchmarks/make_long_pairs.py "$LONG"
run() {
    echo "== $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*"
    "$PY" benchmarks/bench_trl.py "$@" || echo "== exit $? (a first-step check failed, or a worker did)"
}
# ours vs TRL matched to ours (fp32, no clipping, constant lr): 3 alternating rounds
run dpo reward --model large --data long --long-pairs "$LONG" --batch-size 2 --steps 6 --warmup 2 --repeats 3 "$@"
run dpo reward --model large --data embedded --repeats 3 --no-gold "$@"
# ours vs TRL at its own defaults (bf16 autocast, gradient checkpointing, fused AdamW, clipping, linear decay): 1 round
run dpo reward --model large --data long --long-pairs "$LONG" --batch-size 2 --steps 3 --warmup 1 --repeats 1 \
    --arms ours,trl_defaults --trl-defaults --name trl_defaults "$@"
run dpo reward --model large --data embedded --steps 4 --warmup 2 --repeats 1 --no-gold \
    --arms ours,trl_defaults --trl-defaults --name trl_defaults "$@"
# where the time goes: torch.profiler over one round of each side, long prompts
mkdir -p outputs/benchmarks/profiles
run dpo reward --model large --data long --long-pairs "$LONG" --batch-size 2 --steps 3 --warmup 1 --repeats 1 \
    --profile outputs/benchmarks/profiles --name profile "$@"
echo "== $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg): done"
