"""DPO and reward modelling: our DPOModule and RewardModel against TRL 1.16's DPOTrainer and RewardTrainer.

Both sides train the same model on the same embedded preference pairs in the same order (our shuffled
loader's, handed to TRL with its sequential sampler), with the same batch, steps, seed, loss, AdamW (constant
lr, no weight decay), fp32, no gradient clipping, evaluation, checkpoints or logger. Ours runs under a
Lightning Trainer fed by our datamodule, TRL's under `trainer.train()`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import _toolkit as toolkit
import torch

from lit_rlhf.models.loading import load_tokenizer
from lit_rlhf.task.sources import EmbeddedPreferencePairs

DPO_BETA, DPO_LR, REWARD_LR = 0.1, 5e-4, 1e-3
# Our metric -> TRL's, compared at the first step: the mean summed log-probs; the reward margin and accuracy.
DPO_METRICS = {"logps_chosen": "logps/chosen", "logps_rejected": "logps/rejected"}
REWARD_METRICS = {"reward_margin": "margin", "reward_accuracy": "accuracy"}


def plan_path(run) -> Path:
    return Path(run.workdir) / f"plan-{run.model}-{run.batch_size}x{run.steps}.json"


def record_indices(batch) -> list[int]:
    """Training-record indices of a pairwise batch: completion ids count from 0, two per record."""
    return (batch.sequence_ids[::2] // 2).tolist()


def plan_training_order(run) -> None:
    """Write the indices of the training records in the order our shuffled loader yields them."""
    datamodule = toolkit.preference_datamodule(load_tokenizer(run.model_path), run.batch_size)
    batches = zip(datamodule.train_dataloader(), range(run.steps))
    plan_path(run).write_text(json.dumps([i for batch, _ in batches for i in record_indices(batch)]))


def dpo_module(policy, tokenizer):
    from lit_rlhf.losses.dpo import SigmoidLoss
    from lit_rlhf.modules.dpo import DPOModule
    from lit_rlhf.regularizers.nll import NoNLL

    optimizer = functools.partial(torch.optim.AdamW, lr=DPO_LR, weight_decay=0.0)
    # The frozen reference is forwarded online, as TRL's.
    plain = dict(precompute_ref_logprobs=False, val_sample_batches=0, skip_nonfinite_updates=False, seed=toolkit.SEED)
    plain.update(reference_dtype="float32", prefix_sharing=False, padding_free=False, padding_free_row_length=None)
    loss = SigmoidLoss(beta=DPO_BETA, label_smoothing=0.0)
    return DPOModule(policy, loss, NoNLL(), optimizer, sampling=toolkit.SAMPLING, tokenizer=tokenizer, **plain)


def reward_module(model, tokenizer):
    from lit_rlhf.losses.reward import BradleyTerryLoss
    from lit_rlhf.modules.reward_model import RewardModel
    from lit_rlhf.regularizers.nll import NoNLL

    optimizer = functools.partial(torch.optim.AdamW, lr=REWARD_LR, weight_decay=0.0)
    return RewardModel(
        model,
        BradleyTerryLoss(),
        0.0,
        optimizer,
        skip_nonfinite_updates=False,
        nll=NoNLL(),
        prefix_sharing=False,
        padding_free=False,
        padding_free_row_length=None,
        tokenizer=tokenizer,
    )


def ours_side(make_module, metrics: dict[str, str], run):
    """Our module under a Lightning Trainer as conf/trainer/cpu.yaml builds it, less validation, logger, checkpoints."""
    import lightning as L

    model, tokenizer = toolkit.load_model(run.kind, run.model_path)
    clock = toolkit.Clock()
    tick = toolkit.lightning_clock(clock, {"loss": "train/loss"} | {name: f"train/{name}" for name in metrics})
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    length = dict(max_steps=run.steps, limit_val_batches=0, num_sanity_val_steps=0, inference_mode=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", callbacks=[tick], **length, **quiet)
    module, datamodule = make_module(model, tokenizer), toolkit.preference_datamodule(tokenizer, run.batch_size)
    clock.start()
    trainer.fit(module, datamodule=datamodule)
    if record_indices(clock.first_batch) != json.loads(plan_path(run).read_text())[: run.batch_size]:
        raise RuntimeError("our first batch is not the planned one: the two sides would see different data")
    return clock.result(run.batch_size, run.warmup), model, tokenizer


def trl_side(trainer_name: str, metrics: dict[str, str], lr: float, settings: dict, run):
    """TRL's `trainer_name`Trainer on the planned records in the planned order, set up to do what ours does."""
    import trl
    from datasets import Dataset

    model, tokenizer = toolkit.load_model(run.kind, run.model_path)
    clock = toolkit.Clock()

    class Recording(getattr(trl, f"{trainer_name}Trainer")):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            clock.pending = {"loss": loss[0] if return_outputs else loss}
            clock.pending |= {ours: self._metrics["train"][key][-1] for ours, key in metrics.items()}
            return loss

    records = EmbeddedPreferencePairs(toolkit.SEED).load("train")
    rows = [records[i] for i in json.loads(plan_path(run).read_text())]
    dataset = Dataset.from_dict({key: [getattr(r, key) for r in rows] for key in ("prompt", "chosen", "rejected")})
    length = dict(max_steps=run.steps, per_device_train_batch_size=run.batch_size, max_length=toolkit.MAX_LENGTH)
    # torch.optim.AdamW at a constant lr, as ours (TRL defaults to the fused AdamW, linear decay, clipping at 1.0).
    optimizer = dict(optim="adamw_torch", learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0)
    optimizer |= dict(weight_decay=0.0, max_grad_norm=0.0)
    # The dataset is already in our shuffled order; no evaluation, as ours.
    order = dict(seed=toolkit.SEED, train_sampling_strategy="sequential", eval_strategy="no")
    config = getattr(trl, f"{trainer_name}Config")(
        output_dir=f"{run.workdir}/trl", **length, **optimizer, **order, **toolkit.TRL_PLAIN, **settings
    )
    trainer = Recording(model, args=config, train_dataset=dataset, processing_class=tokenizer)
    toolkit.train_trl(trainer, clock)
    return clock.result(run.batch_size, run.warmup), trainer.model, tokenizer


