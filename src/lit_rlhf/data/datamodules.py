"""LightningDataModules for each kind of batch: SFT, preferences, and PPO prompts.

Each takes a *source* (`splits()` and `load(split)`: the embedded task, JSONL,
HH-RLHF, ...) and tokenizes everything once in `setup`. `path` and
`skip_invalid` only anchor `data.path=` / `data.skip_invalid=` on the command
line: the source reads them through interpolation. Training loaders are
torchdata `StatefulDataLoader`s, so a resumed run continues from the same
position in the same shuffled order.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from typing import Callable, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler
from transformers import PreTrainedTokenizerBase

from lit_rlhf.data.batches import PPOBatch, PreferenceBatch, PromptBatch, SFTBatch
from lit_rlhf.data.collate import (
    PreferenceItem,
    PromptItem,
    SFTItem,
    collate_preferences,
    collate_prompts,
    collate_sft,
)
from lit_rlhf.data.records import PreferenceRecord, RankedRecord, SFTRecord
from lit_rlhf.data.tokenization import encode_prompt_responses, encode_prompts, report_truncation
from lit_rlhf.errors import ConfigError, DataError

log = logging.getLogger("lit_rlhf")

GoldReward = Callable[[Sequence[str], Sequence[str]], torch.Tensor]


def load_train_val(
    source, train_split: str, val_split: str | None, val_fraction: float, seed: int
) -> tuple[list, list]:
    """Records of the training split and of a validation split, or a seeded hold-out of `val_fraction`.

    The hold-out is used when `val_split` is null, and when the data has no such split (e.g. one
    HH-RLHF file, which is all `train`): that is said once, naming the split that was missing.
    """
    train = source.load(train_split)
    if val_split is not None:
        available = source.splits()
        if val_split in available:
            return train, source.load(val_split)
        log.warning(
            "the data has no '%s' split (it has: %s); holding out data.val_fraction=%s of '%s' for validation",
            val_split,
            ", ".join(available),
            val_fraction,
            train_split,
        )
    if not 0 < val_fraction < 1:
        raise ConfigError(f"a held-out validation set needs data.val_fraction in (0, 1); got {val_fraction}")
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    held_out = set(order[: max(1, int(len(train) * val_fraction))])
    return [r for i, r in enumerate(train) if i not in held_out], [r for i, r in enumerate(train) if i in held_out]


def train_loader(dataset, batch_size: int, collate_fn, seed: int, num_workers: int) -> StatefulDataLoader:
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(dataset) >= batch_size,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate_fn,
        num_workers=num_workers,
    )


def eval_loader(dataset, batch_size: int, collate_fn, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, num_workers=num_workers)


def _require_records(records: list, split: str) -> None:
    if not records:
        raise DataError(f"the {split} split has no records")


def as_prompt_response(record) -> tuple[str, str]:
    """The demonstration in any record type: an SFT pair, a preference's chosen, a ranking's best."""
    if isinstance(record, SFTRecord):
        return record.prompt, record.response
    if isinstance(record, PreferenceRecord):
        return record.prompt, record.chosen
    if isinstance(record, RankedRecord):
        return record.prompt, record.responses[0]
    raise DataError(f"SFT needs prompt/response records; got {type(record).__name__}")


def as_ranked_group(record) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...], tuple[float | None, ...]]:
    """Completions best-first, the (better, worse) pairs among them, and each pair's margin."""
    if isinstance(record, PreferenceRecord):
        return (record.chosen, record.rejected), ((0, 1),), (record.margin,)
    if isinstance(record, RankedRecord):
        pairs = tuple(itertools.combinations(range(len(record.responses)), 2))
        scores = record.scores
        margins = tuple(None if scores is None else max(scores[i] - scores[j], 0.0) for i, j in pairs)
        return record.responses, pairs, margins
    raise DataError(f"preference training needs chosen/rejected or ranked records; got {type(record).__name__}")


