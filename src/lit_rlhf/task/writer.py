"""The simulated human writer whose reviews make up every dataset of the embedded task.

Each review is written in a random mood, from very negative to very positive:
the mood tilts which adjectives the writer picks, so the writer's reviews have a
gold reward near zero with a real spread (room for PPO/DPO to improve). The
writer is careful: always grammatical, always terminated, at most three
sentences, and distinct adjectives except in a small fraction of reviews.
That care is what makes the gold reward's penalties invisible to a reward model
trained on the writer's reviews.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence

from lit_rlhf.task.language import (
    ADJECTIVE_SENTIMENT,
    ADJECTIVES,
    ASPECTS,
    CONJUNCTIONS,
    GENERIC_SUBJECTS,
    INTENSIFIERS,
    VERBS,
    AdjectivePhrase,
    render_sentence,
)

MOODS: tuple[float, ...] = (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
NEGATION_PRIOR = 0.12  # relative weight of "not ADJ" against "ADJ": negation is rare
INTENSIFY_PROB = 0.3
SECOND_PHRASE_PROB = 0.5
SENTENCE_COUNT_WEIGHTS = (0.3, 0.45, 0.25)  # for 1, 2, 3 sentences
REPEAT_PROB = 0.03  # reviews that repeat an adjective: rare, so a reward model barely sees it
ON_TOPIC_PROB = 0.75  # the first sentence's subject is the prompt's aspect
CONJUNCTION_NOISE = 0.1  # "and"/"but" ignores the contrast this often

# Every (adjective, negated) choice with its signed sentiment.
_CANDIDATES: tuple[tuple[str, bool, int], ...] = tuple(
    (adj, negated, -value if negated else value)
    for adj, value in ADJECTIVE_SENTIMENT.items()
    for negated in (False, True)
)


def _cumulative_weights(mood: float) -> list[float]:
    """Cumulative choice weights over `_CANDIDATES`: prior x exp(mood x sentiment)."""
    total, cumulative = 0.0, []
    for _, negated, value in _CANDIDATES:
        total += (NEGATION_PRIOR if negated else 1.0) * math.exp(mood * value)
        cumulative.append(total)
    return cumulative


# Precomputed once, and sampled with `_pick`/`_pick_weighted` below rather than
# `random.choice(s)`: together that halves the time of the ~70k reviews behind
# the default datasets.
_MOOD_WEIGHTS = {mood: _cumulative_weights(mood) for mood in MOODS}
_SENTENCE_COUNTS = (1, 2, 3)
_SENTENCE_COUNT_CUMULATIVE = [sum(SENTENCE_COUNT_WEIGHTS[: i + 1]) for i in range(3)]
_LATER_SUBJECT_CUMULATIVE = [0.4, 0.7, 0.9, 1.0]  # it, this movie, the aspect, a random aspect


def _pick(rng: random.Random, options: Sequence):
    """A uniform choice, cheaper than `rng.choice` (one float instead of rejection sampling)."""
    return options[int(rng.random() * len(options))]


def _pick_weighted(rng: random.Random, options: Sequence, cumulative: Sequence[float]):
    """A choice with cumulative weights `cumulative` (what `rng.choices` does, minus its overhead)."""
    index = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
    return options[min(index, len(options) - 1)]


def _pick_phrase(rng: random.Random, mood: float, used: set[str]) -> AdjectivePhrase:
    """Draw a phrase whose adjective is not in `used` (rejection; at most 6 of 16 are used)."""
    while True:
        adjective, negated, _ = _pick_weighted(rng, _CANDIDATES, _MOOD_WEIGHTS[mood])
        if adjective not in used:
            return AdjectivePhrase(adjective, rng.random() < INTENSIFY_PROB, negated)


def _conjunction(rng: random.Random, first: AdjectivePhrase, second: AdjectivePhrase) -> str:
    """ "but" between phrases of opposite sentiment, "and" otherwise, with a little noise."""
    contrast = _signed(first) * _signed(second) < 0
    if rng.random() < CONJUNCTION_NOISE:
        contrast = not contrast
    return "but" if contrast else "and"


def _signed(phrase: AdjectivePhrase) -> int:
    value = ADJECTIVE_SENTIMENT[phrase.adjective]
    return -value if phrase.negated else value


def _subject(rng: random.Random, aspect: str, first: bool) -> str:
    """The subject of a sentence: usually the asked-for aspect first, then mostly "it"."""
    if first:
        if rng.random() < ON_TOPIC_PROB:
            return f"the {aspect}"
        return _pick(rng, (*GENERIC_SUBJECTS, f"the {_pick(rng, ASPECTS)}"))
    options = ("it", "this movie", f"the {aspect}", f"the {_pick(rng, ASPECTS)}")
    return _pick_weighted(rng, options, _LATER_SUBJECT_CUMULATIVE)


def _render_phrase(rng: random.Random, phrase: AdjectivePhrase) -> str:
    return phrase.render(_pick(rng, INTENSIFIERS))


def write_review(rng: random.Random, aspect: str) -> str:
    """One review about `aspect`, as a response: leading space, sentences joined by spaces."""
    mood = _pick(rng, MOODS)
    num_sentences = _pick_weighted(rng, _SENTENCE_COUNTS, _SENTENCE_COUNT_CUMULATIVE)
    used: set[str] = set()
    plan: list[tuple[str, list[AdjectivePhrase]]] = []
    for k in range(num_sentences):
        subject = _subject(rng, aspect, first=k == 0)
        phrases = [_pick_phrase(rng, mood, used)]
        used.add(phrases[0].adjective)
        if rng.random() < SECOND_PHRASE_PROB:
            phrases.append(_pick_phrase(rng, mood, used))
            used.add(phrases[1].adjective)
        plan.append((subject, phrases))
    if rng.random() < REPEAT_PROB and len(used) >= 2:
        # A careless moment: the last adjective repeats an earlier one.
        subject, phrases = plan[-1]
        earlier = sorted(used - {phrases[-1].adjective})
        last = phrases[-1]
        phrases[-1] = AdjectivePhrase(rng.choice(earlier), last.intensified, last.negated)
    sentences = [_render_sentence(rng, subject, phrases) for subject, phrases in plan]
    return " " + " ".join(sentences)


def _render_sentence(rng: random.Random, subject: str, phrases: list[AdjectivePhrase]) -> str:
    rendered = tuple(_render_phrase(rng, p) for p in phrases)
    conjunction = _conjunction(rng, *phrases) if len(phrases) == 2 else "and"
    return render_sentence(subject, _pick(rng, VERBS), rendered, conjunction)


def write_loose_sentence(rng: random.Random) -> str:
    """A grammatical sentence with uniformly random words: no mood, no topic, no care."""
    subject = rng.choice((*GENERIC_SUBJECTS, *(f"the {a}" for a in ASPECTS)))
    phrases = [
        AdjectivePhrase(rng.choice(ADJECTIVES), rng.random() < INTENSIFY_PROB, rng.random() < 0.1)
        for _ in range(rng.choice((1, 2)))
    ]
    rendered = tuple(_render_phrase(rng, p) for p in phrases)
    return render_sentence(subject, rng.choice(VERBS), rendered, rng.choice(CONJUNCTIONS))
