"""What every datamodule shares: a source's train/validation split, the token cache, and the loaders.

A datamodule takes a *source* (`splits()` and `load(split)`: the embedded task, JSONL,
HH-RLHF, ...) and tokenizes it once into memory-mapped Arrow tables cached under
`data.cache_dir` (`lit_rlhf.data.tokenized`); a later run with the same data,
tokenizer and lengths reads the tables back without loading a record. Keys such
as `path` only anchor `data.path=` on the command line: the source reads them
through interpolation (`ANCHORS`). Training loaders are
torchdata `StatefulDataLoader`s, so a resumed run continues from the same
position in the same shuffled order; under data parallelism each rank reads
its share of that order (`lit_rlhf.data.sharding`).

One datamodule per kind of data: `demonstrations.SFTDataModule`, `preferences.PreferenceDataModule`,
`prompts.PromptDataModule` (with `pretraining`'s corpus for PPO-ptx).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from lit_rlhf.data.record_checks import fresh_datasets_cache, read_records, suspect_row_counts
from lit_rlhf.data.sharding import ShardedShuffle, evaluation_shard
from lit_rlhf.data.tokenized import build_tables, is_saved, load_table, table_fingerprint, table_path
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
        require_records(train, f"the '{train_split}' split has no records")
        require_records(val, f"the '{val_split}' validation split has no records")
        return train, val
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    held_out = set(order[: max(1, int(len(train) * val_fraction))])
    kept = [r for i, r in enumerate(train) if i not in held_out], [r for i, r in enumerate(train) if i in held_out]
    require_records(
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


def require_records(records: list, problem: str) -> None:
    if not records:
        raise DataError(problem)


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