class RecordDataModule(L.LightningDataModule):
    """What every datamodule shares: a source, its train/validation split, and the loaders' settings.

    Subclasses turn records into items (`make_items`) and items into batches (`collate`).
    """

    batch_type: type

    def __init__(
        self,
        source,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int,
        val_batch_size: int,
        train_split: str,
        val_split: str | None,
        val_fraction: float,
        seed: int,
        num_workers: int,
        gold_reward: GoldReward | None = None,
        path: str | None = None,
        skip_invalid: bool = False,
    ):
        super().__init__()
        for key, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size)):
            if value < 1:
                raise ConfigError(f"data.{key} must be a positive integer, got {value}")
        self.source, self.tokenizer, self.gold_reward = source, tokenizer, gold_reward
        self.batch_size, self.val_batch_size, self.num_workers, self.seed = (
            batch_size,
            val_batch_size,
            num_workers,
            seed,
        )
        self.splits = (train_split, val_split, val_fraction)
        self.train_items: list | None = None
        self.val_items: list | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_items is not None:
            return
        train, val = load_train_val(self.source, *self.splits, seed=self.seed)
        _require_records(train, "train")
        _require_records(val, "validation")
        self.train_items = self.make_items(train, "train", first_id=0)
        self.val_items = self.make_items(val, "validation", first_id=self.num_ids(self.train_items))

    def make_items(self, records: list, split: str, first_id: int) -> list:
        """Tokenized items of one split; ids (where a subclass uses them) start at `first_id`."""
        raise NotImplementedError

    def num_ids(self, items: list) -> int:
        return len(items)

    def collate(self, items: list):
        raise NotImplementedError

    def train_dataloader(self):
        return train_loader(self.train_items, self.batch_size, self.collate, self.seed, self.num_workers)

    def val_dataloader(self):
        return eval_loader(self.val_items, self.val_batch_size, self.collate, self.num_workers)


class SFTDataModule(RecordDataModule):
    """Prompt + demonstration pairs; the loss covers the response tokens only."""

    batch_type = SFTBatch

    def __init__(self, source, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int, **kwargs):
        super().__init__(source, tokenizer, **kwargs)
        self.max_length, self.max_prompt_length = max_length, max_prompt_length

    def make_items(self, records: list, split: str, first_id: int) -> list[SFTItem]:
        pairs = [as_prompt_response(r) for r in records]
        examples = encode_prompt_responses(
            self.tokenizer, [p for p, _ in pairs], [r for _, r in pairs], self.max_length, self.max_prompt_length
        )
        report_truncation(sum(e.truncated for e in examples), len(examples), f"{split} demonstrations", self.max_length)
        return [SFTItem(example, prompt) for example, (prompt, _) in zip(examples, pairs)]

    def collate(self, items: list[SFTItem]) -> SFTBatch:
        return collate_sft(items, self.tokenizer.pad_token_id)


class PreferenceDataModule(RecordDataModule):
    """Chosen/rejected pairs or K-wise rankings, for reward models and DPO.

    Every completion gets a dataset-wide sequence id (train first, then validation),
    the key of DPO's cached reference log-probs.
    """

    batch_type = PreferenceBatch

    def __init__(self, source, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int, **kwargs):
        super().__init__(source, tokenizer, **kwargs)
        self.max_length, self.max_prompt_length = max_length, max_prompt_length

    def num_ids(self, items: list[PreferenceItem]) -> int:
        """Completions, not records: each completion has its own id."""
        return sum(len(item.examples) for item in items)

    def make_items(self, records: list, split: str, first_id: int) -> list[PreferenceItem]:
        groups = [as_ranked_group(r) for r in records]
        prompts = [r.prompt for r, (responses, _, _) in zip(records, groups) for _ in responses]
        responses = [text for responses, _, _ in groups for text in responses]
        flat = encode_prompt_responses(self.tokenizer, prompts, responses, self.max_length, self.max_prompt_length)
        report_truncation(sum(e.truncated for e in flat), len(flat), f"{split} preference completions", self.max_length)
        items, start = [], 0
        for record, (texts, pairs, margins) in zip(records, groups):
            examples = tuple(flat[start : start + len(texts)])
            items.append(PreferenceItem(record.prompt, texts, examples, pairs, margins, first_id + start))
            start += len(texts)
        return items

    def collate(self, items: list[PreferenceItem]) -> PreferenceBatch:
        return collate_preferences(items, self.tokenizer.pad_token_id)

    def all_dataloaders(self) -> list[DataLoader]:
        """Unshuffled passes over every split (to precompute reference log-probs once)."""
        return [
            eval_loader(items, self.val_batch_size, self.collate, self.num_workers)
            for items in (self.train_items, self.val_items)
        ]


