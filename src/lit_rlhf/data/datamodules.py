"""LightningDataModules for each kind of batch: SFT, preferences, and PPO prompts.

Each takes a *source* (`splits()` and `load(split)`: the embedded task, JSONL,
HH-RLHF, ...) and tokenizes it once into memory-mapped Arrow tables cached under
`data.cache_dir` (`lit_rlhf.data.tokenized`); a later run with the same data,
tokenizer and lengths reads the tables back without loading a record. Keys such
as `path` only anchor `data.path=` on the command line: the source reads them
through interpolation (`ANCHORS`). Training loaders are
torchdata `StatefulDataLoader`s, so a resumed run continues from the same
position in the same shuffled order; under data parallelism each rank reads
its share of that order (`lit_rlhf.data.sharding`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from typing import Callable, Sequence

import datasets
import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from lit_rlhf.data.batches import PPOBatch, PreferenceBatch, PromptBatch, SFTBatch
from lit_rlhf.data.collate import (
    PreferenceItem,
    PromptItem,
    SFTItem,
    collate_preferences,
    collate_prompts,
    collate_sft,
    collate_sft_window,
)
from lit_rlhf.data.prompts import jsonable_columns
from lit_rlhf.data.record_checks import fresh_datasets_cache, read_records, suspect_row_counts
from lit_rlhf.data.records import PreferenceRecord, RankedRecord, SFTRecord
from lit_rlhf.data.sharding import ShardedShuffle, evaluation_shard
from lit_rlhf.data.tokenization import check_lengths, report_truncation
from lit_rlhf.data.tokenized import (
    COMPLETIONS,
    PREFERENCES,
    PROMPTS,
    PreferenceRows,
    PromptRows,
    SFTRows,
    build_tables,
    encode_completions,
    encode_prompt_column,
    is_saved,
    load_table,
    table_fingerprint,
    table_path,
)
from lit_rlhf.data.windows import AccumulationWindows, WindowedRows, response_token_counts
from lit_rlhf.errors import ConfigError, DataError, OutputError

log = logging.getLogger("lit_rlhf")

# The two splits every datamodule tokenizes (a held-out validation set included).
TRAIN_VAL = ("train", "validation")

# Keys a data config holds for the command line and for interpolation, which the datamodule itself does not use:
# the source reads the file keys (data.path=...), the modules the length of their samples, the run check which
# embedded task the data belongs to.
ANCHORS = frozenset(
    {
        "path",
        "skip_invalid",
        "prompt_key",
        "messages_key",
        "completion_key",
        "pretrain_path",
        "pretrain_text_key",
        "max_new_tokens",
        "embedded_task",
    }
)

GoldReward = Callable[[Sequence[str], Sequence[str]], torch.Tensor]


def resolve_val_split(source, train_split: str, val_split: str | None, val_fraction: float) -> str | None:
    """The validation split to load, or None to hold out `val_fraction` of the training split.

    The hold-out is used when `val_split` is null, and when the data has no such split (e.g. one
    HH-RLHF file, which is all `train`): that is said once, naming the split that was missing.
    """
    if val_split is not None:
        available = source.splits()
        if val_split in available:
            return val_split
        log.warning(
            "the data has no '%s' split (it has: %s); holding out data.val_fraction=%s of '%s' for validation",
            val_split,
            ", ".join(available),
            val_fraction,
            train_split,
        )
    if not 0 < val_fraction < 1:
        raise ConfigError(f"a held-out validation set needs data.val_fraction in (0, 1); got {val_fraction}")
    return None


def load_train_val(
    source, train_split: str, val_split: str | None, val_fraction: float, seed: int
) -> tuple[list, list]:
    """Records of the training split and of a validation split, or a hold-out of `val_fraction` drawn with
    `seed` (the data seed: the same validation set whatever the run's seed)."""
    val_split = resolve_val_split(source, train_split, val_split, val_fraction)
    return _load_records(source, train_split, val_split, val_fraction, seed)


def _load_records(source, train_split: str, val_split: str | None, val_fraction: float, seed: int):
    train = read_records(source, train_split)
    if val_split is not None:
        val = read_records(source, val_split)
        _require_records(train, f"the '{train_split}' split has no records")
        _require_records(val, f"the '{val_split}' validation split has no records")
        return train, val
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    held_out = set(order[: max(1, int(len(train) * val_fraction))])
    kept = [r for i, r in enumerate(train) if i not in held_out], [r for i, r in enumerate(train) if i in held_out]
    _require_records(
        kept[0],
        f"the '{train_split}' split has {len(train)} record(s): holding out data.val_fraction={val_fraction} of them "
        "(at least one) for validation leaves none for training; add records, or name a validation split "
        "(data.val_split)",
    )
    return kept


def train_loader(
    dataset, batch_size: int, collate_fn, seed: int, num_workers: int, rank: int, world_size: int
) -> StatefulDataLoader:
    """This rank's share of a seeded shuffle (`data.sharding`), resumable mid-epoch."""
    sampler = ShardedShuffle(len(dataset), seed, rank, world_size)
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=len(sampler) >= batch_size,
        collate_fn=collate_fn,
        num_workers=num_workers,
    )


