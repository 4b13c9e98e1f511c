"""The embedded task's datasets: prompts, demonstrations, preferences, rankings, a corpus.

Everything is generated from the simulated writer (`writer.py`) and labelled by
simulated human labellers who see the gold reward (`gold_reward.py`) through
noise, the way the InstructGPT and Llama 2 data were collected:

* a pairwise preference follows Bradley-Terry, P(a > b) = sigmoid((g_a - g_b) / tau)
  (Bradley & Terry, "Rank Analysis of Incomplete Block Designs", 1952);
* a K-wise ranking follows Plackett-Luce, sampled as the order of g / tau + Gumbel
  noise (Plackett, "The Analysis of Permutations", 1975);
* each response also gets a noisy 1-7 Likert score, from which the Llama 2 margin
  of a pair is derived (Touvron et al., "Llama 2", 2023).

Every artefact and split has its own random stream, seeded by a string, so the
datasets are deterministic given `seed` and independent of each other and of
the order in which they are requested.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from functools import lru_cache

from lit_rlhf.data.records import PreferenceRecord, PromptRecord, RankedRecord, SFTRecord
from lit_rlhf.errors import ConfigError
from lit_rlhf.task.gold_reward import gold_reward
from lit_rlhf.task.language import ASPECTS, TRAIN_TITLES, VALIDATION_TITLES, make_prompt
from lit_rlhf.task.writer import write_loose_sentence, write_review

SPLITS: tuple[str, ...] = ("train", "validation")
LIKERT_CENTER, LIKERT_SCALE, LIKERT_NOISE = 4.0, 2.0, 0.5  # score = 4 + g / 2 + N(0, 0.5^2)
MARGIN_SCALE = 3.0  # Likert gap 3 -> margin 1, so margins lie in [0, 2]
# Labellers are shown pairs that differ: pairs closer than this in gold reward are
# redrawn, so the gold ordering of every pair is well defined (no ties).
MIN_PAIR_GAP = 1.0
_MAX_REDRAWS = 50


def check_split(split: str) -> str:
    """Return `split` if it is a known split, else raise `ConfigError` naming the valid ones."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


def titles(split: str) -> tuple[str, ...]:
    """The movie titles of a split; train and validation titles are disjoint."""
    return TRAIN_TITLES if check_split(split) == "train" else VALIDATION_TITLES


def _rng(seed: int, artefact: str, split: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so this is stable across processes.
    return random.Random(f"lit_rlhf.task/{seed}/{artefact}/{split}")


def _sample_prompt(rng: random.Random, split: str) -> tuple[str, str]:
    """A random (prompt, aspect) of the split."""
    aspect = rng.choice(ASPECTS)
    return make_prompt(rng.choice(titles(split)), aspect), aspect


def likert_score(gold: float, rng: random.Random) -> float:
    """A labeller's 1-7 Likert score of a response with gold reward `gold`."""
    score = round(LIKERT_CENTER + gold / LIKERT_SCALE + rng.gauss(0.0, LIKERT_NOISE))
    return float(min(max(score, 1), 7))


def bradley_terry_prob(gold_a: float, gold_b: float, temperature: float) -> float:
    """P(a is preferred to b) = sigmoid((g_a - g_b) / temperature)."""
    return 1.0 / (1.0 + math.exp(-(gold_a - gold_b) / temperature))


def plackett_luce_order(golds: Sequence[float], temperature: float, rng: random.Random) -> list[int]:
    """Indices best-first, a Plackett-Luce sample with utilities g / temperature (Gumbel-max trick)."""
    keys = [g / temperature + _gumbel(rng) for g in golds]
    return sorted(range(len(golds)), key=lambda i: keys[i], reverse=True)


def _gumbel(rng: random.Random) -> float:
    """A standard Gumbel draw, -log(-log(u)) with u strictly inside (0, 1)."""
    u = (rng.getrandbits(52) + 0.5) / 2**52
    return -math.log(-math.log(u))


@lru_cache(maxsize=64)
def _prompts(seed: int, split: str, n: int) -> tuple[PromptRecord, ...]:
    rng = _rng(seed, "prompts", split)
    return tuple(PromptRecord(_sample_prompt(rng, split)[0]) for _ in range(n))


@lru_cache(maxsize=64)
def _demonstrations(seed: int, split: str, n: int) -> tuple[SFTRecord, ...]:
    rng = _rng(seed, "demonstrations", split)
    records = []
    for _ in range(n):
        prompt, aspect = _sample_prompt(rng, split)
        records.append(SFTRecord(prompt, write_review(rng, aspect)))
    return tuple(records)


def _labelled_pair(rng: random.Random, split: str, temperature: float) -> PreferenceRecord:
    """Two reviews of one prompt, labelled by a Bradley-Terry labeller with Likert scores."""
    prompt, aspect = _sample_prompt(rng, split)
    a = write_review(rng, aspect)
    gold_a = gold_reward(prompt, a)
    for _ in range(_MAX_REDRAWS):
        b = write_review(rng, aspect)
        gold_b = gold_reward(prompt, b)
        if abs(gold_a - gold_b) >= MIN_PAIR_GAP:
            break
    if rng.random() >= bradley_terry_prob(gold_a, gold_b, temperature):
        a, b, gold_a, gold_b = b, a, gold_b, gold_a
    gap = likert_score(gold_a, rng) - likert_score(gold_b, rng)
    return PreferenceRecord(prompt, chosen=a, rejected=b, margin=max(gap, 0.0) / MARGIN_SCALE)


@lru_cache(maxsize=64)
def _preference_pairs(seed: int, split: str, n: int, temperature: float) -> tuple[PreferenceRecord, ...]:
    rng = _rng(seed, "preference_pairs", split)
    return tuple(_labelled_pair(rng, split, temperature) for _ in range(n))


@lru_cache(maxsize=64)
def _rankings(seed: int, split: str, n: int, k: int, temperature: float) -> tuple[RankedRecord, ...]:
    rng = _rng(seed, f"rankings/k={k}", split)
    records = []
    for _ in range(n):
        prompt, aspect = _sample_prompt(rng, split)
        responses = [write_review(rng, aspect) for _ in range(k)]
        golds = [gold_reward(prompt, r) for r in responses]
        order = plackett_luce_order(golds, temperature, rng)
        scores = tuple(likert_score(golds[i], rng) for i in order)
        records.append(RankedRecord(prompt, tuple(responses[i] for i in order), scores))
    return tuple(records)


@lru_cache(maxsize=64)
def _pretraining_corpus(seed: int, split: str, n: int) -> tuple[str, ...]:
    rng = _rng(seed, "pretraining_corpus", split)
    lines = []
    for _ in range(n):
        if rng.random() < 0.5:
            lines.append(write_review(rng, rng.choice(ASPECTS)).strip())
        else:
            lines.append(" ".join(write_loose_sentence(rng) for _ in range(rng.choice((1, 2)))))
    return tuple(lines)


def _sizes(name: str, value: Sequence[int]) -> tuple[int, int]:
    """Validate a (train, validation) size pair, as given in code or by Hydra (a ListConfig)."""
    sizes = tuple(value)
    if len(sizes) != 2 or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in sizes):
        raise ConfigError(f"{name} must be [train_size, validation_size] of non-negative ints, got {value!r}")
    return sizes  # type: ignore[return-value]


