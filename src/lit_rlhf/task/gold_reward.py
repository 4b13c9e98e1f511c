"""The programmatic gold reward of the embedded review task.

It plays the role of the human whose preferences the reward model learns: the
labels in `dataset.py` are sampled from it, and it is logged as a metric so that
reward over-optimisation is visible (Gao et al., "Scaling Laws for Reward Model
Overoptimization", 2022).

On the writer's distribution it is well approximated by "positive minus negative
adjectives" plus a bonus for staying on topic. Its penalties (repeated
adjectives, broken or unterminated sentences, rambling) almost never occur in
the preference data, so a learned reward model does not know them: a policy that
exploits the reward model by repeating "brilliant" or by writing ten sentences
sees its gold reward fall while the learned reward keeps rising.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lit_rlhf.task.language import (
    ADJECTIVE_SENTIMENT,
    AdjectivePhrase,
    Sentence,
    parse_response,
    prompt_aspect,
)

INTENSIFIER_FACTOR = 1.5
ASPECT_BONUS = 1.0
REPEAT_PENALTY = -1.0  # per repeated adjective, which also earns no sentiment
BROKEN_SENTENCE_PENALTY = -2.0  # per ungrammatical or unterminated sentence
MAX_SENTENCES = 3
EXTRA_SENTENCE_PENALTY = -1.0  # per sentence past MAX_SENTENCES, which is not read
EMPTY_RESPONSE_REWARD = -8.0  # below nearly every writer review: empty must never pay


def phrase_sentiment(phrase: AdjectivePhrase) -> float:
    """Sentiment of one ADJP: the adjective's value, x1.5 if intensified, sign flipped if negated."""
    value = float(ADJECTIVE_SENTIMENT[phrase.adjective])
    if phrase.intensified:
        value *= INTENSIFIER_FACTOR
    return -value if phrase.negated else value


def score_sentences(sentences: Sequence[Sentence], aspect: str | None) -> float:
    """Gold reward of parsed sentences for a prompt about `aspect` (see `gold_reward`)."""
    if not sentences:
        return EMPTY_RESPONSE_REWARD
    read, extra = sentences[:MAX_SENTENCES], len(sentences) - MAX_SENTENCES
    # Sentences past the limit are not read at all, so rambling can never pay for itself.
    reward = EXTRA_SENTENCE_PENALTY * max(extra, 0)
    seen: set[str] = set()
    on_topic = False
    for sentence in read:
        if not (sentence.grammatical and sentence.terminated):
            reward += BROKEN_SENTENCE_PENALTY
            continue
        on_topic |= aspect is not None and sentence.aspect == aspect
        for phrase in sentence.phrases:
            if phrase.adjective in seen:
                reward += REPEAT_PENALTY
                continue
            seen.add(phrase.adjective)
            reward += phrase_sentiment(phrase)
    return reward + (ASPECT_BONUS if on_topic else 0.0)


def gold_reward(prompt: str, response: str) -> float:
    """Deterministic gold reward of `response` to `prompt`.

    Sum of the sentiment of the distinct adjectives of the grammatical sentences
    (intensifier x1.5, negation flips the sign), +1 if a sentence's subject is the
    aspect the prompt asks about, -1 per repeated adjective, -2 per ungrammatical
    or unterminated sentence, -1 per sentence past the third (which is not read),
    and -8 for an empty response.
    """
    return score_sentences(parse_response(response), prompt_aspect(prompt))


def max_gold_reward() -> float:
    """The highest gold reward any response can reach (it needs `MAX_SENTENCES` sentences)."""
    # Best value of each adjective: intensified, negated if that makes it positive.
    best = sorted((abs(v) * INTENSIFIER_FACTOR for v in ADJECTIVE_SENTIMENT.values()), reverse=True)
    return sum(best[: 2 * MAX_SENTENCES]) + ASPECT_BONUS


class GoldReward:
    """Batched gold reward, a drop-in programmatic reward (Hydra: `_target_` with no arguments)."""

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], **columns) -> torch.Tensor:
        """Return the gold rewards, shape (B,) float32 (a reward function: other data columns are not needed)."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        return torch.tensor([gold_reward(p, r) for p, r in zip(prompts, responses)], dtype=torch.float32)

    def __repr__(self) -> str:
        return "GoldReward()"
