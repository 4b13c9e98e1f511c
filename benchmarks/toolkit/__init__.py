"""What the benchmarks share: one toolkit, imported by the `bench_*.py` scripts beside it.

* `common`: data, models, gold scores, step clocks, our configs, worker processes, tables, and `RESULTS`
  (`outputs/benchmarks/`, outside the tree) where every benchmark writes;
* `preference`, `online`: the two sides (ours, TRL's) of each comparison against TRL (DPO and reward;
  RLOO, GRPO and PPO);
* `flops`: model FLOPs per step and MFU against a measured matmul peak.

Not commands: run the scripts (benchmarks/README.md).
"""
