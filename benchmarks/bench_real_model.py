"""PPO and DPO on a ~50M-parameter Llama: full fine-tuning vs LoRA, fp32 vs bf16-mixed, reference copy vs adapters off.

A randomly initialised Llama built from a config (MODEL below, 49.9M parameters) with the embedded task's
512-token tokenizer, so the task's prompts, pairs, `tiny-rm` reward model and critic work unchanged. Each arm
trains `--steps` batches per epoch of `+experiment=dpo` (its 2 epochs: 2 × steps) or `+experiment=ppo_kl`
(one epoch; one step = one iteration: rollout + update) under the config's Lightning Trainer, in its own
fresh interpreter (its own VmHWM), one torch thread. Reported: the median step after one warm-up step,
peak RSS, and both as ratios of the fp32 full-fine-tuning arm of the same algorithm in the same run.

    python benchmarks/bench_real_model.py [--steps 4 --dpo-batch 2 --ppo-batch 2 --threads 1]

The "copy" arm is LoRA with π_ref a frozen *copy* (merged, plain Llama) instead of the policy with its
adapters off: the code has no switch for it, so the child builds the module with `Reference`'s adapter check
patched to False (it then deep-copies the policy, as without LoRA) and merges the copy's zero LoRA update.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

from toolkit import common as toolkit

# 10 layers × (attention 4·640² + MLP 3·640·1728) + tied 512 × 640 embedding = 49.9M parameters.
MODEL = dict(hidden_size=640, intermediate_size=1728, num_hidden_layers=10, num_attention_heads=10)
MODEL |= dict(num_key_value_heads=10, max_position_embeddings=256, tie_word_embeddings=True)
# (name, experiment, adapter, precision, reference); the first arm of each algorithm is the baseline.
ARMS = [
    (f"{algo} {adapter} {precision}{' copy' if copied else ''}", experiment, adapter, precision, copied)
    for algo, experiment in (("dpo", "dpo"), ("ppo", "ppo_kl"))
    for adapter, precision, copied in (
        ("none", "32-true", False),
        ("lora", "32-true", False),
        ("lora", "32-true", True),
        ("none", "bf16-mixed", False),
        ("lora", "bf16-mixed", False),
    )
]


def build_model(workdir: Path) -> str:
    """The random 50M Llama (seed 0) with the tiny tokenizer, saved once under `workdir`."""
    import torch

    from lit_rlhf.config import asset_path
    from lit_rlhf.models.loading import build_causal_lm

    path = workdir / "llama-50m"
    if not path.exists():
        torch.manual_seed(toolkit.SEED)
        tokenizer = toolkit.load_tokenizer(asset_path("tiny-sft"))
        build_causal_lm(tokenizer, "llama", **MODEL).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return str(path)


def run_arm(arm: dict) -> dict:
    """One arm in this process: `steps` training steps under Lightning, timed by the toolkit's Clock."""
    import torch
    from hydra.utils import instantiate

    torch.set_num_threads(arm["threads"])
    overrides = [f"+experiment={arm['experiment']}", f"seed={toolkit.SEED}", f"adapter={arm['adapter']}"]
    overrides += [f"model.policy.name_or_path={arm['model']}", f"trainer.precision={arm['precision']}"]
    overrides += [f"trainer.limit_train_batches={arm['steps']}", "trainer.val_check_interval=null"]
    overrides += ["trainer.limit_val_batches=0", "+trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]
    overrides += ["callbacks=none", "validate_before_fit=false", f"paths.output_dir={arm['workdir']}/out"]
    overrides += [f"data.batch_size={arm['batch']}"]
    cfg, clock = toolkit.compose_train(overrides), toolkit.Clock()
    if arm["copied"]:
        with mock.patch("lit_rlhf.models.reference.is_adapted", return_value=False):
            module, datamodule = toolkit.build_ours(cfg)
        # The copy is a PeftModel whose LoRA B matrices are zero: merging leaves the initial policy's weights.
        module.reference.copy = module.reference.copy.merge_and_unload()
        check = torch.randint(0, 500, (1, 16))
        with torch.no_grad(), module.reference.model() as reference, module.policy.disable_adapter():
            gap = (reference(check).logits - module.policy(check).logits).abs().max().item()
        assert not module.reference.shares_policy and gap < 1e-5, gap
    else:
        module, datamodule = toolkit.build_ours(cfg)
    trainable = sum(p.numel() for p in module.policy.parameters() if p.requires_grad)
    trainer = instantiate(cfg.trainer, callbacks=[toolkit.lightning_clock(clock, {})], logger=False)
    clock.start()
    trainer.fit(module, datamodule=datamodule)
    result = clock.result(arm["batch"], warmup=1)
    return dict(
        median_step_s=statistics.median(result["step_seconds"]),
        step_seconds=result["step_seconds"],
        peak_rss_mib=result["peak_rss_mib"],
        rss_before_training_mib=result["rss_before_training_mib"],
        trainable_policy_params=trainable,
        reference="copy" if not module.reference.shares_policy else "adapters off",
    )


def spawn(arm: dict) -> dict:
    """`run_arm` in a fresh interpreter, one thread, passive OpenMP waits (the machine is shared)."""
    threads = str(arm["threads"])
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run([sys.executable, __file__, "--arm", json.dumps(arm)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"arm {arm['name']} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="batches per epoch; step 1: warm-up")
    parser.add_argument("--dpo-batch", type=int, default=2, help="preference pairs per DPO step")
    parser.add_argument("--ppo-batch", type=int, default=2, help="prompts per PPO iteration")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="arm names to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(json.loads(args.arm))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model, results = build_model(Path(tmp)), {}
        print(f"load average before {os.getloadavg()}; {args.threads} thread(s) per arm; model {MODEL}", flush=True)
        for name, experiment, adapter, precision, copied in ARMS:
            if args.only and name not in args.only:
                continue
            batch = args.dpo_batch if experiment == "dpo" else args.ppo_batch
            arm = dict(name=name, experiment=experiment, adapter=adapter, precision=precision, copied=copied)
            arm |= dict(batch=batch, steps=args.steps, threads=args.threads, model=model, workdir=tmp)
            results[name] = spawn(arm) | {"load_average_after": os.getloadavg()}
            r = results[name]
            print(f"  {name}: median {r['median_step_s']:.2f} s, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    print(f"load average after {os.getloadavg()}")
    header = "| arm | reference | trainable policy params | median step (s) | vs full fp32 | peak RSS (MiB) "
    header += "| vs full fp32 |"
    print(header + "\n" + "|---" * 7 + "|")
    for name, r in results.items():
        base = results.get(f"{name.split()[0]} none 32-true", r)
        time_ratio, rss_ratio = r["median_step_s"] / base["median_step_s"], r["peak_rss_mib"] / base["peak_rss_mib"]
        cells = [name, r["reference"], f"{r['trainable_policy_params'] / 1e6:.2f}M", f"{r['median_step_s']:.2f}"]
        cells += [f"{time_ratio:.2f}x", f"{r['peak_rss_mib']:.0f}", f"{rss_ratio:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
