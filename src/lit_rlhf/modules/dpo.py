"""Direct preference optimisation: a policy, a frozen reference, and no reward model.

Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is
Secretly a Reward Model". The loss variant (`loss/dpo`) and the NLL term
(`regularizer/nll`) are composed from config.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import move_data_to_device
from torchmetrics import MeanMetric
from tqdm.auto import tqdm

from lit_rlhf.data.batches import PreferenceBatch
from lit_rlhf.losses.dpo import PairLogps
from lit_rlhf.models.reference import Reference
from lit_rlhf.modules.common import (
    MetricDict,
    configure_optimizer,
    disable_dropout,
    finite_or_skip,
    frozen_gold,
    gold_of_samples,
    log_learning_rate,
    log_updated_metrics,
    update_finite,
    without_frozen,
)
from lit_rlhf.ops.forward import sequence_logprobs
from lit_rlhf.ops.generation import SamplingConfig
from lit_rlhf.ops.masking import masked_sum
from lit_rlhf.ops.packed_forward import check_takes_packed_rows, packed_sequence_logprobs
from lit_rlhf.ops.packing import PackedLayout, pack_layout

# The implicit-reward metrics share their names with the reward model's (`reward_accuracy`, ...).
PAIR_METRICS = ("reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected", "logps_chosen")
VAL_METRICS = ("loss", *PAIR_METRICS, "gold_reward", "response_length")


def _or_zero(reference_logps: torch.Tensor | None) -> torch.Tensor | float:
    """log π_ref, or 0 where no loss needs the reference."""
    return 0.0 if reference_logps is None else reference_logps


class DPOModule(L.LightningModule):
    """DPO and its variants, with an optional NLL term on the chosen responses.

    Args:
        policy: the causal LM being trained (from the SFT model); the reference is a frozen copy (with LoRA:
            the policy with its adapters off).
        reference_dtype: dtype of the reference copy (bfloat16 halves its memory).
        loss: a `loss/dpo` object (`lit_rlhf.losses.dpo`): a `MixedLoss` of one or more terms, or one term.
        nll: `regularizer/nll` object (ChosenNLL or NoNLL).
        optimizer, scheduler: Hydra `_partial_` factories (scheduler may be None).
        precompute_ref_logprobs: score every completion with the reference once at the start of
            fit, then free the reference model.
        sampling, val_sample_batches: how many validation batches' prompts are sampled and scored.
        gold_reward: the task's programmatic reward (texts -> scores), for `val/gold_reward`.
        skip_nonfinite_updates: skip (True) or stop on (False) a non-finite loss.
        seed: seed of the validation samples.
        prefix_sharing: each prompt is encoded once, its completions after it in one row
            (`lit_rlhf.ops.packing`); the log-probs are those of the padded rows.
        padding_free: several rows' worth of tokens packed into each row, no padding computed.
        padding_free_row_length: the most tokens a padding-free row holds (None: the longest unit's).
    """

    batch_type = PreferenceBatch

    def __init__(
        self,
        policy,
        loss,
        nll,
        optimizer,
        precompute_ref_logprobs: bool,
        sampling: SamplingConfig,
        val_sample_batches: int,
        skip_nonfinite_updates: bool,
        seed: int,
        tokenizer,
        reference_dtype: str,
        prefix_sharing: bool,
        padding_free: bool,
        padding_free_row_length: int | None,
        scheduler=None,
        gold_reward=None,
    ):
        super().__init__()
        self.strict_loading = False
        disable_dropout(policy)
        for option, wanted in (("module.prefix_sharing", prefix_sharing), ("module.padding_free", padding_free)):
            if wanted:
                check_takes_packed_rows(policy, option)
        self.prefix_sharing, self.padding_free = prefix_sharing, padding_free
        self.padding_free_row_length = padding_free_row_length
        self.policy = policy
        self.reference = Reference(policy, reference_dtype) if loss.needs_reference else None
        self.loss_fn, self.nll = loss, nll
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.precompute_ref_logprobs = precompute_ref_logprobs and loss.needs_reference
        self.cached_ref_logps: torch.Tensor | None = None
        self.sampling, self.val_sample_batches = sampling, val_sample_batches
        self.skip_nonfinite_updates, self.seed = skip_nonfinite_updates, seed
        self.tokenizer, self.gold_reward = tokenizer, frozen_gold(gold_reward)
        self.val_metrics = MetricDict({name: MeanMetric() for name in VAL_METRICS})

    # --------------------------------------------------------------- log-probs
    @staticmethod
    def completion_logps(
        model, batch: PreferenceBatch, layout: PackedLayout | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed response log-probs (N,) and response lengths (N,) of every completion, in ONE forward pass.

        Chosen and rejected completions are rows of the same (N, T) batch, so the
        policy runs once per step rather than once per side; with a `layout` (prefix
        sharing, padding-free) they are the packed rows of that batch instead.
        """
        if layout is None:
            logprobs, _ = sequence_logprobs(model, batch.input_ids, batch.attention_mask)
        else:
            logprobs = packed_sequence_logprobs(
                model, layout, batch.input_ids, batch.attention_mask, batch.response_mask
            )
        return masked_sum(logprobs, batch.response_mask, dim=1), batch.response_mask.sum(1)

    def layout(self, batch: PreferenceBatch) -> PackedLayout | None:
        """The packed rows of this batch, or None for its padded rows (both options off)."""
        if not (self.prefix_sharing or self.padding_free):
            return None
        options = (self.prefix_sharing, self.padding_free, self.padding_free_row_length)
        return pack_layout(batch.input_ids, batch.attention_mask, batch.response_mask, *options)

    @torch.no_grad()
    def reference_logps(self, batch: PreferenceBatch, layout: PackedLayout | None) -> torch.Tensor | None:
        """(N,) reference log-probs: from the precomputed cache, or a forward pass of the reference."""
        if self.cached_ref_logps is not None:
            return self.cached_ref_logps[batch.sequence_ids.cpu()].to(self.device)
        if self.reference is None:
            return None
        with self.reference.model() as reference:
            return self.completion_logps(reference, batch, layout)[0]

    def on_fit_start(self) -> None:
        if not self.precompute_ref_logprobs or self.cached_ref_logps is not None:
            return
        datamodule = self.trainer.datamodule  # pyright: ignore[reportAttributeAccessIssue]  # undeclared in Trainer
        reference = self.reference
        assert reference is not None, "precompute_ref_logprobs is on only for a loss that needs the reference"
        cache = torch.full((datamodule.total_ids(),), float("nan"))
        for loader, split in zip(datamodule.all_dataloaders(), ("train", "validation")):
            # A pass over the whole dataset: long on real data, so it gets a progress bar.
            for batch in tqdm(loader, desc=f"reference log-probs ({split})", disable=not self.trainer.is_global_zero):
                batch = move_data_to_device(batch, self.device)
                with reference.model() as reference_model:
                    logps = self.completion_logps(reference_model, batch, self.layout(batch))[0]
                cache[batch.sequence_ids.cpu()] = logps.float().cpu()
        self.cached_ref_logps = cache
        # The cache replaces the reference model for the rest of the run.
        self.reference = None

    # -------------------------------------------------------------------- loss
    def step(self, batch: PreferenceBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        layout = self.layout(batch)
        logps, lengths = self.completion_logps(self.policy, batch, layout)
        ref_logps = self.reference_logps(batch, layout)
        chosen, rejected = batch.better_idx, batch.worse_idx
        pairs = PairLogps(
            logps[chosen],
            logps[rejected],
            None if ref_logps is None else ref_logps[chosen],
            None if ref_logps is None else ref_logps[rejected],
            lengths[chosen],
            lengths[rejected],
        )
        if self.training:  # a stateful loss (BCO's reward shift) learns from training batches only
            self.loss_fn.update(pairs)
        dpo_loss = self.loss_fn(pairs).mean()
        nll_term = self.nll.loss_term(pairs.policy_chosen, pairs.chosen_lengths)
        # Implicit rewards beta * log(pi / pi_ref), per token where the loss works per token (0 for log pi_ref
        # when reference-free).
        shown = pairs.per_token() if self.loss_fn.average_log_probs else pairs
        reward_chosen = self.loss_fn.beta * (shown.policy_chosen - _or_zero(shown.reference_chosen)).detach()
        reward_rejected = self.loss_fn.beta * (shown.policy_rejected - _or_zero(shown.reference_rejected)).detach()
        metrics = {
            "dpo_loss": dpo_loss.detach(),
            "reward_chosen": reward_chosen.mean(),
            "reward_rejected": reward_rejected.mean(),
            "reward_margin": (reward_chosen - reward_rejected).mean(),
            "reward_accuracy": (reward_chosen > reward_rejected).float().mean(),
            "logps_chosen": pairs.policy_chosen.detach().mean(),
            "logps_rejected": pairs.policy_rejected.detach().mean(),
            "nll": (-pairs.policy_chosen / pairs.chosen_lengths.clamp(min=1)).detach().mean(),
            **nll_term.metrics,
        }
        return dpo_loss + nll_term.loss, metrics

    def training_step(self, batch: PreferenceBatch, batch_idx: int):
        loss, metrics = self.step(batch)
        if not finite_or_skip("DPO loss", self.global_step, self.skip_nonfinite_updates, loss):
            return None
        pairs = len(batch.better_idx)
        self.log("train/loss", loss, prog_bar=True, batch_size=pairs, sync_dist=True)
        self.log_dict({f"train/{name}": value for name, value in metrics.items()}, batch_size=pairs, sync_dist=True)
        log_learning_rate(self, pairs)
        return loss

    def validation_step(self, batch: PreferenceBatch, batch_idx: int) -> None:
        loss, metrics = self.step(batch)
        pairs = len(batch.better_idx)
        values = self.val_metrics
        values["loss"].update(loss, weight=pairs)
        for name in PAIR_METRICS:
            values[name].update(metrics[name], weight=pairs)
        if self.gold_reward is not None and batch_idx < self.val_sample_batches:
            gold, lengths = gold_of_samples(
                self.policy,
                self.tokenizer,
                self.sampling,
                self.gold_reward,
                batch.prompt_input_ids,
                batch.prompt_attention_mask,
                batch.group_prompts,
                self.seed + batch_idx,
            )
            update_finite(values["gold_reward"], gold)
            values["response_length"].update(lengths)
        log_updated_metrics(self, values, "val", prog_bar=("reward_accuracy", "gold_reward"))

    def configure_optimizers(self):
        return configure_optimizer(self, self.policy.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = without_frozen(checkpoint["state_dict"], ("reference.", "gold_reward."))
        checkpoint["dpo_loss_state"] = self.loss_fn.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints from before the loss kept state have none to restore.
        if "dpo_loss_state" in checkpoint:
            self.loss_fn.load_state_dict(checkpoint["dpo_loss_state"])

    def export_model(self):
        return self.policy
