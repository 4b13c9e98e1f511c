"""Reward-model training on pairwise or K-wise human preferences."""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import MeanMetric

from lit_rlhf.data.batches import PreferenceBatch
from lit_rlhf.losses.reward import reward_centering_penalty
from lit_rlhf.modules.common import configure_optimizer, finite_or_skip, log_learning_rate, log_updated_metrics
from lit_rlhf.ops.forward import last_token_rewards


class RewardModel(L.LightningModule):
    """A backbone with a scalar head scoring the last real token of prompt + response.

    Every completion in a batch is scored once; the loss then compares the pairs the
    batch lists, so a K-wise ranking costs K forward passes for K(K-1)/2 comparisons
    (InstructGPT, Ouyang et al. 2022).

    Args:
        model: an AutoModelForSequenceClassification with num_labels=1.
        loss: a pairwise loss object (`lit_rlhf.losses.reward`), e.g. Bradley-Terry or Llama 2's margin loss.
        centering_coef: weight of the (r_w + r_l)^2 reward-centering term (0 turns it off).
        optimizer, scheduler: Hydra `_partial_` factories (scheduler may be None).
        gold_reward: the task's programmatic reward (texts -> scores), for `val/gold_accuracy`.
        skip_nonfinite_updates: skip (True) or stop on (False) a non-finite loss.
    """

    batch_type = PreferenceBatch

    def __init__(
        self,
        model,
        loss,
        centering_coef: float,
        optimizer,
        skip_nonfinite_updates: bool,
        tokenizer=None,
        scheduler=None,
        gold_reward=None,
    ):
        super().__init__()
        self.model, self.loss_fn, self.centering_coef = model, loss, centering_coef
        self.tokenizer, self.gold_reward = tokenizer, gold_reward
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.skip_nonfinite_updates = skip_nonfinite_updates
        metric_names = ["loss", "reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected", "gold_accuracy"]
        self.val_metrics = torch.nn.ModuleDict({name: MeanMetric() for name in metric_names})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(N,) rewards."""
        return last_token_rewards(self.model, input_ids, attention_mask)

    def pair_rewards(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        rewards = self(batch.input_ids, batch.attention_mask)
        return rewards[batch.better_idx], rewards[batch.worse_idx]

    def pair_loss(self, chosen: torch.Tensor, rejected: torch.Tensor, batch: PreferenceBatch) -> torch.Tensor:
        margin = batch.margin if self.loss_fn.uses_margin else None
        loss = self.loss_fn(chosen, rejected, margin).mean()
        return loss + self.centering_coef * reward_centering_penalty(chosen, rejected).mean()

    def training_step(self, batch: PreferenceBatch, batch_idx: int):
        chosen, rejected = self.pair_rewards(batch)
        loss = self.pair_loss(chosen, rejected, batch)
        if not finite_or_skip("reward-model loss", self.global_step, self.skip_nonfinite_updates, loss):
            return None
        pairs = len(chosen)
        self.log("train/loss", loss, prog_bar=True, batch_size=pairs)
        self.log("train/reward_accuracy", (chosen > rejected).float().mean(), prog_bar=True, batch_size=pairs)
        self.log("train/reward_margin", (chosen - rejected).mean(), batch_size=pairs)
        self.log("train/reward_chosen", chosen.mean(), batch_size=pairs)
        self.log("train/reward_rejected", rejected.mean(), batch_size=pairs)
        log_learning_rate(self, pairs)
        return loss

    def validation_step(self, batch: PreferenceBatch, batch_idx: int) -> None:
        chosen, rejected = self.pair_rewards(batch)
        metrics = self.val_metrics
        metrics["loss"].update(self.pair_loss(chosen, rejected, batch), weight=len(chosen))
        metrics["reward_accuracy"].update((chosen > rejected).float())
        metrics["reward_margin"].update(chosen - rejected)
        metrics["reward_chosen"].update(chosen)
        metrics["reward_rejected"].update(rejected)
        if self.gold_reward is not None:
            metrics["gold_accuracy"].update(self.gold_agreement(batch, chosen, rejected))
        log_updated_metrics(self, metrics, "val", prog_bar=("reward_accuracy", "gold_accuracy"))

    def gold_agreement(self, batch: PreferenceBatch, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        """1.0 where the model orders a pair as the gold reward does (gold ties are left out).

        This is measured against the noiseless gold ordering, not the noisy labels,
        so it says how well the model recovered the labellers' underlying preference.
        """
        gold = self.gold_reward(batch.prompts, batch.responses).to(chosen.device)
        gold_diff = gold[batch.better_idx] - gold[batch.worse_idx]
        decided = gold_diff != 0
        agree = torch.sign(chosen - rejected) == torch.sign(gold_diff)
        return agree[decided].float()

    def configure_optimizers(self):
        return configure_optimizer(self, self.model.parameters())

    def export_model(self):
        return self.model
