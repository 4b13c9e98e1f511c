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

from lit_rlhf.data.preferences import HHRLHFSource
from lit_rlhf.models.loading import load_tokenizer
from lit_rlhf.task.sources import EmbeddedPreferencePairs
from toolkit import common as toolkit

DPO_BETA, DPO_LR, REWARD_LR = 0.1, 5e-4, 1e-3
LONG_MAX_LENGTH = 512  # make_long_pairs.py: prompts <= 400 tokens, responses <= 80: nothing is cut
# Our metric -> TRL's, compared at the first step: the mean summed log-probs; the reward margin and accuracy.
DPO_METRICS = {"logps_chosen": "logps/chosen", "logps_rejected": "logps/rejected"}
REWARD_METRICS = {"reward_margin": "margin", "reward_accuracy": "accuracy"}


def plan_path(run) -> Path:
    return Path(run.workdir) / f"plan-{run.model}-{run.data}-{run.batch_size}x{run.steps}.json"


def data_overrides(run) -> list[str]:
    """Our data config: the embedded pairs, or (long) the HH-RLHF-format folder of make_long_pairs.py."""
    if run.data == "embedded":
        return ["data=task_pairs"]
    return [
        "data=hh_rlhf",
        f"data.path={run.long_path}",
        f"data.max_length={LONG_MAX_LENGTH}",
        "data.max_prompt_length=448",
    ]


def training_records(run) -> list:
    """The training split's records in the order our datamodule indexes them (prompt, chosen, rejected text)."""
    if run.data == "embedded":
        return EmbeddedPreferencePairs(toolkit.SEED).load("train")
    return HHRLHFSource(run.long_path, skip_invalid=False).load("train")


