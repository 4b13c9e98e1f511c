"""Supervised fine-tuning: the stage that makes the policy PPO and DPO start from."""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import MeanMetric

from lit_rlhf.data.batches import SFTBatch
from lit_rlhf.models.heads import sequence_token_logprobs
from lit_rlhf.modules.common import all_finite, build_optimizer, handle_nonfinite, sample_and_score, seeded_rng
from lit_rlhf.rl.masking import masked_mean
from lit_rlhf.rl.rollout import SamplingConfig


class SFTModule(L.LightningModule):
    """Next-token cross-entropy on response tokens (prompt tokens are context only).

    Args:
        policy: the causal LM being trained.
        optimizer, scheduler: Hydra `_partial_` factories (scheduler may be None).
        tokenizer: for sampling and export.
        sampling: how validation samples are drawn.
        val_sample_batches: validation batches whose prompts are also sampled and scored.
        gold_reward: the task's programmatic reward (texts -> scores), or None for real data.
        skip_nonfinite_updates: skip (True) or stop on (False) a non-finite loss.
        seed: seed of the validation samples.
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
        scheduler=None,
        gold_reward=None,
    ):
        super().__init__()
        self.policy, self.tokenizer, self.gold_reward = policy, tokenizer, gold_reward
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.sampling, self.val_sample_batches = sampling, val_sample_batches
        self.skip_nonfinite_updates, self.seed = skip_nonfinite_updates, seed
        self.val_loss, self.val_gold_reward, self.val_response_length = MeanMetric(), MeanMetric(), MeanMetric()

    def response_nll(self, batch: SFTBatch) -> torch.Tensor:
        """Mean negative log-likelihood per response token."""
        logprobs, _ = sequence_token_logprobs(self.policy, batch.input_ids, batch.attention_mask)
        return -masked_mean(logprobs, batch.loss_mask)

    def training_step(self, batch: SFTBatch, batch_idx: int):
        loss = self.response_nll(batch)
        if not all_finite(loss):
            handle_nonfinite("SFT loss", self.global_step, self.skip_nonfinite_updates)
            return None
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.prompts))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=len(batch.prompts))
        return loss

    def validation_step(self, batch: SFTBatch, batch_idx: int) -> None:
        self.val_loss.update(self.response_nll(batch), weight=len(batch.prompts))
        self.log("val/loss", self.val_loss, prog_bar=True)
        if self.gold_reward is None or batch_idx >= self.val_sample_batches:
            return
        with seeded_rng(self.seed + batch_idx, self.device):
            generation, _, gold = sample_and_score(
                self.policy,
                self.tokenizer,
                batch.prompt_input_ids,
                batch.prompt_attention_mask,
                batch.prompts,
                self.sampling,
                self.gold_reward,
            )
        self.val_gold_reward.update(gold)
        self.val_response_length.update(generation.response_mask.sum(-1).float())
        self.log("val/gold_reward", self.val_gold_reward, prog_bar=True)
        self.log("val/response_length", self.val_response_length)

    def configure_optimizers(self):
        return build_optimizer(
            self.optimizer_factory,
            self.policy.parameters(),
            self.scheduler_factory,
            self.trainer.estimated_stepping_batches,
        )

    def export_model(self):
        """The model saved in HF format at the end of the run."""
        return self.policy