class PromptDataModule(RecordDataModule):
    """Prompts for PPO rollouts, optionally with a pretraining corpus for PPO-ptx.

    Training batches are `PPOBatch`es: prompts, plus a pretraining batch when a corpus is
    given. The corpus is sampled so that it yields exactly one batch per prompt batch: the
    prompts alone define an epoch. Validation batches are plain `PromptBatch`es.
    """

    batch_type = PPOBatch

    def __init__(
        self,
        source,
        tokenizer: PreTrainedTokenizerBase,
        max_prompt_length: int,
        pretrain_source,
        pretrain_batch_size: int,
        pretrain_max_length: int,
        **kwargs,
    ):
        super().__init__(source, tokenizer, **kwargs)
        self.max_prompt_length = max_prompt_length
        self.pretrain_source, self.pretrain_batch_size, self.pretrain_max_length = (
            pretrain_source,
            pretrain_batch_size,
            pretrain_max_length,
        )
        self.pretrain_items: list[SFTItem] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_items is not None:
            return
        super().setup(stage)
        # Only regularizer/ptx=mix gives the data a corpus: otherwise nothing is tokenized or sampled.
        if self.pretrain_source is not None:
            lines = self.pretrain_source.load("train")
            _require_records(lines, "pretraining")
            examples = encode_prompt_responses(
                self.tokenizer, [""] * len(lines), [r.response for r in lines], self.pretrain_max_length, 1
            )
            report_truncation(
                sum(e.truncated for e in examples), len(examples), "pretraining texts", self.pretrain_max_length
            )
            self.pretrain_items = [SFTItem(example, "") for example in examples]

    def make_items(self, records: list, split: str, first_id: int) -> list[PromptItem]:
        prompts = [r.prompt for r in records]
        ids, truncated = encode_prompts(self.tokenizer, prompts, self.max_prompt_length)
        report_truncation(truncated, len(ids), f"{split} prompts", self.max_prompt_length)
        empty = sum(not row for row in ids)
        if empty:
            raise DataError(f"{empty} {split} prompts tokenize to nothing; generation needs at least one prompt token")
        return [PromptItem(row, prompt) for row, prompt in zip(ids, prompts)]

    def collate(self, items: list[PromptItem]) -> PromptBatch:
        return collate_prompts(items, self.tokenizer.pad_token_id)

    def train_dataloader(self):
        prompts = super().train_dataloader()
        loaders = {"prompts": prompts}
        if self.pretrain_items is not None:
            sampler = RandomSampler(
                self.pretrain_items,
                num_samples=len(prompts) * self.pretrain_batch_size,
                generator=torch.Generator().manual_seed(self.seed + 1),
            )
            loaders["pretrain"] = StatefulDataLoader(
                self.pretrain_items,
                batch_size=self.pretrain_batch_size,
                sampler=sampler,
                collate_fn=functools.partial(collate_sft, pad_id=self.tokenizer.pad_token_id),
                num_workers=self.num_workers,
            )
        return CombinedLoader(loaders, mode="min_size")

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """The combined loader yields a dict of its loaders' batches; the module takes them typed."""
        if isinstance(batch, dict):
            return PPOBatch(prompts=batch["prompts"], pretrain=batch.get("pretrain"))
        return batch
