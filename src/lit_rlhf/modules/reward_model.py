"""Reward-model training on pairwise or K-wise human preferences, optionally with an LM-head NLL term."""

from __future__ import annotations

from typing import cast

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from transformers import PreTrainedModel

from lit_rlhf.data.batches import PreferenceBatch
from lit_rlhf.errors import ConfigError
from lit_rlhf.losses.reward import reward_centering_penalty
from lit_rlhf.modules.common import (
    MetricDict,
    configure_optimizer,
    finite_or_skip,
    frozen_gold,
    log_learning_rate,
    log_updated_metrics,
    with_frozen,
    without_frozen,
)
from lit_rlhf.ops.forward import last_token_rewards, position_ids_from_mask, transformers_model
from lit_rlhf.ops.logprobs import token_logprobs
from lit_rlhf.ops.masking import last_true_index, masked_sum
from lit_rlhf.ops.packed_forward import check_takes_packed_rows, last_token_places, packed_hidden, target_places
from lit_rlhf.ops.packing import PackedLayout, pack_layout

PAIR_METRICS = ("reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected")


def _score_head(model: PreTrainedModel) -> torch.nn.Module:
    """The scalar head (`score`) of a transformers *ForSequenceClassification model."""
    return cast(torch.nn.Module, model.score)  # nn.Module's __getattr__ types it Tensor | Module


def rewards_and_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """One backbone pass: (N,) rewards at each row's last real token, and the (N, T, H) final hidden states.

    The rewards equal `last_token_rewards`; the hidden states are what an LM head reads.
    """
    model = transformers_model(model)
    hidden = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).last_hidden_state
    values = _score_head(model)(hidden).squeeze(-1).float()  # (N, T)
    return values.gather(1, last_true_index(attention_mask.bool()).unsqueeze(1)).squeeze(1), hidden