def eval_loader(dataset, batch_size: int, collate_fn, num_workers: int, rank: int, world_size: int) -> DataLoader:
    """In order; under data parallelism each rank reads its shard."""
    sampler = evaluation_shard(dataset, rank, world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, num_workers=num_workers)


def data_parallel_place(datamodule: L.LightningDataModule) -> tuple[int, int]:
    """(rank, world size) of the trainer running this datamodule; (0, 1) before a trainer is attached."""
    if datamodule.trainer is None:
        return 0, 1
    return datamodule.trainer.global_rank, datamodule.trainer.world_size


def _require_records(records: list, problem: str) -> None:
    if not records:
        raise DataError(problem)


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
    """What every datamodule shares: a source, its train/validation split, the token cache and the loaders.

    Subclasses say which text columns a record gives (`columns`), how they are tokenized (`encode`),
    and how table rows become items (`rows`) and items batches (`collate`).
    """

    batch_type: type
    kind: str  # names the cached tables
    features: datasets.Features  # their text columns

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
        data_seed: int,
        num_workers: int,
        cache_dir: str,
        num_proc: int,
        gold_reward: GoldReward | None = None,
        **anchors,
    ):
        super().__init__()
        unknown = sorted(set(anchors) - ANCHORS)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments: {', '.join(unknown)}")
        for key, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size), ("num_proc", num_proc)):
            if value < 1:
                raise ConfigError(f"data.{key} must be a positive integer, got {value}")
        self.source, self.tokenizer, self.gold_reward = source, tokenizer, gold_reward
        self.batch_size, self.val_batch_size, self.num_workers, self.seed = (
            batch_size,
            val_batch_size,
            num_workers,
            seed,
        )
        self.cache_dir, self.num_proc = cache_dir, num_proc
        # `seed` shuffles the training order; `data_seed` draws the data itself (the held-out validation set),
        # so runs at different seeds validate on the same examples.
        self.data_seed = data_seed
        self.splits = (train_split, val_split, val_fraction)
        self.train_items = None
        self.val_items = None
        self.suspect_rows: dict[str, int] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_items is not None:
            return
        train_split, val_split, val_fraction = self.splits
        val_split = resolve_val_split(self.source, train_split, val_split, val_fraction)
        # The hold-out depends on the data seed and fraction; a real validation split does not.
        split_key = (train_split, val_split) if val_split is not None else (train_split, val_fraction, self.data_seed)
        paths = {split: self.table_path(split, split_key) for split in TRAIN_VAL}
        missing = {split: path for split, path in paths.items() if not is_saved(path)}
        if missing:  # a second run with the same data, tokenizer and lengths reads no records at all

            def load_columns() -> dict[str, dict[str, list]]:
                with fresh_datasets_cache(self.source, self.cache_dir):
                    train, val = _load_records(self.source, train_split, val_split, val_fraction, self.data_seed)
                return {"train": self.columns(train), "validation": self.columns(val)}

            description = f"tokenizing {self.kind}"
            try:
                build_tables(missing, load_columns, self.features, self.encoder(), self.num_proc, description)
            except OSError as error:
                reason = error.strerror or str(error)
                raise OutputError(
                    f"cannot write the token cache under {self.cache_dir}: {reason}; free space, or move it with "
                    "paths.cache_dir=..."
                ) from error
        self.train_items = self.rows(load_table(paths["train"]), first_id=0)
        self.val_items = self.rows(load_table(paths["validation"]), first_id=self.num_ids(self.train_items))
        for split, items in (("train", self.train_items), ("validation", self.val_items)):
            self.report(items, split)
        self.suspect_rows = suspect_row_counts(self.train_items.table, self.val_items.table)

    def table_path(self, split: str, split_key: tuple):
        """Where the tokenized table of one split is cached: its fingerprint names it."""
        fingerprint = table_fingerprint(
            self.kind, repr((split, split_key)), self.source, self.tokenizer, self.lengths()
        )
        return table_path(self.cache_dir, self.kind, fingerprint)

    def lengths(self) -> dict:
        """The length limits the token ids depend on (part of the cache key)."""
        raise NotImplementedError

    def columns(self, records: list) -> dict[str, list]:
        raise NotImplementedError

    def encoder(self) -> Callable[[dict], dict]:
        """The batched `datasets.map` function; a partial of a module function, so worker processes
        receive the tokenizer and the limits, not this datamodule (and the trainer it points to)."""
        raise NotImplementedError

    def rows(self, table, first_id: int):
        raise NotImplementedError

    def report(self, items, split: str) -> None:
        """Say once per split how much was cut to fit the length limits."""

    def num_ids(self, items) -> int:
        return len(items)

    def collate(self, items: list):
        raise NotImplementedError

    def train_dataloader(self):
        place = data_parallel_place(self)
        return train_loader(self.train_items, self.batch_size, self.collate, self.seed, self.num_workers, *place)

    def val_dataloader(self):
        place = data_parallel_place(self)
        return eval_loader(self.val_items, self.val_batch_size, self.collate, self.num_workers, *place)