def record_indices(batch) -> list[int]:
    """Training-record indices of a pairwise batch: completion ids count from 0, two per record."""
    return (batch.sequence_ids[::2] // 2).tolist()


def plan_training_order(run) -> None:
    """Write the indices of the training records in the order our shuffled loader yields them."""
    datamodule = toolkit.preference_datamodule(load_tokenizer(run.model_path), run.batch_size, data_overrides(run))
    batches = zip(datamodule.train_dataloader(), range(run.steps))
    plan_path(run).write_text(json.dumps([i for batch, _ in batches for i in record_indices(batch)]))


# Our side as `python -m lit_rlhf.train +experiment=...` composes it, set to what TRL is set to: constant lr
# (no scheduler), no weight decay, no validation sampling, the frozen reference in fp32 and forwarded online.
# `--ours-override KEY=VALUE` (e.g. module.prefix_sharing=true) comes after these.
OUR_DPO = ["+experiment=dpo", "module.scheduler=null", "module.precompute_ref_logprobs=false"]
OUR_DPO += ["module.val_sample_batches=0", "module.skip_nonfinite_updates=false", "model.frozen_dtype=float32"]
OUR_DPO += [f"module.optimizer.lr={DPO_LR}", "module.optimizer.weight_decay=0.0", "loss/dpo=sigmoid"]
OUR_DPO += [f"loss.dpo.beta={DPO_BETA}", "adapter=none", "regularizer/nll=none"]
OUR_REWARD = ["+experiment=rm_tiny", "module.scheduler=null", f"module.optimizer.lr={REWARD_LR}"]
OUR_REWARD += ["module.optimizer.weight_decay=0.0", "module.centering_coef=0.0", "loss/reward=bradley_terry"]
OUR_REWARD += ["module.skip_nonfinite_updates=false", "adapter=none", "regularizer/nll=none"]


def our_module(base: list[str], model_key: str, run):
    """Our LightningModule from the composed config (model from `run.model_path`) and the model it trains."""
    from hydra.utils import instantiate

    paths = [f"model.{model_key}.name_or_path={run.model_path}", f"model.tokenizer.name_or_path={run.model_path}"]
    cfg = toolkit.compose_train([*base, f"seed={toolkit.SEED}", *paths, *run.ours_overrides])
    tokenizer = instantiate(cfg.model.tokenizer)
    module = instantiate(cfg.module, tokenizer=tokenizer)
    return module, (module.policy if model_key == "policy" else module.model), tokenizer


def ours_side(make_module, metrics: dict[str, str], run):
    """Our module under a Lightning Trainer as conf/trainer/cpu.yaml builds it, less validation, logger, checkpoints."""
    import lightning as L

    module, model, tokenizer = make_module(run)
    clock = toolkit.Clock(toolkit.FlopCounter(run.kind), run.peak)
    tick = toolkit.lightning_clock(clock, {"loss": "train/loss"} | {name: f"train/{name}" for name in metrics})
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    length = dict(max_steps=run.steps, limit_val_batches=0, num_sanity_val_steps=0, inference_mode=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", callbacks=[tick], **length, **quiet)
    datamodule = toolkit.preference_datamodule(tokenizer, run.batch_size, data_overrides(run))
    clock.start()
    trainer.fit(module, datamodule=datamodule)
    if record_indices(clock.first_batch) != json.loads(plan_path(run).read_text())[: run.batch_size]:
        raise RuntimeError("our first batch is not the planned one: the two sides would see different data")
    return clock.result(run.batch_size, run.warmup), model, tokenizer


def trl_side(trainer_name: str, metrics: dict[str, str], lr: float, settings: dict, run):
    """TRL's `trainer_name`Trainer on the planned records in the planned order, set up to do what ours does.

    With `run.trl_defaults_arm`, TRL as its users get it instead: its own defaults for precision (bf16
    autocast), gradient checkpointing, optimizer (fused AdamW), clipping (1.0), lr schedule (linear decay),
    max_length (1024) and collator; only lr, batch, steps, seed and data order stay ours.
    """
    import trl
    from datasets import Dataset

    model, tokenizer = toolkit.load_model(run.kind, run.model_path)
    clock = toolkit.Clock(toolkit.FlopCounter(run.kind), run.peak)

    class Recording(getattr(trl, f"{trainer_name}Trainer")):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            clock.pending = {"loss": loss[0] if return_outputs else loss}
            clock.pending |= {ours: self._metrics["train"][key][-1] for ours, key in metrics.items()}
            return loss

    records = training_records(run)
    rows = [records[i] for i in json.loads(plan_path(run).read_text())]
    dataset = Dataset.from_dict({key: [getattr(r, key) for r in rows] for key in ("prompt", "chosen", "rejected")})
    length = dict(max_steps=run.steps, per_device_train_batch_size=run.batch_size)
    # The dataset is already in our shuffled order; no evaluation, as ours.
    order = dict(seed=toolkit.SEED, train_sampling_strategy="sequential", eval_strategy="no")
    if getattr(run, "trl_defaults_arm", False):
        plain = dict(use_cpu=True, report_to=[], save_strategy="no", disable_tqdm=True, learning_rate=lr)
    else:
        length |= dict(max_length=LONG_MAX_LENGTH if run.data == "long" else toolkit.MAX_LENGTH)
        # torch.optim.AdamW at a constant lr, as ours (TRL defaults to the fused AdamW, linear decay, clipping at 1.0).
        plain = dict(optim="adamw_torch", learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0)
        plain |= dict(weight_decay=0.0, max_grad_norm=0.0) | toolkit.TRL_PLAIN
    config = getattr(trl, f"{trainer_name}Config")(
        output_dir=f"{run.workdir}/trl", **length, **order, **plain, **settings
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
        ours=functools.partial(ours_side, functools.partial(our_module, OUR_DPO, "policy"), DPO_METRICS),
        trl=functools.partial(trl_side, "DPO", DPO_METRICS, DPO_LR, dict(beta=DPO_BETA, loss_type=["sigmoid"])),
        gold=functools.partial(toolkit.gold_reward_of_samples, seed=toolkit.SEED),
        defaults=dict(repeats=3, warmup=2, models="tiny,large", sizes={"tiny": (32, 30), "large": (8, 10)}),
        **_PAIRS,
    ),
    # No margin column and no centering: TRL's plain Bradley-Terry, as our loss/reward=bradley_terry. Gold:
    # the agreement with the gold ordering of 1,000 held-out pairs.
    "reward": toolkit.Comparison(
        "reward",
        ours=functools.partial(ours_side, functools.partial(our_module, OUR_REWARD, "reward_init"), REWARD_METRICS),
        trl=functools.partial(trl_side, "Reward", REWARD_METRICS, REWARD_LR, dict(center_rewards_coefficient=None)),
        gold=toolkit.gold_accuracy,
        defaults=dict(repeats=3, warmup=2, models="tiny,large", sizes={"tiny": (32, 40), "large": (8, 12)}),
        **_PAIRS,
    ),
}
