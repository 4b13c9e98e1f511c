"""The embedded offline task as data sources: the same `splits()` / `load(split)` shape as real data."""

from __future__ import annotations

import functools

from lit_rlhf.data.records import PreferenceRecord, PromptRecord, RankedRecord, SFTRecord
from lit_rlhf.task.dataset import EmbeddedTask

SPLITS = ["train", "validation"]


@functools.lru_cache(maxsize=4)
def embedded_task(seed: int) -> EmbeddedTask:
    """One task per seed for the whole process (several sources share it)."""
    return EmbeddedTask(seed=seed)


class EmbeddedDemonstrations:
    """SFT demonstrations written by the task's simulated reviewers."""

    def __init__(self, seed: int):
        self.seed = seed

    def splits(self) -> list[str]:
        return SPLITS

    def load(self, split: str) -> list[SFTRecord]:
        return embedded_task(self.seed).demonstrations(split)


class EmbeddedPreferencePairs:
    """Pairs labelled from the gold reward with Bradley-Terry noise, with Likert margins."""

    def __init__(self, seed: int):
        self.seed = seed

    def splits(self) -> list[str]:
        return SPLITS

    def load(self, split: str) -> list[PreferenceRecord]:
        return embedded_task(self.seed).preference_pairs(split)


class EmbeddedRankings:
    """K completions per prompt ranked best-first (Plackett-Luce labellers)."""

    def __init__(self, seed: int, k: int):
        self.seed = seed
        self.k = k

    def splits(self) -> list[str]:
        return SPLITS

    def load(self, split: str) -> list[RankedRecord]:
        return embedded_task(self.seed).rankings(split, k=self.k)


class EmbeddedPrompts:
    """Review prompts for PPO rollouts; validation uses held-out titles."""

    def __init__(self, seed: int):
        self.seed = seed

    def splits(self) -> list[str]:
        return SPLITS

    def load(self, split: str) -> list[PromptRecord]:
        return embedded_task(self.seed).prompts(split)


class EmbeddedPretrainCorpus:
    """Plain text of the task's language, as prompt-less records, for PPO-ptx."""

    def __init__(self, seed: int):
        self.seed = seed

    def splits(self) -> list[str]:
        return SPLITS

    def load(self, split: str) -> list[SFTRecord]:
        return [SFTRecord(prompt="", response=line) for line in embedded_task(self.seed).pretraining_corpus(split)]
