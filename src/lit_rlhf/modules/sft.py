"""Supervised fine-tuning: the stage that makes the policy PPO and DPO start from."""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import MeanMetric

from lit_rlhf.data.batches import SFTBatch
from lit_rlhf.modules.common import (
    MetricDict,
    configure_optimizer,
    finite_or_skip,
    frozen_gold,
    gold_of_samples,
    log_learning_rate,
    log_updated_metrics,
    update_finite,
    with_frozen,
    without_frozen,
)
from lit_rlhf.ops.distributed import rank_share
from lit_rlhf.ops.forward import sequence_logprobs
from lit_rlhf.ops.generation import SamplingConfig
from lit_rlhf.ops.masking import masked_mean, masked_sum
from lit_rlhf.ops.packed_forward import check_takes_packed_rows, packed_sequence_logprobs
from lit_rlhf.ops.packing import pack_layout


class SFTModule(L.LightningModule):
    """Next-token cross-entropy on response tokens (prompt tokens are context only).

    Training takes the token mean over each gradient-accumulation window, not over each batch: with
    `trainer.accumulate_grad_batches=N` one optimizer step follows the gradient of the mean NLL of every
    response token in its N batches, the same step as one batch N times larger. `val/loss` and
    `train/loss` stay per-batch token means (nats/token).

    Args:
        policy: the causal LM being trained.
        optimizer, scheduler: Hydra `_partial_` factories (scheduler may be None).
        tokenizer: for sampling and export.
        sampling: how validation samples are drawn.
        val_sample_batches: validation batches whose prompts are also sampled and scored.
        gold_reward: the task's programmatic reward (texts -> scores), or None for real data.
        skip_nonfinite_updates: skip (True) or stop on (False) a non-finite loss.
        seed: seed of the validation samples.
        padding_free: the examples packed several to a row under a block-diagonal mask (`lit_rlhf.ops.packing`),
            so no padding is computed; the loss is the padded rows'.
        padding_free_row_length: the most tokens a padding-free row holds (None: the longest example's).
    """

    batch_type = SFTBatch

    def __init__(
        self,
        policy,
        optimizer,
        tokenizer,
        sampling: SamplingConfig,
        val_sample_batches: int,
        skip_nonfinite_updates: bool,
        seed: int,
        padding_free: bool,
        padding_free_row_length: int | None,
        scheduler=None,
        gold_reward=None,
    ):
        super().__init__()
        if padding_free:
            check_takes_packed_rows(policy, "module.padding_free")
        self.padding_free, self.padding_free_row_length = padding_free, padding_free_row_length
        self.policy, self.tokenizer, self.gold_reward = policy, tokenizer, frozen_gold(gold_reward)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.sampling, self.val_sample_batches = sampling, val_sample_batches
        self.skip_nonfinite_updates, self.seed = skip_nonfinite_updates, seed
        self.val_metrics = MetricDict({name: MeanMetric() for name in ("loss", "gold_reward", "response_length")})

    def token_logprobs(self, batch: SFTBatch) -> torch.Tensor:
        """(B, T-1) log-probs of the next tokens, exact where `batch.loss_mask` is True."""
        if not self.padding_free:
            return sequence_logprobs(self.policy, batch.input_ids, batch.attention_mask)[0]
        layout = pack_layout(
            batch.input_ids, batch.attention_mask, batch.loss_mask, False, True, self.padding_free_row_length
        )
        return packed_sequence_logprobs(self.policy, layout, batch.input_ids, batch.attention_mask, batch.loss_mask)

    def response_nll(self, batch: SFTBatch) -> torch.Tensor:
        """Mean negative log-likelihood per response token."""
        return -masked_mean(self.token_logprobs(batch), batch.loss_mask)

    def training_step(self, batch: SFTBatch, batch_idx: int):
        logprobs = self.token_logprobs(batch)
        nll = -masked_sum(logprobs, batch.loss_mask)
        # Lightning divides every batch's loss by N (the last, shorter window of an epoch too), so N * this
        # batch's share of the window's token mean sums to that mean over the window. N = 1: nll / own tokens.
        # Under data parallelism rank_share makes it the mean over every rank's window.
        window_share = rank_share(float(batch.window_tokens))
        loss = nll / batch.window_tokens * self.trainer.accumulate_grad_batches * window_share
        if not finite_or_skip("SFT loss", self.global_step, self.skip_nonfinite_updates, loss):
            return None
        token_mean = nll.detach() / batch.loss_mask.sum()
        self.log("train/loss", token_mean, prog_bar=True, batch_size=len(batch.prompts), sync_dist=True)
        log_learning_rate(self, len(batch.prompts))
        return loss

    def validation_step(self, batch: SFTBatch, batch_idx: int) -> None:
        metrics = self.val_metrics
        metrics["loss"].update(self.response_nll(batch), weight=len(batch.prompts))
        if self.gold_reward is not None and batch_idx < self.val_sample_batches:
            gold, lengths = gold_of_samples(
                self.policy,
                self.tokenizer,
                self.sampling,
                self.gold_reward,
                batch.prompt_input_ids,
                batch.prompt_attention_mask,
                batch.prompts,
                self.seed + batch_idx,
            )
            update_finite(metrics["gold_reward"], gold)
            metrics["response_length"].update(lengths)
        log_updated_metrics(self, metrics, "val", prog_bar=("loss", "gold_reward"))

    def configure_optimizers(self):
        return configure_optimizer(self, self.policy.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = without_frozen(checkpoint["state_dict"], ("gold_reward.",))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        with_frozen(self, checkpoint["state_dict"], ("gold_reward.",))

    def export_model(self):
        """The model saved in HF format at the end of the run."""
        return self.policy
