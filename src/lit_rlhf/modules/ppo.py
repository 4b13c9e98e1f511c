"""PPO for language models: actor, critic, frozen reference and reward source.

One training batch of prompts is one PPO iteration (seeds 002/003):
  1. `rollout`: sample responses with the KV cache; score them; under no_grad compute
     the old policy's and the reference's log-probs and the critic's values; build
     per-token rewards (score at the last real token, minus the KL penalty when it
     sits in the reward); advantages from the chosen estimator (GAE by default).
  2. `update`: `ppo_epochs` passes over shuffled minibatches of that experience:
     clipped policy loss, entropy bonus, KL term (when it sits in the loss) and the
     pretraining mix for the actor; clipped value loss for the critic; each with
     its own optimizer and gradient clipping.
Schulman et al. 2017, "Proximal Policy Optimization Algorithms"; Ziegler et al. 2019;
Ouyang et al. 2022 (InstructGPT).

Nothing after a response's stop token, and no padding, reaches a loss, a reward or
a metric: everything is masked with `Experience.response_mask`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import cast

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torchmetrics import MeanMetric

from lit_rlhf.data.batches import PPOBatch, PromptBatch, SFTBatch
from lit_rlhf.errors import ConfigError
from lit_rlhf.generation import GenerationEngine, concatenate_rollouts
from lit_rlhf.losses.ppo import clipped_value_loss, explained_variance, old_policy_kl, token_log_ratio
from lit_rlhf.models.reference import Reference
from lit_rlhf.modules.common import (
    MetricDict,
    StdMetric,
    build_optimizer,
    disable_dropout,
    finite_gradients_or_skip,
    finite_or_skip,
    freeze,
    log_updated_metrics,
    seeded_rng,
    seeded_samples,
    update_scored,
)
from lit_rlhf.ops.aggregation import token_share
from lit_rlhf.ops.chunking import map_row_chunks, row_chunks
from lit_rlhf.ops.distributed import every_rank, mean_over_ranks, rank, rank_share, total_over_ranks, world_size
from lit_rlhf.ops.forward import scalar_head_outputs, sequence_logprobs, sequence_token_logprobs
from lit_rlhf.ops.generation import Generation, SamplingConfig, decode_responses
from lit_rlhf.ops.logprobs import entropy_from_logits
from lit_rlhf.ops.masking import last_true_index, masked_mean, masked_sum
from lit_rlhf.regularizers.term import RegularizerTerm
from lit_rlhf.rewards import Completions, Reward, RewardScores, Scores, as_reward, columns_of_rows, repeat_columns
from lit_rlhf.rl.experience import Experience
from lit_rlhf.rl.mismatch import Correction
from lit_rlhf.rl.reward_shaping import ScoreShaping

log = logging.getLogger("lit_rlhf")


class PPOModule(L.LightningModule):
    """PPO with composable regularizers.

    Args:
        policy: the actor, initialised from the SFT model; the reference is a frozen copy of it (with LoRA:
            the policy with its adapters off).
        reference_dtype: dtype of the reference copy (bfloat16 halves its memory).
        critic: a scalar-head model (values), or None for critic-free advantages (RLOO, GRPO, ...).
        reward: the `reward` config group's `Reward`: named components (reward models, functions of the
            prompts, completions and data columns, verifiers) summed with weights. A row no component scores
            is left out of the update.
        kl: `regularizer/kl` object (placement, estimator, controller, gradient).
        ptx: `regularizer/ptx` object (pretraining-gradient mix or none).
        distill: `regularizer/distill` object: a frozen teacher whose divergence from the policy sits in the
            per-token rewards or in the actor's loss (on-policy distillation), or none.
        advantage: `advantage` object (GAE or a critic-free estimator) with `samples_per_prompt`.
        trust_region: `trust_region` object: PPO-Clip (asymmetric, dual), PPO-Penalty or both; token or
            sequence ratio.
        loss_aggregation: `loss_aggregation` object: how the policy and KL terms weigh tokens and responses.
        actor_optimizer, critic_optimizer: Hydra `_partial_` optimizer factories.
        sampling: temperature, top-k/top-p and max_new_tokens of rollouts and validation samples.
        extra_stop_token_ids: stop tokens besides the tokenizer's EOS.
        ppo_epochs, num_minibatches: passes over each rollout batch, and minibatches per pass.
        rollout_micro_batch_size: rows per chunk for generation, scoring, old and reference log-probs and
            values (None: the whole rollout batch at once); the results are the same.
        train_micro_batch_size: rows per micro-batch inside a minibatch, gradients accumulated into one
            optimizer step equal to the whole minibatch's (None: no accumulation).
        value_clip_eps: the critic's value clip.
        entropy_coef: entropy bonus weight (0 = none).
        max_grad_norm: gradient clipping for both actor and critic.
        missing_eos_penalty: subtracted from the score of responses that never stop (0 = none).
        reward_clip: clamp the (normalised) score to [-c, c] (DeepSpeed-Chat), or None.
        normalize_rewards: divide the score's deviation from its running mean by its running std.
        log_samples_every_n_steps: how often a table of sample generations is logged.
        skip_nonfinite_updates: skip (True) or stop on (False) a non-finite reward, advantage or loss.
        seed: seed of the validation samples.
        tokenizer: decodes responses for text rewards and sample tables.
        gold_reward: the held-out "true" reward (`gold_reward` group: the embedded task's by default), logged as
            `train/gold_reward` and `val/gold_reward` and never optimised; None for none.
        generation: the `generation` group's engine factory (`hf`: HF generate on the policy; `vllm`: a
            colocated vLLM copy), called with the policy, stop tokens and pad token on first use.
        mismatch_correction: the `mismatch_correction` group's object: weights on each token's policy loss from
            the trainer's and the engine's log-probs of the sampled tokens (none, tis, mask, sequence_*).
    """

    batch_type = PPOBatch

    def __init__(
        self,
        policy,
        kl,
        ptx,
        distill,
        advantage,
        trust_region,
        loss_aggregation,
        actor_optimizer,
        sampling: SamplingConfig,
        extra_stop_token_ids: list[int],
        ppo_epochs: int,
        num_minibatches: int,
        rollout_micro_batch_size: int | None,
        train_micro_batch_size: int | None,
        value_clip_eps: float,
        entropy_coef: float,
        max_grad_norm: float,
        missing_eos_penalty: float,
        reward_clip: float | None,
        normalize_rewards: bool,
        log_samples_every_n_steps: int,
        skip_nonfinite_updates: bool,
        seed: int,
        tokenizer,
        reference_dtype: str,
        generation: Callable[..., GenerationEngine],
        mismatch_correction: Callable[..., Correction],
        reward: Reward,
        critic=None,
        critic_optimizer=None,
        gold_reward: Reward | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        # Frozen models are rebuilt from their paths, so checkpoints leave them out.
        self.strict_loading = False
        check_ppo_config(critic, critic_optimizer, advantage, num_minibatches)
        self.policy = policy
        self.reference = Reference(policy, reference_dtype)
        self.critic = critic
        self.reward = freeze(reward)
        self.gold_reward = freeze(as_reward(gold_reward)) if gold_reward is not None else None
        self.tokenizer = tokenizer
        for model in (self.policy, self.critic):
            if model is not None:
                disable_dropout(model)
        self.kl, self.ptx, self.advantage = kl, ptx, advantage
        self.distill = distill
        self.trust_region, self.aggregate = trust_region, loss_aggregation
        self.score_shaping = ScoreShaping(reward_clip, normalize_rewards)
        self.actor_optimizer_factory, self.critic_optimizer_factory = actor_optimizer, critic_optimizer
        self.sampling = sampling
        self.stop_token_ids = [tokenizer.eos_token_id, *extra_stop_token_ids]
        self.ppo_epochs, self.num_minibatches = ppo_epochs, num_minibatches
        self.rollout_micro_batch_size, self.train_micro_batch_size = rollout_micro_batch_size, train_micro_batch_size
        self.value_clip_eps = value_clip_eps
        self.entropy_coef, self.max_grad_norm = entropy_coef, max_grad_norm
        self.missing_eos_penalty = missing_eos_penalty
        self.log_samples_every_n_steps = log_samples_every_n_steps
        self.skip_nonfinite_updates, self.seed = skip_nonfinite_updates, seed
        self.engine_factory, self.mismatch_correction = generation, mismatch_correction
        # The engine is built on first use, once the policy sits on its device; `weights_version` counts
        # optimizer steps (and loaded checkpoints) so the engine syncs only when the policy changed.
        self.engine: GenerationEngine | None = None
        self.weights_version, self.engine_weights_version = 0, 0
        means = ["reward", "gold_reward", "kl", "kl_k1", "kl_k3", "response_length", "eos_fraction"]
        means += [f"reward/{name}" for name in reward.names]
        means += ["accuracy"] * bool(reward.verifiers) + [f"accuracy/{name}" for name in reward.verifiers]
        means += distill.metric_names
        stds = ["reward_std"] + [f"reward/{name}_std" for name in reward.names]
        self.val_metrics = MetricDict(
            {**{name: MeanMetric() for name in means}, **{name: StdMetric() for name in stds}}
        )

    # ----------------------------------------------------------------- rollout
    def completions(
        self, generation: Generation, prompts: Sequence[str], responses: Sequence[str], columns
    ) -> Completions:
        """What the rewards see of a batch of samples: texts, the prompts' other columns, the policy's ids."""
        return Completions(
            list(prompts),
            list(responses),
            columns,
            sequences=generation.sequences,
            attention_mask=generation.attention_mask,
            has_stop=generation.has_stop,
            lengths=generation.response_mask.sum(1),
        )

    @torch.no_grad()
    def rollout(self, batch: PromptBatch) -> tuple[Experience, dict[str, torch.Tensor], list[str], list[str]] | None:
        """Sample, score and evaluate one batch of prompts. Returns the experience, its metrics and the texts,
        or None when no sample got a reward (nothing to learn from)."""
        repeats = self.advantage.samples_per_prompt
        prompts = [p for p in batch.prompts for _ in range(repeats)]
        columns = repeat_columns(columns_of_rows(batch.columns), repeats)
        prompt_ids = batch.input_ids.repeat_interleave(repeats, 0)
        prompt_mask = batch.attention_mask.repeat_interleave(repeats, 0)
        chunks = row_chunks(len(prompts), self.rollout_micro_batch_size)
        engine = self.rollout_engine()
        # No seed: the draws come from the iteration's seeded RNG, so a resumed run replays them.
        rollout = concatenate_rollouts(
            [engine.generate(prompt_ids[rows], prompt_mask[rows], self.sampling) for rows in chunks],
            self.tokenizer.pad_token_id,
        )
        generation = rollout.generation
        responses = decode_responses(self.tokenizer, generation)
        samples = self.completions(generation, prompts, responses, columns)
        mask = generation.response_mask
        old_logprobs, ref_logprobs, logits, ref_logits, values = map_row_chunks(
            lambda rows: self.evaluate_rollout(generation.select(rows)), len(prompts), self.rollout_micro_batch_size
        )
        teacher_logprobs, teacher_logits = map_row_chunks(
            lambda rows: self.teacher_forward(generation.select(rows)), len(prompts), self.rollout_micro_batch_size
        )
        # The trainer's log-probs stay PPO's π_old; the engine's only weigh the policy loss (rl/mismatch.py).
        correction = self.mismatch_correction(old_logprobs, rollout.logprobs, mask)
        rewards = self.score(samples, update=True)
        scored = rewards.scored.to(self.device)
        if not bool(every_rank(bool(scored.any()))):
            log.warning(
                "step %d: no component of the reward scored any sample; the update is skipped", self.global_step
            )
            return None
        raw_scores = unscored_as_mean(rewards.total, rewards.scored).to(self.device)
        scores = self.score_shaping(self.with_missing_eos_penalty(raw_scores, generation), update=True)

        per_token_kl = self.kl.measure(old_logprobs, ref_logprobs, mask, logits, ref_logits)
        per_token_distill = self.distill.measure(old_logprobs, teacher_logprobs, mask, logits, teacher_logits)
        token_rewards = -self.kl.reward_penalty(per_token_kl, mask) - self.distill.reward_penalty(
            per_token_distill, mask
        )
        last = last_true_index(mask)
        token_rewards[torch.arange(len(last), device=self.device), last] += scores
        baseline = {}
        if self.advantage.needs_greedy_baseline:
            greedy, greedy_scored = self.greedy_scores(batch)
            greedy, greedy_scored = greedy.repeat_interleave(repeats, 0), greedy_scored.repeat_interleave(repeats, 0)
            # A greedy response no component scored gives its prompt's samples their own score as the baseline.
            baseline["greedy_scores"] = torch.where(greedy_scored, greedy, scores)
        advantages, returns = self.advantage(token_rewards, values, mask, **baseline)

        experience = Experience(
            sequences=generation.sequences,
            attention_mask=generation.attention_mask,
            # Samples that no component scored stand in with the batch's mean score above, and take no part
            # in the update.
            response_mask=mask & scored.unsqueeze(1),
            old_logprobs=old_logprobs,
            ref_logprobs=ref_logprobs,
            values=values,
            advantages=advantages,
            returns=returns,
            scores=scores,
            engine_logprobs=rollout.logprobs,
            mismatch_weights=correction.weights,
        )
        metrics = {
            **correction.metrics,
            **self.kl.rollout_metrics(per_token_kl, old_logprobs, ref_logprobs, mask),
            **self.distill.rollout_metrics(old_logprobs, teacher_logprobs, mask, logits, teacher_logits),
            "reward": rewards.total[rewards.scored].mean(),
            "reward_std": rewards.total[rewards.scored].std(correction=0),
            **{name: value for name, value in rewards.metrics().items() if not torch.isnan(value)},
            "reward_shaped": scores.mean(),
            "reward_total": masked_sum(token_rewards, mask, dim=1).mean(),
            "response_length": mask.sum(1).float().mean(),
            "eos_fraction": generation.has_stop.float().mean(),
        }
        if self.gold_reward is not None:
            gold = self.gold_reward(samples)
            if bool(gold.scored.any()):
                metrics["gold_reward"] = gold.total[gold.scored].mean()
        if values is not None:
            metrics["explained_variance"] = explained_variance(values, returns, mask)
            metrics["value_mean"] = masked_mean(values, mask)
        if "greedy_scores" in baseline:
            metrics["greedy_reward"] = baseline["greedy_scores"].mean()
        return experience, metrics, prompts, responses

    @torch.no_grad()
    def evaluate_rollout(self, generation: Generation) -> tuple:
        """Old and reference log-probs (and logits for the exact estimator) and values of a chunk."""
        sequences, attention_mask, mask = generation.sequences, generation.attention_mask, generation.response_mask
        # Position start + t predicts response token t: only the response's positions are scored.
        start = generation.prompt_length - 1
        old_logprobs, _, logits = self.token_logprobs(self.policy, sequences, attention_mask, start)
        ref_logprobs, ref_logits = self.reference_forward(sequences, attention_mask, start)
        values = None
        if self.critic is not None:
            values = scalar_head_outputs(self.critic, sequences, attention_mask)[:, start:-1].masked_fill(~mask, 0.0)
        return old_logprobs, ref_logprobs, logits, ref_logits, values

    @torch.no_grad()
    def teacher_forward(self, generation: Generation | Experience) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The distillation teacher's per-token log-probs and logits of a chunk's responses, or (None, None)."""
        return self.distill.teacher_outputs(
            generation.sequences, generation.attention_mask, generation.prompt_length - 1
        )

    @torch.no_grad()
    def score(self, samples: Completions, update: bool) -> RewardScores:
        """The reward's scores of a batch, its components run on chunks of `rollout_micro_batch_size` rows
        (reward models' memory) and combined over the whole batch (normalisation statistics)."""
        parts = [
            self.reward.component_scores(samples.select(rows))
            for rows in row_chunks(len(samples), self.rollout_micro_batch_size)
        ]
        raw = {
            name: Scores(
                torch.cat([part[name].values for part in parts]), torch.cat([part[name].scored for part in parts])
            )
            for name in self.reward.names
        }
        return self.reward.combine(raw, update=update)

    def with_missing_eos_penalty(self, scores: torch.Tensor, generation: Generation) -> torch.Tensor:
        return scores - self.missing_eos_penalty * (~generation.has_stop).float()

    @torch.no_grad()
    def greedy_scores(self, batch: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(P,) the shaped score of the greedy response to each prompt, the self-critical baseline (ReMax),
        and (P,) whether any reward component scored it."""
        generation = self.greedy_generation(batch)
        responses = decode_responses(self.tokenizer, generation)
        samples = self.completions(generation, batch.prompts, responses, columns_of_rows(batch.columns))
        rewards = self.score(samples, update=False)
        total = rewards.total.to(self.device)
        return self.score_shaping(self.with_missing_eos_penalty(total, generation), update=False), rewards.scored.to(
            self.device
        )

    def greedy_generation(self, batch: PromptBatch) -> Generation:
        greedy = dataclasses.replace(self.sampling, temperature=0.0)
        # Seeded, so no engine draws from the training RNG for a greedy response (vLLM draws a seed otherwise).
        engine = self.rollout_engine()
        return engine.generate(batch.input_ids, batch.attention_mask, greedy, seed=self.seed).generation

    def rollout_engine(self) -> GenerationEngine:
        """The rollout engine, built on first use and holding the policy's current weights: synced when an
        optimizer step (or a loaded checkpoint) changed them since its last sync."""
        if self.engine is None:
            self.engine = self.engine_factory(
                policy=self.policy, stop_token_ids=self.stop_token_ids, pad_token_id=self.tokenizer.pad_token_id
            )
        elif self.engine_weights_version != self.weights_version:
            self.engine.sync_weights(self.policy)
        self.engine_weights_version = self.weights_version
        return self.engine

    def token_logprobs(
        self, model, sequences: torch.Tensor, attention_mask: torch.Tensor, first: int, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Per-token log-probs (B, T-1-first) from position `first` on, entropies if asked, and the logits.

        The (B, T, V) logits exist only for the exact (`full`) KL estimator and a distillation teacher, which
        need them; otherwise the LM head runs a chunk of positions at a time (`sequence_logprobs`) and the
        logits are None.
        """
        if self.kl.needs_logits or self.distill.needs_logits:
            logprobs, logits = sequence_token_logprobs(model, sequences, attention_mask, first)
            return logprobs, entropy_from_logits(logits) if with_entropy else None, logits
        logprobs, entropy = sequence_logprobs(model, sequences, attention_mask, first, with_entropy)
        return logprobs, entropy, None

    @torch.no_grad()
    def reference_forward(
        self, sequences: torch.Tensor, attention_mask: torch.Tensor, first: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token log-probs (B, T-1-first) of the frozen reference from position `first` on, and its
        logits for the exact estimator (else None).

        The one place the reference runs: with LoRA it becomes the policy with its adapters switched off.
        """
        with self.reference.model() as reference:
            logprobs, _, logits = self.token_logprobs(reference, sequences, attention_mask, first)
        return logprobs, logits

    # ------------------------------------------------------------------ update
    def reference_logits(self, minibatch: Experience) -> Callable[[], torch.Tensor]:
        """Reference logits over the response, computed only if a regularizer asks (full KL in the loss)."""

        def compute() -> torch.Tensor:
            _, logits = self.reference_forward(
                minibatch.sequences, minibatch.attention_mask, minibatch.prompt_length - 1
            )
            assert logits is not None  # asked for by a regularizer that needs logits, so token_logprobs kept them
            return logits

        return compute

    def teacher_logits(self, minibatch: Experience) -> Callable[[], torch.Tensor]:
        """The teacher's logits over the response, computed only if the distillation term asks."""

        def compute() -> torch.Tensor:
            _, logits = self.teacher_forward(minibatch)
            assert logits is not None  # asked for only by a distillation term, which has a teacher
            return logits

        return compute

    def actor_loss(
        self,
        minibatch: Experience,
        pretrain: SFTBatch | None,
        whole_mask: torch.Tensor | None = None,
        with_pretrain: bool = True,
        rank_shares: tuple[float, float] = (1.0, 1.0),
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The actor's loss on a minibatch, or on a micro-batch of the minibatch whose mask is `whole_mask`.

        A micro-batch's terms are weighted by their share of the minibatch's normalisers, so the micro-batch
        losses sum to the minibatch's loss; the metrics are the micro-batch's own. The pretraining batch
        belongs to the minibatch: only the micro-batch `with_pretrain` adds its term. `rank_shares` weigh
        the aggregated and the token-mean terms by this rank's part of all ranks' normalisers
        (`minibatch_rank_shares`).
        """
        mask, start = minibatch.response_mask, minibatch.prompt_length - 1
        whole_mask = mask if whole_mask is None else whole_mask
        logprobs, entropies, logits = self.token_logprobs(
            self.policy, minibatch.sequences, minibatch.attention_mask, start, with_entropy=True
        )
        policy_loss, policy_metrics = self.trust_region.policy_loss(
            logprobs,
            minibatch.old_logprobs,
            minibatch.advantages,
            mask,
            self.aggregate,
            mismatch_weights=minibatch.mismatch_weights,
        )
        assert entropies is not None  # with_entropy=True
        # Without an entropy bonus the entropy is only a metric.
        entropy = masked_mean(entropies if self.entropy_coef != 0 else entropies.detach(), mask)
        kl_term = self.kl.loss_term(
            logprobs,
            minibatch.ref_logprobs,
            minibatch.old_logprobs,
            mask,
            logits,
            self.reference_logits(minibatch),
            self.aggregate,
        )
        distill_term = self.distill.loss_term(logits, mask, self.teacher_logits(minibatch), self.aggregate)
        ptx_term = self.ptx.loss_term(self.policy, pretrain) if with_pretrain else RegularizerTerm.zero(policy_loss)
        aggregate_share = self.aggregate.share(mask, whole_mask) * rank_shares[0]
        tokens_share = token_share(mask, whole_mask) * rank_shares[1]
        loss = (
            aggregate_share * (policy_loss + kl_term.loss + distill_term.loss)
            - self.entropy_coef * tokens_share * entropy
            + ptx_term.loss
        )
        metrics = {
            **policy_metrics,
            "entropy": entropy.detach(),
            **kl_term.metrics,
            **distill_term.metrics,
            **ptx_term.metrics,
        }
        return loss, metrics

    def critic_loss(
        self, minibatch: Experience, whole_mask: torch.Tensor | None = None, rank_token_share: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The critic's loss, weighted by the micro-batch's share of the minibatch's tokens (see actor_loss)."""
        mask, start = minibatch.response_mask, minibatch.prompt_length - 1
        whole_mask = mask if whole_mask is None else whole_mask
        # Called only with a critic, whose values and returns the rollout then recorded.
        assert self.critic is not None and minibatch.values is not None and minibatch.returns is not None
        values = scalar_head_outputs(self.critic, minibatch.sequences, minibatch.attention_mask)[:, start:-1]
        value = clipped_value_loss(values, minibatch.values, minibatch.returns, mask, self.value_clip_eps)
        loss = token_share(mask, whole_mask) * rank_token_share * value.loss
        return loss, {"value_loss": value.loss.detach(), "value_clipfrac": value.clipfrac}

    def minibatch_rank_shares(self, whole_mask: torch.Tensor) -> tuple[float, float]:
        """This rank's weights for the aggregated terms and for the token means of a minibatch.

        Data parallelism averages the ranks' gradients; weighted so, ranks holding different token counts
        still make the gradient of one loss over all their minibatches (1.0 on one process).
        """
        if world_size() == 1:
            return 1.0, 1.0
        return rank_share(self.aggregate.count(whole_mask)), rank_share(float(whole_mask.sum()))

    def accumulate_gradients(self, minibatch: Experience, pretrain: SFTBatch | None) -> dict[str, float] | None:
        """Backpropagate the actor's and critic's losses micro-batch by micro-batch into accumulated gradients.

        Returns the metrics averaged over micro-batches, or None when a loss is not finite on any rank and
        the update is skipped (the gradients are then cleared).
        """
        models = [model for model in (self.policy, self.critic) if model is not None]
        for model in models:
            model.zero_grad(set_to_none=True)
        sums, counts = defaultdict(float), defaultdict(int)
        whole_mask = minibatch.response_mask
        shares = self.minibatch_rank_shares(whole_mask)
        for number, rows in enumerate(row_chunks(len(minibatch), self.train_micro_batch_size)):
            micro = minibatch.select(torch.arange(len(minibatch), device=self.device)[rows])
            loss, metrics = self.actor_loss(micro, pretrain, whole_mask, with_pretrain=number == 0, rank_shares=shares)
            if self.critic is not None:
                value_loss, value_metrics = self.critic_loss(micro, whole_mask, rank_token_share=shares[1])
                metrics.update(value_metrics)
                # Actor and critic have disjoint parameters, so one backward of the sum gives each its own
                # gradient; under DDP every trained parameter then takes part in each backward pass.
                loss = loss + value_loss
            hint = self.kl.overflow_hint
            if not finite_or_skip("PPO loss", self.global_step, self.skip_nonfinite_updates, loss, hint=hint):
                for model in models:
                    model.zero_grad(set_to_none=True)
                return None
            self.manual_backward(loss)
            for name, value in metrics.items():
                sums[name] += float(value)
                counts[name] += 1
        return {name: total / counts[name] for name, total in sums.items()}

    def gradients_finite_or_skip(self) -> bool:
        """Before actor and critic step: every rank's gradients finite, or the step of both dropped (their
        gradients cleared, so weights and optimizer states stay untouched) or the run stopped."""
        models = [model for model in (self.policy, self.critic) if model is not None]
        trained = [p for model in models for p in model.parameters() if p.requires_grad]
        if finite_gradients_or_skip("PPO gradient", self.global_step, self.skip_nonfinite_updates, trained):
            return True
        for model in models:
            model.zero_grad(set_to_none=True)
        return False

    def optimizer_step(self, optimizer) -> None:
        """Clip the accumulated gradients and step; then free them."""
        self.clip_gradients(optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        # Free the gradients now, not at the next step: the next minibatch's forward then runs without a
        # parameter-sized gradient copy alive (peak memory), and the update is the same.
        optimizer.zero_grad(set_to_none=True)

    def update(self, experience: Experience, pretrain: SFTBatch | None) -> dict[str, torch.Tensor]:
        """`ppo_epochs` passes of minibatch updates over one rollout batch; returns mean metrics."""
        optimizers = self.optimizers()
        # Lightning returns the list configure_optimizers gave (actor, critic) with a critic, else the one optimizer.
        if self.critic is not None:
            actor_opt, critic_opt = cast(list[LightningOptimizer], optimizers)
        else:
            actor_opt, critic_opt = optimizers, None
        sums, skipped = defaultdict(float), 0
        minibatch_size = len(experience) // self.num_minibatches
        if minibatch_size == 0:
            raise ConfigError(
                f"a rollout batch of {len(experience)} cannot be split into "
                f"module.num_minibatches={self.num_minibatches}"
            )
        for _ in range(self.ppo_epochs):
            order = torch.randperm(len(experience), device=self.device)
            for index in order[: minibatch_size * self.num_minibatches].split(minibatch_size):
                metrics = self.accumulate_gradients(experience.select(index), pretrain)
                if metrics is None or not self.gradients_finite_or_skip():
                    skipped += 1
                    continue
                self.optimizer_step(actor_opt)
                self.weights_version += 1  # the engine's copy of the policy is now stale
                if critic_opt is not None:
                    self.optimizer_step(critic_opt)
                for name, value in metrics.items():
                    sums[name] += value
        steps = self.ppo_epochs * self.num_minibatches - skipped
        means = {name: torch.tensor(total / steps) for name, total in sums.items()} if steps else {}
        means["skipped_updates"] = torch.tensor(float(skipped))
        if self.trust_region.needs_kl_after_update:
            kl_after = self.kl_to_rollout_policy(experience, minibatch_size)
            self.trust_region.update(kl_after)
            means["trust_region_kl"] = torch.tensor(kl_after)
        return means

    @torch.no_grad()
    def kl_to_rollout_policy(self, experience: Experience, chunk_size: int) -> float:
        """Mean KL(π_old ‖ π_θ) per response token after the update (PPO-Penalty's d), in chunks."""
        total, tokens = 0.0, 0
        for index in torch.arange(len(experience), device=self.device).split(chunk_size):
            chunk = experience.select(index)
            mask, start = chunk.response_mask, chunk.prompt_length - 1
            logprobs, _, _ = self.token_logprobs(self.policy, chunk.sequences, chunk.attention_mask, start)
            total += float(masked_sum(old_policy_kl(token_log_ratio(logprobs, chunk.old_logprobs, mask)), mask))
            tokens += int(mask.sum())
        # Over every rank's rollout, so the penalty coefficient stays the same on all ranks.
        return total_over_ranks(total) / max(total_over_ranks(tokens), 1.0)

    def iteration_seed(self) -> int:
        """The seed of this iteration's sampling and shuffling: one per (seed, rank, iteration).

        Ranks then draw different responses, and a resumed run draws what the uninterrupted one did
        without any rank's RNG state in the checkpoint.
        """
        iteration = self.trainer.fit_loop.total_batch_idx
        return ((self.seed * 1_000_003 + rank()) * 1_000_003 + iteration) % 2**63

    def training_step(self, batch: PPOBatch, batch_idx: int) -> None:
        with seeded_rng(self.iteration_seed(), self.device):
            return self.iterate(batch, batch_idx)

    def iterate(self, batch: PPOBatch, batch_idx: int) -> None:
        """One PPO iteration: rollout, update, metrics (averaged over ranks)."""
        started = time.perf_counter()
        rolled_out = self.rollout(batch.prompts)
        if rolled_out is None:
            return None
        experience, metrics, prompts, responses = rolled_out
        rollout_seconds = time.perf_counter() - started
        rollout_tensors = (experience.scores, experience.advantages)
        step, skip, hint = self.global_step, self.skip_nonfinite_updates, self.kl.overflow_hint
        if not finite_or_skip("reward or advantage", step, skip, *rollout_tensors, hint=hint):
            return None
        # Every rank's rollouts have the same size, so the mean of the ranks' means is the global mean.
        self.kl.update(mean_over_ranks(float(metrics["kl"])), n_samples=len(experience) * world_size())
        started = time.perf_counter()
        metrics.update(self.update(experience, batch.pretrain))
        metrics["rollout_seconds"] = torch.tensor(rollout_seconds)
        metrics["update_seconds"] = torch.tensor(time.perf_counter() - started)
        reward = metrics.pop("reward")
        self.log("train/reward", reward, prog_bar=True, batch_size=len(experience), sync_dist=True)
        # The engine's log-prob gap and its correction keep their own `rollout/` names.
        train_metrics = {
            name if name.startswith("rollout/") else f"train/{name}": value for name, value in metrics.items()
        }
        self.log_dict(train_metrics, batch_size=len(experience), sync_dist=True)
        if self.log_samples_every_n_steps and batch_idx % self.log_samples_every_n_steps == 0:
            self.log_samples("train/samples", prompts, responses, experience.scores)
        return None

    # -------------------------------------------------------------- validation
    def validation_step(self, batch: PromptBatch, batch_idx: int) -> None:
        """Sample held-out prompts with a fixed seed; score them and measure KL to the reference."""
        rollout = self.rollout_engine().generate(
            batch.input_ids, batch.attention_mask, self.sampling, seed=self.seed + batch_idx
        )
        generation = rollout.generation
        responses = decode_responses(self.tokenizer, generation)
        mask, start = generation.response_mask, generation.prompt_length - 1
        logprobs, _, logits = self.token_logprobs(self.policy, generation.sequences, generation.attention_mask, start)
        ref_logprobs, ref_logits = self.reference_forward(generation.sequences, generation.attention_mask, start)
        per_token_kl = self.kl.measure(logprobs, ref_logprobs, mask, logits, ref_logits)
        metrics = self.val_metrics
        columns = columns_of_rows(batch.columns)
        samples = self.completions(generation, batch.prompts, responses, columns)
        rewards = self.score(samples, update=False)
        update_scored(metrics["reward"], rewards.total, rewards.scored)
        update_scored(metrics["reward_std"], rewards.total, rewards.scored)
        for name, (scores, scored) in rewards.components.items():
            update_scored(metrics[f"reward/{name}"], scores, scored)
            update_scored(metrics[f"reward/{name}_std"], scores, scored)
        # val/kl by the configured estimator, as train/kl; val/kl_k1 and val/kl_k3 compare across runs.
        for name, kl in self.kl.sequence_kls(per_token_kl, logprobs, ref_logprobs, mask).items():
            metrics[name].update(kl)
        metrics["response_length"].update(mask.sum(1).float())
        metrics["eos_fraction"].update(generation.has_stop.float())
        if self.gold_reward is not None:
            gold = self.gold_reward(samples)
            update_scored(metrics["gold_reward"], gold.total, gold.scored)
        if self.distill.has_teacher:
            self.update_teacher_metrics(batch, generation, logprobs, mask, logits, columns, self.seed + batch_idx)
        if self.reward.verifiers:
            self.update_accuracy(batch, columns)
        log_updated_metrics(self, metrics, "val", prog_bar=("reward", "gold_reward", "accuracy"))

    @torch.no_grad()
    def update_teacher_metrics(
        self, batch: PromptBatch, generation: Generation, logprobs, mask, logits, columns: dict, seed: int
    ) -> None:
        """`val/kl_to_teacher` (k1) and `val/kl_to_teacher_exact` of the policy's samples, and
        `val/teacher_gold_reward`: the teacher's own samples of the same prompts, drawn with the same seed."""
        teacher_logprobs, teacher_logits = self.teacher_forward(generation)
        for name, kl in self.distill.sequence_kls(logprobs, teacher_logprobs, mask, logits, teacher_logits).items():
            self.val_metrics[name].update(kl)
        if self.gold_reward is None:
            return
        # The teacher samples with HF generate (the rollout engine holds only the policy), seeded as the
        # HF engine seeds the policy's samples.
        with self.distill.teacher_model() as teacher:
            teacher_generation, responses = seeded_samples(
                teacher,
                self.tokenizer,
                batch.input_ids,
                batch.attention_mask,
                self.sampling,
                self.stop_token_ids,
                seed,
            )
        gold = self.gold_reward(self.completions(teacher_generation, batch.prompts, responses, columns))
        update_scored(self.val_metrics["teacher_gold_reward"], gold.total, gold.scored)

    @torch.no_grad()
    def update_accuracy(self, batch: PromptBatch, columns: dict) -> None:
        """`val/accuracy`: the first verifier's mean on greedy completions (each verifier's as accuracy/<name>)."""
        generation = self.greedy_generation(batch)
        greedy = self.completions(generation, batch.prompts, decode_responses(self.tokenizer, generation), columns)
        for number, (name, verifier) in enumerate(self.reward.verifiers.items()):
            correct, judged = verifier(greedy)
            update_scored(self.val_metrics[f"accuracy/{name}"], correct, judged)
            if number == 0:
                update_scored(self.val_metrics["accuracy"], correct, judged)

    # ------------------------------------------------------------------- misc
    def log_samples(self, key: str, prompts: Sequence[str], responses: Sequence[str], scores: torch.Tensor) -> None:
        """A W&B table of (prompt, response, score); other loggers have no tables and are skipped."""
        if not self.trainer.is_global_zero:
            return
        rows = [[p, r, float(s)] for p, r, s in list(zip(prompts, responses, scores.tolist()))[:16]]
        for logger in self.loggers:
            if hasattr(logger, "log_table"):
                logger.log_table(  # pyright: ignore[reportAttributeAccessIssue]  # WandbLogger's, checked by hasattr
                    key=key, columns=["prompt", "response", "score"], data=rows, step=self.global_step
                )

    def configure_optimizers(self):
        actor = build_optimizer(self.actor_optimizer_factory, self.policy.parameters())
        if self.critic is None:
            return actor
        return [actor, build_optimizer(self.critic_optimizer_factory, self.critic.parameters())]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        frozen = ("reference.", "reward.", "gold_reward.", "distill.")
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(frozen)}
        checkpoint["reward_normalization"] = self.reward.stats_state()
        checkpoint["kl_penalty"] = self.kl.state_dict()
        checkpoint["trust_region"] = self.trust_region.state_dict()
        checkpoint["score_shaping"] = self.score_shaping.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # The policy takes the checkpoint's weights after this hook: an engine built before syncs them first.
        self.weights_version += 1
        # Checkpoints written before the KL penalty owned its state kept the controller's under another key.
        self.kl.load_state_dict(checkpoint.get("kl_penalty", checkpoint.get("kl_controller", {})))
        self.trust_region.load_state_dict(checkpoint.get("trust_region", {}))
        self.score_shaping.load_state_dict(checkpoint.get("score_shaping", {}))
        self.reward.load_stats_state(checkpoint.get("reward_normalization", {}))

    def export_model(self):
        return self.policy


def unscored_as_mean(total: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """(B,) totals with the rows no component scored replaced by the mean of the scored ones."""
    fill = total[scored].mean() if bool(scored.any()) else torch.tensor(0.0)
    return torch.where(scored, total, fill)


def check_ppo_config(critic, critic_optimizer, advantage, num_minibatches: int) -> None:
    """Refuse inconsistent PPO choices before any model runs."""
    if advantage.needs_critic and critic is None:
        raise ConfigError(
            f"advantage {type(advantage).__name__} needs a critic; set module.critic (e.g. ${{model.critic}})"
        )
    if not advantage.needs_critic and critic is not None:
        raise ConfigError(
            f"advantage {type(advantage).__name__} is critic-free; set module.critic=null so no value model is trained"
        )
    if critic is not None and critic_optimizer is None:
        raise ConfigError("a critic needs module.critic_optimizer")
    if num_minibatches < 1:
        raise ConfigError(f"module.num_minibatches must be >= 1, got {num_minibatches}")