def response_logps_from_hidden(
    hidden: torch.Tensor, lm_head_weight: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log π of each response under an LM head on the reward model's own hidden states.

    Args:
        hidden: (B, T, H) final hidden states.
        lm_head_weight: (V, H) the output projection (the tied input embeddings).
        input_ids: (B, T).
        response_mask: (B, T-1) True where the next token is a response token.

    Returns:
        (B,) summed response log-probs and (B,) response lengths.
    """
    logits = F.linear(hidden[:, :-1], lm_head_weight)  # (B, T-1, V)
    logprobs = token_logprobs(logits, input_ids[:, 1:])  # (B, T-1)
    return masked_sum(logprobs, response_mask, dim=1), response_mask.sum(1)


def packed_rewards_and_hidden(
    model, layout: PackedLayout, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`rewards_and_hidden` over packed rows: (N,) rewards and the (R * L, H) flat packed hidden states."""
    hidden = packed_hidden(model, layout, input_ids, attention_mask)
    last = hidden[last_token_places(layout, attention_mask)]  # (N, H)
    return _score_head(transformers_model(model))(last).squeeze(-1).float(), hidden


def packed_response_logps(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    layout: PackedLayout,
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """`response_logps_from_hidden`'s (N,) summed response log-probs, from packed hidden states.

    Args:
        hidden: (R * L, H) flat packed hidden states.
        response_mask: (N, T-1) the targets to score (rows left all False are 0).
    """
    places, targets = target_places(layout, response_mask)
    logits = F.linear(hidden[places], lm_head_weight)  # (M, V): only the scored positions
    labels = input_ids[targets[:, 0], targets[:, 1] + 1]  # (M,)
    logprobs = token_logprobs(logits[None], labels[None])[0]  # (M,)
    return logprobs.new_zeros(len(input_ids)).index_add(0, targets[:, 0], logprobs)


class RewardModel(L.LightningModule):
    """A backbone with a scalar head scoring the last real token of prompt + response.

    Every completion in a batch is scored once; the loss then compares the pairs the
    batch lists, so a K-wise ranking costs K forward passes for K(K-1)/2 comparisons
    (InstructGPT, Ouyang et al. 2022).

    With `regularizer/nll=chosen` the loss adds α · NLL of each pair's chosen response,
    read by an LM head from the same hidden states the scalar head reads (Yang et al.
    2024, "Regularizing Hidden States Enables Learning Generalizable Reward Model"). The
    LM head is the backbone's tied input embedding matrix, so the term adds no parameters
    and the exported model is unchanged; a checkpoint with an untied LM head is refused,
    because AutoModelForSequenceClassification does not load that head.

    Args:
        model: an AutoModelForSequenceClassification with num_labels=1.
        loss: a pairwise loss object (`lit_rlhf.losses.reward`), e.g. Bradley-Terry or Llama 2's margin loss.
        centering_coef: weight of the (r_w + r_l)^2 reward-centering term (0 turns it off).
        optimizer, scheduler: Hydra `_partial_` factories (scheduler may be None).
        skip_nonfinite_updates: skip (True) or stop on (False) a non-finite loss.
        nll: `regularizer/nll` object (ChosenNLL or NoNLL), the same group DPO uses.
        gold_reward: the task's programmatic reward (texts -> scores), for `val/gold_accuracy`.
        prefix_sharing: each prompt is encoded once, its completions after it in one row
            (`lit_rlhf.ops.packing`); the rewards are those of the padded rows.
        padding_free: several rows' worth of tokens packed into each row, no padding computed.
        padding_free_row_length: the most tokens a padding-free row holds (None: the longest unit's).
    """

    batch_type = PreferenceBatch

    def __init__(
        self,
        model,
        loss,
        centering_coef: float,
        optimizer,
        skip_nonfinite_updates: bool,
        nll,
        prefix_sharing: bool,
        padding_free: bool,
        padding_free_row_length: int | None,
        tokenizer=None,
        scheduler=None,
        gold_reward=None,
    ):
        super().__init__()
        if nll.needs_logprobs and not transformers_model(model).config.tie_word_embeddings:
            raise ConfigError(
                "regularizer/nll=chosen on a reward model needs tied input/output embeddings (its LM head); "
                "this checkpoint unties them. Valid choices here: regularizer/nll=none"
            )
        for option, wanted in (("module.prefix_sharing", prefix_sharing), ("module.padding_free", padding_free)):
            if wanted:
                check_takes_packed_rows(model, option)
        self.prefix_sharing, self.padding_free = prefix_sharing, padding_free
        self.padding_free_row_length = padding_free_row_length
        self.model, self.loss_fn, self.centering_coef, self.nll = model, loss, centering_coef, nll
        self.tokenizer, self.gold_reward = tokenizer, frozen_gold(gold_reward)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.skip_nonfinite_updates = skip_nonfinite_updates
        metric_names = ["loss", *PAIR_METRICS, "gold_accuracy", *(["nll"] if nll.needs_logprobs else [])]
        self.val_metrics = MetricDict({name: MeanMetric() for name in metric_names})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(N,) rewards."""
        return last_token_rewards(self.model, input_ids, attention_mask)

    def layout(self, batch: PreferenceBatch) -> PackedLayout | None:
        """The packed rows of this batch, or None for its padded rows (both options off)."""
        if not (self.prefix_sharing or self.padding_free):
            return None
        options = (self.prefix_sharing, self.padding_free, self.padding_free_row_length)
        return pack_layout(batch.input_ids, batch.attention_mask, batch.response_mask, *options)

    def pair_rewards(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(P,) rewards of each pair's chosen and rejected completion."""
        layout = self.layout(batch)
        if layout is None:
            rewards = self(batch.input_ids, batch.attention_mask)
        else:
            rewards = packed_rewards_and_hidden(self.model, layout, batch.input_ids, batch.attention_mask)[0]
        return rewards[batch.better_idx], rewards[batch.worse_idx]

    def pair_loss(self, chosen: torch.Tensor, rejected: torch.Tensor, batch: PreferenceBatch) -> torch.Tensor:
        margin = batch.margin if self.loss_fn.uses_margin else None
        loss = self.loss_fn(chosen, rejected, margin).mean()
        return loss + self.centering_coef * reward_centering_penalty(chosen, rejected).mean()

    def step(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The loss, the (P,) chosen and rejected rewards, and the NLL metric when the term is on."""
        if not self.nll.needs_logprobs:
            chosen, rejected = self.pair_rewards(batch)
            return self.pair_loss(chosen, rejected, batch), chosen, rejected, {}
        # One backbone pass feeds both heads.
        better, layout = batch.better_idx, self.layout(batch)
        embeddings = transformers_model(self.model).get_input_embeddings()
        lm_head_weight = cast(torch.Tensor, embeddings.weight)  # an embedding's (V, H) weight
        if layout is None:
            rewards, hidden = rewards_and_hidden(self.model, batch.input_ids, batch.attention_mask)
            logps, lengths = response_logps_from_hidden(
                hidden[better], lm_head_weight, batch.input_ids[better], batch.response_mask[better]
            )
        else:
            rewards, hidden = packed_rewards_and_hidden(self.model, layout, batch.input_ids, batch.attention_mask)
            chosen_targets = torch.zeros_like(batch.response_mask)  # the LM head reads the chosen responses only
            chosen_targets[better] = batch.response_mask[better]
            logps = packed_response_logps(hidden, lm_head_weight, layout, batch.input_ids, chosen_targets)[better]
            lengths = batch.response_mask[better].sum(1)
        chosen, rejected = rewards[batch.better_idx], rewards[batch.worse_idx]
        nll_term = self.nll.loss_term(logps, lengths)
        metrics = {"nll": (-logps / lengths.clamp(min=1)).detach().mean(), **nll_term.metrics}
        return self.pair_loss(chosen, rejected, batch) + nll_term.loss, chosen, rejected, metrics

    def training_step(self, batch: PreferenceBatch, batch_idx: int):
        loss, chosen, rejected, metrics = self.step(batch)
        if not finite_or_skip("reward-model loss", self.global_step, self.skip_nonfinite_updates, loss):
            return None
        pairs = len(chosen)
        self.log("train/loss", loss, prog_bar=True, batch_size=pairs, sync_dist=True)
        self.log(
            "train/reward_accuracy", (chosen > rejected).float().mean(), prog_bar=True, batch_size=pairs, sync_dist=True
        )
        self.log("train/reward_margin", (chosen - rejected).mean(), batch_size=pairs, sync_dist=True)
        self.log("train/reward_chosen", chosen.mean(), batch_size=pairs, sync_dist=True)
        self.log("train/reward_rejected", rejected.mean(), batch_size=pairs, sync_dist=True)
        self.log_dict({f"train/{name}": value for name, value in metrics.items()}, batch_size=pairs, sync_dist=True)
        log_learning_rate(self, pairs)
        return loss

    def validation_step(self, batch: PreferenceBatch, batch_idx: int) -> None:
        loss, chosen, rejected, extra = self.step(batch)
        metrics = self.val_metrics
        metrics["loss"].update(loss, weight=len(chosen))
        metrics["reward_accuracy"].update((chosen > rejected).float())
        metrics["reward_margin"].update(chosen - rejected)
        metrics["reward_chosen"].update(chosen)
        metrics["reward_rejected"].update(rejected)
        if "nll" in extra:
            metrics["nll"].update(extra["nll"], weight=len(chosen))
        if self.gold_reward is not None:
            metrics["gold_accuracy"].update(self.gold_agreement(batch, chosen, rejected))
        log_updated_metrics(self, metrics, "val", prog_bar=("reward_accuracy", "gold_accuracy"))

    def gold_agreement(self, batch: PreferenceBatch, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        """1.0 where the model orders a pair as the gold reward does (gold ties are left out).

        This is measured against the noiseless gold ordering, not the noisy labels,
        so it says how well the model recovered the labellers' underlying preference.
        """
        assert self.gold_reward is not None, "called only when the task has a gold reward"
        gold = self.gold_reward(batch.prompts, batch.responses).to(chosen.device)
        gold_diff = gold[batch.better_idx] - gold[batch.worse_idx]
        # Gold ties, and pairs the gold reward did not score (NaN), decide nothing.
        decided = (gold_diff != 0) & ~torch.isnan(gold_diff)
        agree = torch.sign(chosen - rejected) == torch.sign(gold_diff)
        return agree[decided].float()

    def configure_optimizers(self):
        return configure_optimizer(self, self.model.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = without_frozen(checkpoint["state_dict"], ("gold_reward.",))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        with_frozen(self, checkpoint["state_dict"], ("gold_reward.",))

    def export_model(self):
        return self.model