class SFTDataModule(RecordDataModule):
    """Prompt + demonstration pairs; the loss covers the response tokens only."""

    batch_type = SFTBatch
    kind = "sft"
    features = COMPLETIONS

    def __init__(self, source, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int, **kwargs):
        super().__init__(source, tokenizer, **kwargs)
        check_lengths(max_length, max_prompt_length)
        self.max_length, self.max_prompt_length = max_length, max_prompt_length

    def lengths(self) -> dict:
        return {"max_length": self.max_length, "max_prompt_length": self.max_prompt_length}

    def columns(self, records: list) -> dict[str, list]:
        pairs = [as_prompt_response(r) for r in records]
        return {"prompt": [prompt for prompt, _ in pairs], "responses": [[response] for _, response in pairs]}

    def encoder(self) -> Callable[[dict], dict]:
        return functools.partial(
            encode_completions,
            tokenizer=self.tokenizer,
            max_length=self.max_length,
            max_prompt_length=self.max_prompt_length,
        )

    def rows(self, table, first_id: int) -> SFTRows:
        return SFTRows(table)

    def report(self, items: SFTRows, split: str) -> None:
        report_truncation(items.truncated_count(), len(items), f"{split} demonstrations", self.max_length)

    def collate(self, items: list[SFTItem]) -> SFTBatch:
        return collate_sft(items, self.tokenizer.pad_token_id)

    def train_dataloader(self) -> StatefulDataLoader:
        """The shuffled order of `train_loader`, drawn in accumulation windows of the trainer's
        `accumulate_grad_batches` batches; each batch carries its window's response-token total."""
        accumulate, limit = 1, None
        if self.trainer is not None:
            accumulate, limit = self.trainer.accumulate_grad_batches, self.trainer.limit_train_batches
        sampler = ShardedShuffle(len(self.train_items), self.seed, *data_parallel_place(self))
        windows = AccumulationWindows(
            sampler,
            self.batch_size,
            drop_last=len(sampler) >= self.batch_size,
            token_counts=response_token_counts(self.train_items),
            accumulate=accumulate,
            limit_batches=limit,
        )
        return StatefulDataLoader(
            WindowedRows(self.train_items),
            batch_sampler=windows,
            collate_fn=functools.partial(collate_sft_window, pad_id=self.tokenizer.pad_token_id),
            num_workers=self.num_workers,
        )


