"""`python -m lit_rlhf.evaluate`: sample a policy on held-out prompts and measure it, training nothing.

For every prompt, `samples_per_prompt` completions are drawn with a fixed seed and scored by the reward
(each component) and the gold reward. With a verifier in the reward: greedy accuracy, pass@k and maj@k.
With a reference model: the KL of the policy to it on the policy's samples (k1 and, when the tokenizers
match, the exact full-vocabulary KL), and the win rate of the policy's completions against the
reference's on the same prompts, judged by the gold reward when there is one, else by the reward.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lit_rlhf.data.batches import PromptBatch
from lit_rlhf.data.collate import pad_left
from lit_rlhf.evaluation.metrics import maj_at_k, pass_at_k, win_rate
from lit_rlhf.generation import GenerationEngine
from lit_rlhf.models.reward_inputs import same_tokenizer
from lit_rlhf.modules.common import seeded_samples
from lit_rlhf.ops.forward import sequence_token_logprobs
from lit_rlhf.ops.generation import Generation, SamplingConfig, decode_responses
from lit_rlhf.ops.masking import masked_sum
from lit_rlhf.regularizers.kl.estimators import kl_full, kl_k1
from lit_rlhf.rewards import Completions, Reward, RewardScores, columns_of_rows, repeat_columns

log = logging.getLogger("lit_rlhf")


@dataclass(frozen=True)
class Reference:
    """A model to compare the policy with, and its tokenizer."""

    model: torch.nn.Module
    tokenizer: Any


@dataclass
class Evaluation:
    """What an evaluation measured: `metrics` (name -> value) and one record per sample."""

    metrics: dict[str, float] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)


@dataclass
class _Tally:
    """Per-sample and per-prompt values gathered batch by batch."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, values: Iterable[float]) -> None:
        self.values.setdefault(name, []).extend(float(v) for v in values)

    def means(self) -> dict[str, float]:
        return {name: sum(vs) / len(vs) for name, vs in self.values.items() if vs}

    def std(self, name: str) -> float | None:
        values = self.values.get(name)
        if not values:
            return None
        mean = sum(values) / len(values)
        return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def completions_of(generation: Generation, prompts: list[str], texts: list[str], columns: dict) -> Completions:
    return Completions(
        prompts,
        texts,
        columns,
        sequences=generation.sequences,
        attention_mask=generation.attention_mask,
        has_stop=generation.has_stop,
        lengths=generation.response_mask.sum(1),
    )


@torch.no_grad()
def sequence_kls(policy, reference, generation: Generation, exact: bool) -> dict[str, torch.Tensor]:
    """(B,) KL(policy || reference) of each sampled response, summed over its tokens: the k1 estimate
    (log-ratio of the sampled tokens, Schulman 2020) and, if `exact`, the full-vocabulary KL."""
    start, mask = generation.prompt_length - 1, generation.response_mask
    logprobs, logits = sequence_token_logprobs(policy, generation.sequences, generation.attention_mask, start)
    ref_logprobs, ref_logits = sequence_token_logprobs(
        reference, generation.sequences, generation.attention_mask, start
    )
    kls = {"kl_k1": masked_sum(kl_k1(logprobs, ref_logprobs), mask, dim=1)}
    if exact:
        kls["kl"] = masked_sum(kl_full(logits, ref_logits), mask, dim=1)
    return kls


