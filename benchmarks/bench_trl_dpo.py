"""lit-rlhf's DPOModule against TRL's DPOTrainer: preference pairs per second, peak memory, equal learning.

    bash benchmarks/setup_trl.sh                        # once: benchmarks/.venv-trl (lit-rlhf + trl==1.16.0)
    benchmarks/.venv-trl/bin/python benchmarks/bench_trl_dpo.py [--repeats 3] [--threads 2]

Both sides train the same model (the shipped tiny SFT policy, and a ~11M-parameter random Llama
with the same tokenizer) on the same embedded preference pairs in the same order, with the same
batch, steps, seed, sigmoid loss (beta 0.1) and frozen reference (a copy of the policy, forward
online), AdamW (lr 5e-4, no weight decay, constant), fp32, no gradient clipping, no evaluation,
checkpoint or external logger. Ours runs under a Lightning Trainer, TRL's under `trainer.train()`.
Throughput counts the steps after a warm-up; each side runs in its own process (its own peak RSS),
and repetitions alternate which side goes first. The first-step loss must agree to 1e-4 (else exit
1); the log-probs behind it, every later step's loss and (tiny model) the held-out gold reward of
samples after training are reported beside it. Results: benchmarks/results/dpo.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path

import _trl_common as common

# Our metric -> TRL's: the first batch's mean summed log-probs under the initial policy.
FIRST_STEP_METRICS = {"logps_chosen": "logps/chosen", "logps_rejected": "logps/rejected"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_arguments(parser, tiny=(32, 30), large=(8, 10), lr=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--gold-prompts", type=int, default=128, help="held-out prompts sampled after training")
    args = parser.parse_args(argv)
    args.worker_flags = ["--beta", str(args.beta)]
    return args


def held_out_gold_reward(policy, tokenizer, prompts: int) -> float:
    """Mean gold reward of responses sampled (fixed seed) to the first `prompts` validation prompts."""
    import torch

    from lit_rlhf.data.collate import PromptItem, collate_prompts
    from lit_rlhf.data.tokenization import encode_prompts
    from lit_rlhf.modules.common import sample_and_score, seeded_rng
    from lit_rlhf.ops.generation import SamplingConfig
    from lit_rlhf.task.gold_reward import GoldReward
    from lit_rlhf.task.sources import EmbeddedPrompts

    texts = [r.prompt for r in EmbeddedPrompts(common.SEED).load("validation")[:prompts]]
    ids, _ = encode_prompts(tokenizer, texts, common.MAX_PROMPT_LENGTH)
    batch = collate_prompts([PromptItem(row, text) for row, text in zip(ids, texts)], tokenizer.pad_token_id)
    policy.eval()
    with torch.no_grad(), seeded_rng(common.SEED, torch.device("cpu")):
        _, _, scores = sample_and_score(
            policy,
            tokenizer,
            batch.input_ids,
            batch.attention_mask,
            texts,
            SamplingConfig(max_new_tokens=40),
            GoldReward(),
        )
    return float(scores.mean())


def run_ours(args, order: list[int]) -> None:
    """DPOModule under a Lightning Trainer, fed by our datamodule."""
    import torch

    from lit_rlhf.losses.dpo import SigmoidLoss
    from lit_rlhf.models.loading import load_causal_lm, load_tokenizer
    from lit_rlhf.modules.dpo import DPOModule
    from lit_rlhf.ops.generation import SamplingConfig
    from lit_rlhf.regularizers.nll import NoNLL

    tokenizer = load_tokenizer(args.model_path)
    policy = load_causal_lm(args.model_path)
    datamodule = common.preference_datamodule(tokenizer, args.batch_size)
    module = DPOModule(
        policy,
        SigmoidLoss(beta=args.beta),
        NoNLL(),
        functools.partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.0),
        precompute_ref_logprobs=False,
        sampling=SamplingConfig(),
        val_sample_batches=0,
        skip_nonfinite_updates=False,
        seed=common.SEED,
        tokenizer=tokenizer,
    )
    window = common.StepWindow(args.warmup, args.batch_size)
    trainer = common.lightning_trainer(args.steps, window, tuple(FIRST_STEP_METRICS))
    datamodule.setup()
    rss_before = common.current_rss_mb()
    trainer.fit(module, datamodule=datamodule)
    common.check_first_batch(window, order)
    gold = {"gold": held_out_gold_reward(policy, tokenizer, args.gold)} if args.gold else {}
    common.write_worker_result(args.result, window, rss_before, **gold)


def run_trl(args, order: list[int]) -> None:
    """TRL's DPOTrainer on the same records in the same order, configured to do what ours does."""
    from trl import DPOConfig, DPOTrainer

    from lit_rlhf.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(args.model_path)
    policy = load_causal_lm(args.model_path)
    window = common.StepWindow(args.warmup, args.batch_size)
    trainer_cls = common.recording_trainer(DPOTrainer, window, FIRST_STEP_METRICS)
    with tempfile.TemporaryDirectory() as output_dir:
        config = DPOConfig(**common.trl_arguments(args, output_dir), beta=args.beta, loss_type=["sigmoid"])
        # No ref_model: TRL loads the reference from the policy's path, as its users get it.
        trainer = trainer_cls(
            model=policy,
            args=config,
            train_dataset=common.trl_preference_dataset(order),
            processing_class=tokenizer,
            callbacks=[common.hf_timer(window)],
        )
        rss_before = common.current_rss_mb()
        trainer.train()
    gold = {"gold": held_out_gold_reward(trainer.model, tokenizer, args.gold)} if args.gold else {}
    common.write_worker_result(args.result, window, rss_before, **gold)


def gold_before_training(path: str, prompts: int) -> float:
    from lit_rlhf.models.loading import load_causal_lm, load_tokenizer

    return held_out_gold_reward(load_causal_lm(path), load_tokenizer(path), prompts)


def main(args) -> int:
    environment = common.environment(args.threads)
    before = functools.partial(gold_before_training, prompts=args.gold_prompts)
    with tempfile.TemporaryDirectory() as workdir:
        per_model = {
            spec.name: common.benchmark_model(__file__, args, spec, workdir, args.gold_prompts, before)
            for spec in common.model_specs(args, workdir, kind="causal-lm")
        }
    return common.report("dpo", args, per_model, environment, gold_name="held-out gold reward of samples")


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        import torch

        torch.set_num_threads(arguments.threads)
        plan = json.loads(Path(arguments.plan).read_text())
        (run_ours if arguments.worker == "ours" else run_trl)(arguments, plan)
    else:
        sys.exit(main(arguments))