class PreferenceDataModule(RecordDataModule):
    """Chosen/rejected pairs or K-wise rankings, for reward models and DPO.

    Every completion gets a dataset-wide sequence id (train first, then validation),
    the key of DPO's cached reference log-probs.
    """

    batch_type = PreferenceBatch
    kind = "preferences"
    features = PREFERENCES

    def __init__(self, source, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int, **kwargs):
        super().__init__(source, tokenizer, **kwargs)
        check_lengths(max_length, max_prompt_length)
        self.max_length, self.max_prompt_length = max_length, max_prompt_length

    def lengths(self) -> dict:
        return {"max_length": self.max_length, "max_prompt_length": self.max_prompt_length}

    def num_ids(self, items) -> int:
        """Completions, not records: each completion has its own id."""
        if isinstance(items, PreferenceRows):
            return items.num_ids
        return sum(len(item.examples) for item in items)

    def total_ids(self) -> int:
        """Sequence ids of both splits: the size of a per-completion cache."""
        return self.num_ids(self.train_items) + self.num_ids(self.val_items)

    def columns(self, records: list) -> dict[str, list]:
        groups = [as_ranked_group(r) for r in records]
        return {
            "prompt": [r.prompt for r in records],
            "responses": [list(responses) for responses, _, _ in groups],
            "pairs": [[list(pair) for pair in pairs] for _, pairs, _ in groups],
            "margins": [list(margins) for _, _, margins in groups],
        }

    def encoder(self) -> Callable[[dict], dict]:
        return functools.partial(
            encode_completions,
            tokenizer=self.tokenizer,
            max_length=self.max_length,
            max_prompt_length=self.max_prompt_length,
        )

    def rows(self, table, first_id: int) -> PreferenceRows:
        return PreferenceRows(table, first_id)

    def report(self, items: PreferenceRows, split: str) -> None:
        report_truncation(items.truncated_count(), items.num_ids, f"{split} preference completions", self.max_length)

    def collate(self, items: list[PreferenceItem]) -> PreferenceBatch:
        return collate_preferences(items, self.tokenizer.pad_token_id)

    def all_dataloaders(self) -> list[DataLoader]:
        """Unshuffled passes over every split (to precompute reference log-probs once); every rank reads
        all of it, since its shard of the training order changes each epoch."""
        return [
            eval_loader(items, self.val_batch_size, self.collate, self.num_workers, rank=0, world_size=1)
            for items in (self.train_items, self.val_items)
        ]