_PAIRS = dict(unit="pairs", prepare=plan_training_order)
COMPARISONS = {
    # No ref_model for TRL: it loads the reference from the policy's path, as its users get it. Gold: the
    # mean gold reward of 128 held-out responses sampled with seed 0 after training.
    "dpo": toolkit.Comparison(
        "causal-lm",
        ours=functools.partial(ours_side, dpo_module, DPO_METRICS),
        trl=functools.partial(trl_side, "DPO", DPO_METRICS, DPO_LR, dict(beta=DPO_BETA, loss_type=["sigmoid"])),
        gold=functools.partial(toolkit.gold_reward_of_samples, seed=toolkit.SEED),
        defaults=dict(repeats=3, warmup=2, models="tiny,large", sizes={"tiny": (32, 30), "large": (8, 10)}),
        **_PAIRS,
    ),
    # No margin column and no centering: TRL's plain Bradley-Terry, as our loss/reward=bradley_terry. Gold:
    # the agreement with the gold ordering of 1,000 held-out pairs.
    "reward": toolkit.Comparison(
        "reward",
        ours=functools.partial(ours_side, reward_module, REWARD_METRICS),
        trl=functools.partial(trl_side, "Reward", REWARD_METRICS, REWARD_LR, dict(center_rewards_coefficient=None)),
        gold=toolkit.gold_accuracy,
        defaults=dict(repeats=3, warmup=2, models="tiny,large", sizes={"tiny": (32, 40), "large": (8, 12)}),
        **_PAIRS,
    ),
}
