"""Plain texts for PPO-ptx's pretraining mix (`regularizer/ptx=mix`): the source, its token table, its loader.

The corpus is tokenized as prompt-less demonstrations (every token but the first is a target) and
sampled so that it yields exactly one batch per prompt batch: the prompts alone define an epoch
(`prompts.PromptDataModule` combines the two loaders).
"""

from __future__ import annotations

import functools

from torchdata.stateful_dataloader import StatefulDataLoader

from lit_rlhf.data.collate import collate_sft
from lit_rlhf.data.files import available_splits, read_split, validate_rows
from lit_rlhf.data.record_datamodule import require_records
from lit_rlhf.data.records import SFTRecord
from lit_rlhf.data.sharding import ShardedShuffle
from lit_rlhf.data.tokenization import report_truncation
from lit_rlhf.data.tokenized import (
    COMPLETIONS,
    SFTRows,
    build_tables,
    encode_completions,
    is_saved,
    load_table,
    table_fingerprint,
    table_path,
)
from lit_rlhf.errors import ConfigError, DataError


class TextFileSource:
    """Plain texts (PPO-ptx's pretraining corpus) from the `text_key` column of a file or folder.

    Args:
        path: the file or folder; None raises a ConfigError when the texts are first needed.
        text_key: the column holding each text.
    """

    def __init__(self, path: str | None, text_key: str):
        self.path, self.text_key = path, text_key

    def splits(self) -> list[str]:
        return available_splits(self._path())

    def load(self, split: str) -> list[SFTRecord]:
        rows = read_split(self._path(), split)
        return validate_rows(rows, self._text, skip_invalid=False)

    def _path(self) -> str:
        if self.path is None:
            raise ConfigError(
                "regularizer/ptx=mix on your data needs its pretraining texts: data.pretrain_path=<file with a "
                f"'{self.text_key}' column>"
            )
        return self.path

    def _text(self, row: dict) -> SFTRecord:
        text = row.get(self.text_key)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"'{self.text_key}' must be a non-empty text (data.pretrain_text_key names the column)")
        return SFTRecord(prompt="", response=text)


def pretraining_rows(source, tokenizer, max_length: int, cache_dir: str, num_proc: int) -> SFTRows:
    """The corpus's `train` split as prompt-less SFT rows, tokenized once and cached like every table."""
    lengths = {"max_length": max_length, "max_prompt_length": 1}
    path = table_path(cache_dir, "pretrain", table_fingerprint("pretrain", "train", source, tokenizer, lengths))
    if not is_saved(path):

        def load_columns() -> dict[str, dict[str, list]]:
            lines = source.load("train")
            require_records(lines, "the pretraining corpus has no records")
            return {"train": {"prompt": [""] * len(lines), "responses": [[r.response] for r in lines]}}

        encode = functools.partial(encode_completions, tokenizer=tokenizer, max_length=max_length, max_prompt_length=1)
        build_tables({"train": path}, load_columns, COMPLETIONS, encode, num_proc, "tokenizing the corpus")
    rows = SFTRows(load_table(path))
    report_truncation(rows.truncated_count(), len(rows), "pretraining texts", max_length)
    return rows


def pretraining_loader(
    rows: SFTRows,
    batch_size: int,
    num_batches: int,
    seed: int,
    rank: int,
    world_size: int,
    pad_id: int,
    num_workers: int,
) -> StatefulDataLoader:
    """`num_batches` batches of this rank's share of a seeded shuffle of the corpus (one per prompt batch)."""
    sampler = ShardedShuffle(len(rows), seed, rank, world_size, num_samples=num_batches * batch_size)
    return StatefulDataLoader(
        rows,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=functools.partial(collate_sft, pad_id=pad_id),
        num_workers=num_workers,
    )