class PromptDataModule(RecordDataModule):
    """Prompts for PPO rollouts, with their rows' other columns, optionally with a pretraining corpus for PPO-ptx.

    Training batches are `PPOBatch`es: prompts, plus a pretraining batch when the corpus is mixed in
    (`mix_pretraining`, which regularizer/ptx=mix sets). The corpus is sampled so that it yields exactly
    one batch per prompt batch: the prompts alone define an epoch. Validation batches are plain
    `PromptBatch`es.
    """

    batch_type = PPOBatch
    kind = "prompts"
    features = PROMPTS

    def __init__(
        self,
        source,
        tokenizer: PreTrainedTokenizerBase,
        max_prompt_length: int,
        pretrain_source,
        mix_pretraining: bool,
        pretrain_batch_size: int,
        pretrain_max_length: int,
        **kwargs,
    ):
        super().__init__(source, tokenizer, **kwargs)
        if max_prompt_length < 1:
            # ids[-0:] would keep the whole prompt: 0 must not silently mean "no limit".
            raise ConfigError(f"need max_prompt_length > 0, got {max_prompt_length}")
        self.max_prompt_length = max_prompt_length
        # Only regularizer/ptx=mix mixes the corpus in: otherwise nothing of it is read or tokenized.
        self.pretrain_source = pretrain_source if mix_pretraining else None
        self.pretrain_batch_size, self.pretrain_max_length = pretrain_batch_size, pretrain_max_length
        self.pretrain_items: SFTRows | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_items is not None:
            return
        super().setup(stage)
        if self.pretrain_source is not None:
            self.pretrain_items = SFTRows(self.pretrain_table())
            report_truncation(
                self.pretrain_items.truncated_count(),
                len(self.pretrain_items),
                "pretraining texts",
                self.pretrain_max_length,
            )

    def pretrain_table(self):
        """The corpus as prompt-less SFT rows: every token but the first is a target."""
        lengths = {"max_length": self.pretrain_max_length, "max_prompt_length": 1}
        path = table_path(
            self.cache_dir,
            "pretrain",
            table_fingerprint("pretrain", "train", self.pretrain_source, self.tokenizer, lengths),
        )
        if not is_saved(path):

            def load_columns() -> dict[str, dict[str, list]]:
                lines = self.pretrain_source.load("train")
                _require_records(lines, "the pretraining corpus has no records")
                return {"train": {"prompt": [""] * len(lines), "responses": [[r.response] for r in lines]}}

            encode = functools.partial(
                encode_completions, tokenizer=self.tokenizer, max_length=self.pretrain_max_length, max_prompt_length=1
            )
            build_tables({"train": path}, load_columns, COMPLETIONS, encode, self.num_proc, "tokenizing the corpus")
        return load_table(path)

    def lengths(self) -> dict:
        return {"max_prompt_length": self.max_prompt_length}

    def columns(self, records: list) -> dict[str, list]:
        return {"prompt": [r.prompt for r in records], "columns": [jsonable_columns(r.columns) for r in records]}

    def column_names(self) -> set[str]:
        """The columns the prompts carry besides the prompt (what reward functions receive)."""
        self.setup()
        return self.train_items.column_names() | self.val_items.column_names()

    def encoder(self) -> Callable[[dict], dict]:
        return functools.partial(
            encode_prompt_column, tokenizer=self.tokenizer, max_prompt_length=self.max_prompt_length
        )

    def rows(self, table, first_id: int) -> PromptRows:
        return PromptRows(table)

    def report(self, items: PromptRows, split: str) -> None:
        report_truncation(items.truncated_count(), len(items), f"{split} prompts", self.max_prompt_length)
        empty = items.empty_count()
        if empty:
            raise DataError(f"{empty} {split} prompts tokenize to nothing; generation needs at least one prompt token")

    def collate(self, items: list[PromptItem]) -> PromptBatch:
        return collate_prompts(items, self.tokenizer.pad_token_id)

    def train_dataloader(self):
        prompts = super().train_dataloader()
        loaders = {"prompts": prompts}
        if self.pretrain_items is not None:
            sampler = ShardedShuffle(
                len(self.pretrain_items),
                self.seed + 1,
                *data_parallel_place(self),
                num_samples=len(prompts) * self.pretrain_batch_size,
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