def prompts_for(tokenizer, prompts: Sequence[str], max_prompt_length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt texts tokenized by another model's tokenizer, left-padded (as `encode_prompt_column` keeps the end)."""
    ids = [row[-max_prompt_length:] for row in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    input_ids, mask = pad_left(ids, tokenizer.pad_token_id)
    return input_ids.to(device), mask.to(device)


class Evaluator:
    """Samples and scores a policy (see the module docstring).

    Args:
        policy: the model evaluated (frozen here).
        tokenizer: its tokenizer.
        reward: the `reward` group's Reward, or None (no reward metrics).
        gold_reward: the held-out gold reward, or None.
        reference: a model to compare with, or None (no KL, no win rate).
        sampling: how completions are sampled (temperature 0: greedy).
        generation: the `generation` group's engine factory (hf or vllm) that samples the policy. The
            reference's completions are drawn with HF generate (one vLLM engine per process).
        samples_per_prompt: n, the completions drawn per prompt.
        ks: the k of pass@k and maj@k, each at most n.
        seed: the sampling seed (batch b draws with seed + b).
        max_prompt_length: the prompt tokens kept when another tokenizer re-encodes the prompts.
    """

    def __init__(
        self,
        policy,
        tokenizer,
        reward: Reward | None,
        gold_reward: Reward | None,
        reference: Reference | None,
        sampling: SamplingConfig,
        generation: Callable[..., GenerationEngine],
        samples_per_prompt: int,
        ks: Sequence[int],
        seed: int,
        max_prompt_length: int,
    ):
        self.policy, self.tokenizer = policy.eval().requires_grad_(False), tokenizer
        self.reward, self.gold_reward, self.reference = reward, gold_reward, reference
        self.sampling, self.n, self.ks = sampling, samples_per_prompt, sorted(set(ks))
        self.seed, self.max_prompt_length = seed, max_prompt_length
        self.stop_token_ids = [tokenizer.eos_token_id]
        self.engine = generation(
            policy=self.policy, stop_token_ids=self.stop_token_ids, pad_token_id=tokenizer.pad_token_id
        )
        self.shared_vocabulary = reference is not None and same_tokenizer(reference.tokenizer, tokenizer)
        if reference is not None and not self.shared_vocabulary:
            log.info("the reference has another tokenizer: no KL to it is measured (the win rate is)")

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def samples(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, sampling: SamplingConfig, seed: int
    ) -> tuple[Generation, list[str]]:
        """The policy's completions of left-padded prompts, drawn by the engine from `seed`, and their texts."""
        generation = self.engine.generate(prompt_ids, prompt_mask, sampling, seed=seed).generation
        return generation, decode_responses(self.tokenizer, generation)

    def run(self, batches: Iterable[PromptBatch]) -> Evaluation:
        tally, records = _Tally(), []
        for number, batch in enumerate(batches):
            records += self.evaluate_batch(batch, number, tally)
        if not records:
            return Evaluation()
        return Evaluation(self.summarize(tally, len(records)), records)

    @torch.no_grad()
    def evaluate_batch(self, batch: PromptBatch, number: int, tally: _Tally) -> list[dict]:
        n, seed = self.n, self.seed + number
        prompts = [p for p in batch.prompts for _ in range(n)]
        columns = repeat_columns(columns_of_rows(batch.columns), n)
        ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        generation, texts = self.samples(ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), self.sampling, seed)
        samples = completions_of(generation, prompts, texts, columns)
        tally.add("response_length", generation.response_mask.sum(1).tolist())
        tally.add("eos_fraction", generation.has_stop.float().tolist())
        rewards = self.reward(samples) if self.reward is not None else None
        gold = self.gold_reward(samples) if self.gold_reward is not None else None
        if rewards is not None:
            self._tally_rewards(rewards, tally)
        if gold is not None:
            tally.add("gold_reward", gold.total[gold.scored].tolist())
        verdicts = self._tally_verifiers(batch, samples, tally)
        if self.reference is not None:
            self._tally_reference(batch, generation, samples, rewards, gold, seed, tally)
        return self._records(samples, rewards, gold, verdicts)

    def _tally_rewards(self, rewards: RewardScores, tally: _Tally) -> None:
        tally.add("reward", rewards.total[rewards.scored].tolist())
        for name, (values, scored) in rewards.components.items():
            tally.add(f"reward/{name}", values[scored].tolist())

    def _tally_verifiers(self, batch: PromptBatch, samples: Completions, tally: _Tally) -> dict[str, list]:
        """Greedy accuracy of each verifier; pass@k and maj@k of the first one. Returns each sample's verdicts."""
        verifiers = self.reward.verifiers if self.reward is not None else {}
        if not verifiers:
            return {}
        greedy_sampling = dataclasses.replace(self.sampling, temperature=0.0)
        ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        greedy, greedy_texts = self.samples(ids, mask, greedy_sampling, self.seed)
        greedy_samples = completions_of(greedy, list(batch.prompts), greedy_texts, columns_of_rows(batch.columns))
        verdicts = {}
        for number, (name, verifier) in enumerate(verifiers.items()):
            correct, judged = verifier(greedy_samples)
            tally.add(f"accuracy/{name}", correct[judged].tolist())
            if number == 0:
                tally.add("accuracy", correct[judged].tolist())
            verdicts[name] = verifier(samples)
        name, verifier = next(iter(verifiers.items()))
        correct, judged = verdicts[name]
        answers = [verifier.extract(text) for text in samples.completions]
        for prompt in range(len(batch.prompts)):
            rows = slice(prompt * self.n, (prompt + 1) * self.n)
            if not bool(judged[rows].all()):
                continue  # a prompt without a reference answer has no pass@k
            right = correct[rows].tolist()
            for k in self.ks:
                tally.add(f"pass@{k}", [pass_at_k(self.n, int(sum(right)), k)])
                tally.add(f"maj@{k}", [maj_at_k(answers[rows], right, k)])
        return verdicts

    def _tally_reference(self, batch, generation, samples, rewards, gold, seed, tally) -> None:
        reference = self.reference
        assert reference is not None, "called only when a reference is set"
        if self.shared_vocabulary:
            for name, kl in sequence_kls(self.policy, reference.model, generation, exact=True).items():
                tally.add(name, kl.tolist())
        judge = self.gold_reward if self.gold_reward is not None else self.reward
        if judge is None:
            return
        n = self.n
        if self.shared_vocabulary:
            ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        else:
            ids, mask = prompts_for(reference.tokenizer, batch.prompts, self.max_prompt_length, self.device)
        ref_generation, ref_texts = seeded_samples(
            reference.model,
            reference.tokenizer,
            ids.repeat_interleave(n, 0),
            mask.repeat_interleave(n, 0),
            self.sampling,
            [reference.tokenizer.eos_token_id],
            seed,
        )
        ref_samples = dataclasses.replace(
            completions_of(ref_generation, samples.prompts, ref_texts, samples.columns),
            # A reward model on the policy's ids cannot read another tokenizer's: it scores the texts.
            sequences=ref_generation.sequences if self.shared_vocabulary else None,
            attention_mask=ref_generation.attention_mask if self.shared_vocabulary else None,
        )
        policy_scores = gold if judge is self.gold_reward else rewards
        ref_scores = judge(ref_samples)
        both = policy_scores.scored & ref_scores.scored
        if bool(both.any()):
            tally.add("win_rate", [win_rate(policy_scores.total[both].tolist(), ref_scores.total[both].tolist())])
            tally.values.setdefault("win_rate_pairs", []).append(float(both.sum()))

    def _records(self, samples: Completions, rewards, gold, verdicts) -> list[dict]:
        records = []
        for row in range(len(samples)):
            record = {"prompt": samples.prompts[row], "completion": samples.completions[row], "sample": row % self.n}
            if rewards is not None:
                record["reward"] = float(rewards.total[row]) if bool(rewards.scored[row]) else None
                for name, (values, scored) in rewards.components.items():
                    record[f"reward/{name}"] = float(values[row]) if bool(scored[row]) else None
            if gold is not None:
                record["gold_reward"] = float(gold.total[row]) if bool(gold.scored[row]) else None
            for name, (correct, judged) in verdicts.items():
                record[f"correct/{name}"] = bool(correct[row]) if bool(judged[row]) else None
            record["columns"] = {name: values[row] for name, values in samples.columns.items()}
            records.append(record)
        return records

    def summarize(self, tally: _Tally, samples: int) -> dict[str, float]:
        """`eval/...` metrics: means over samples (pass@k, maj@k and accuracy over prompts)."""
        means = tally.means()
        # The win rate is pooled over every judged pair, not averaged over batches.
        pairs = tally.values.pop("win_rate_pairs", [])
        if pairs:
            rates = tally.values["win_rate"]
            means["win_rate"] = sum(r * p for r, p in zip(rates, pairs)) / sum(pairs)
        metrics = {f"eval/{name}": value for name, value in means.items() if name != "win_rate_pairs"}
        for name in ["reward", *(f"reward/{c}" for c in (self.reward.names if self.reward is not None else []))]:
            std = tally.std(name)
            if std is not None:
                metrics[f"eval/{name}_std"] = std
        metrics["eval/samples"] = float(samples)
        metrics["eval/prompts"] = float(samples // self.n)
        return dict(sorted(metrics.items()))