class EmbeddedTask:
    """The offline review task: all data an RLHF run needs, generated from `seed`.

    Sizes are `(train, validation)` pairs. Each method takes `split` in
    {"train", "validation"}; validation prompts use held-out movie titles.
    Results are cached per (seed, split, size), so repeated calls are free.
    """

    def __init__(
        self,
        seed: int = 0,
        num_prompts: Sequence[int] = (2000, 256),
        num_demonstrations: Sequence[int] = (20000, 1000),
        num_pairs: Sequence[int] = (10000, 1000),
        num_rankings: Sequence[int] = (2000, 200),
        num_corpus_lines: Sequence[int] = (10000, 500),
        label_temperature: float = 1.0,
    ) -> None:
        if label_temperature <= 0:
            raise ConfigError(f"label_temperature must be > 0, got {label_temperature}")
        self.seed = int(seed)
        self.label_temperature = float(label_temperature)
        self._num_prompts = _sizes("num_prompts", num_prompts)
        self._num_demonstrations = _sizes("num_demonstrations", num_demonstrations)
        self._num_pairs = _sizes("num_pairs", num_pairs)
        self._num_rankings = _sizes("num_rankings", num_rankings)
        self._num_corpus_lines = _sizes("num_corpus_lines", num_corpus_lines)

    @staticmethod
    def _size(sizes: tuple[int, int], split: str) -> int:
        return sizes[SPLITS.index(check_split(split))]

    def prompts(self, split: str) -> list[PromptRecord]:
        """Prompts for PPO rollouts and evaluation."""
        return list(_prompts(self.seed, split, self._size(self._num_prompts, split)))

    def demonstrations(self, split: str) -> list[SFTRecord]:
        """The writer's reviews, for supervised fine-tuning."""
        return list(_demonstrations(self.seed, split, self._size(self._num_demonstrations, split)))

    def preference_pairs(self, split: str) -> list[PreferenceRecord]:
        """Bradley-Terry-labelled pairs with Llama 2 margins (Likert gap / 3)."""
        n = self._size(self._num_pairs, split)
        return list(_preference_pairs(self.seed, split, n, self.label_temperature))

    def rankings(self, split: str, k: int = 4) -> list[RankedRecord]:
        """K reviews per prompt, best first by a Plackett-Luce labeller, with Likert scores."""
        if k < 2:
            raise ConfigError(f"a ranking needs k >= 2 responses, got k={k}")
        n = self._size(self._num_rankings, split)
        return list(_rankings(self.seed, split, n, int(k), self.label_temperature))

    def pretraining_corpus(self, split: str) -> list[str]:
        """Plain lines of the language (reviews and loose sentences, no prompts) for PPO-ptx."""
        return list(_pretraining_corpus(self.seed, split, self._size(self._num_corpus_lines, split)))

    def __repr__(self) -> str:
        return f"EmbeddedTask(seed={self.seed}, label_temperature={self.label_temperature})"
