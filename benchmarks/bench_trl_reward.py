"""lit-rlhf's RewardModel against TRL's RewardTrainer: preference pairs per second, peak memory, equal learning.

    bash benchmarks/setup_trl.sh                        # once: benchmarks/.venv-trl (lit-rlhf + trl==1.16.0)
    benchmarks/.venv-trl/bin/python benchmarks/bench_trl_reward.py [--repeats 3] [--threads 2]

Both sides train the same scalar-head model (the shipped tiny SFT policy with a new head, as
`rm_tiny` starts, and a ~11M-parameter random Llama with the same tokenizer; each saved once so both
sides load the same weights) on the same embedded preference pairs in the
same order, with the same batch, steps, seed, Bradley-Terry loss -log sigmoid(r_w - r_l) (no margin,
no centering), AdamW (lr 1e-3, no weight decay, constant), fp32, no gradient clipping, no
evaluation, checkpoint or external logger. Ours runs under a Lightning Trainer, TRL's under
`trainer.train()`. Throughput counts the steps after a warm-up; each side runs in its own process
(its own peak RSS), and repetitions alternate which side goes first. The first-step loss must
agree to 1e-4 (else exit 1); the first batch's reward margin, every later step's loss and (tiny
model) the agreement with the gold ordering of held-out pairs after training are reported beside
it. Results: benchmarks/results/reward.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path

import _trl_common as common

# Our metric -> TRL's: the first batch's mean reward margin and accuracy under the initial model.
FIRST_STEP_METRICS = {"margin": "margin", "accuracy": "accuracy"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_arguments(parser, tiny=(32, 40), large=(8, 12), lr=1e-3)
    parser.add_argument("--gold-pairs", type=int, default=1000, help="held-out pairs scored after training")
    return parser.parse_args(argv)


def held_out_gold_accuracy(model, tokenizer, pairs: int) -> float:
    """How often the model orders the first `pairs` validation pairs as the gold reward does (gold ties left out)."""
    import torch

    from lit_rlhf.ops.forward import last_token_rewards
    from lit_rlhf.task.gold_reward import GoldReward

    datamodule = common.preference_datamodule(tokenizer, batch_size=256)
    datamodule.setup()
    datamodule.val_items = datamodule.val_items[:pairs]
    agree, decided = 0, 0
    model.eval()
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            rewards = last_token_rewards(model, batch.input_ids, batch.attention_mask)
            gold = GoldReward()(batch.prompts, batch.responses)
            model_diff = rewards[batch.better_idx] - rewards[batch.worse_idx]
            gold_diff = gold[batch.better_idx] - gold[batch.worse_idx]
            agree += int(((torch.sign(model_diff) == torch.sign(gold_diff)) & (gold_diff != 0)).sum())
            decided += int((gold_diff != 0).sum())
    return agree / decided


def run_ours(args, order: list[int]) -> None:
    """RewardModel under a Lightning Trainer, fed by our datamodule."""
    import torch

    from lit_rlhf.losses.reward import BradleyTerryLoss
    from lit_rlhf.models.loading import load_reward_model, load_tokenizer
    from lit_rlhf.modules.reward_model import RewardModel

    tokenizer = load_tokenizer(args.model_path)
    model = load_reward_model(args.model_path)
    datamodule = common.preference_datamodule(tokenizer, args.batch_size)
    module = RewardModel(
        model,
        BradleyTerryLoss(),
        centering_coef=0.0,
        optimizer=functools.partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.0),
        skip_nonfinite_updates=False,
        tokenizer=tokenizer,
    )
    window = common.StepWindow(args.warmup, args.batch_size)
    trainer = common.lightning_trainer(args.steps, window, tuple(FIRST_STEP_METRICS))
    datamodule.setup()
    rss_before = common.current_rss_mb()
    trainer.fit(module, datamodule=datamodule)
    common.check_first_batch(window, order)
    gold = {"gold": held_out_gold_accuracy(model, tokenizer, args.gold)} if args.gold else {}
    common.write_worker_result(args.result, window, rss_before, **gold)


def run_trl(args, order: list[int]) -> None:
    """TRL's RewardTrainer on the same records in the same order, configured to do what ours does."""
    from trl import RewardConfig, RewardTrainer

    from lit_rlhf.models.loading import load_reward_model, load_tokenizer

    tokenizer = load_tokenizer(args.model_path)
    model = load_reward_model(args.model_path)
    window = common.StepWindow(args.warmup, args.batch_size)
    trainer_cls = common.recording_trainer(RewardTrainer, window, FIRST_STEP_METRICS)
    with tempfile.TemporaryDirectory() as output_dir:
        # No margin column: TRL then uses plain Bradley-Terry, as ours with loss/reward=bradley_terry.
        config = RewardConfig(**common.trl_arguments(args, output_dir), center_rewards_coefficient=None)
        trainer = trainer_cls(
            model=model,
            args=config,
            train_dataset=common.trl_preference_dataset(order),
            processing_class=tokenizer,
            callbacks=[common.hf_timer(window)],
        )
        rss_before = common.current_rss_mb()
        trainer.train()
    gold = {"gold": held_out_gold_accuracy(trainer.model, tokenizer, args.gold)} if args.gold else {}
    common.write_worker_result(args.result, window, rss_before, **gold)


def gold_before_training(path: str, pairs: int) -> float:
    from lit_rlhf.models.loading import load_reward_model, load_tokenizer

    return held_out_gold_accuracy(load_reward_model(path), load_tokenizer(path), pairs)


def main(args) -> int:
    environment = common.environment(args.threads)
    before = functools.partial(gold_before_training, pairs=args.gold_pairs)
    with tempfile.TemporaryDirectory() as workdir:
        per_model = {
            spec.name: common.benchmark_model(__file__, args, spec, workdir, args.gold_pairs, before)
            for spec in common.model_specs(args, workdir, kind="reward")
        }
    return common.report("reward", args, per_model, environment, gold_name="held-out gold accuracy")


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        import torch

        torch.set_num_threads(arguments.threads)
        plan = json.loads(Path(arguments.plan).read_text())
        (run_ours if arguments.worker == "ours" else run_trl)(arguments, plan)
    else:
        sys.exit(main(arguments))
