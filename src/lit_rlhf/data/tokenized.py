"""Tokenized splits as memory-mapped Arrow tables, cached on disk under a fingerprint.

A split is tokenized once with `datasets.map` (batched, `data.num_proc` processes, with a progress bar)
and saved under `<data.cache_dir>/<kind>-<fingerprint>`. The fingerprint covers the data (the source's
settings and, for local files, their names and a hash of their bytes: a file rewritten with the same size
and time still tokenizes afresh), the tokenizer, the length limits and this package's data code, so any
change tokenizes afresh; a second run memory-maps the
saved table and reads no records at all. Token ids then live in Arrow buffers on disk, not in Python
lists: HH-RLHF-size data sets up in a fraction of the memory.

The row datasets at the bottom turn table rows back into the items the collators batch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from lit_rlhf.data.collate import PreferenceItem, PromptItem, SFTItem
from lit_rlhf.data.tokenization import EncodedExample, check_lengths, join_prompt_response

log = logging.getLogger("lit_rlhf")

# Bump when the layout of the saved tables changes (the data code's own hash covers most changes).
TABLE_FORMAT = 1


# ----------------------------------------------------------------------------- fingerprints


def _package_code_hash(module_name: str) -> str:
    """Hash of the source files of the package that defines `module_name` (so edited code never reads stale data)."""
    package = Path(__import__(module_name, fromlist=["_"]).__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def content_hash(file: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (about a second per GB)."""
    digest = hashlib.sha256()
    with open(file, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _local_files(path: str) -> list[tuple[str, str]]:
    """(name, content hash) of a local file or of every file under a local folder; [] for anything else.

    The bytes, not the size and modification time: a rewrite that keeps both must not serve stale rows.
    """
    root = Path(os.path.expanduser(path))
    if root.is_file():
        return [(str(root.resolve()), content_hash(root))]
    if root.is_dir():
        return [(str(file.resolve()), content_hash(file)) for file in sorted(root.rglob("*")) if file.is_file()]
    return []


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """What decides the ids: the fast tokenizer's full definition, its special tokens and chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else datasets.fingerprint.Hasher.hash(tokenizer)
    extras = (tokenizer.eos_token_id, tokenizer.pad_token_id, getattr(tokenizer, "chat_template", None))
    return hashlib.sha256((definition + repr(extras)).encode()).hexdigest()


def source_fingerprint(source) -> str:
    """The source's settings, its local files' stats and its package's code (a tokenizer it holds by its ids)."""
    settings = {
        key: tokenizer_fingerprint(value) if isinstance(value, PreTrainedTokenizerBase) else value
        for key, value in sorted(vars(source).items())
    }
    path = settings.get("path")
    files = _local_files(path) if isinstance(path, str) else []
    code = _package_code_hash(type(source).__module__)
    return datasets.fingerprint.Hasher.hash((type(source).__qualname__, repr(settings), files, code))


def table_fingerprint(kind: str, split: str, source, tokenizer, settings: dict) -> str:
    parts = (TABLE_FORMAT, kind, split, source_fingerprint(source), tokenizer_fingerprint(tokenizer))
    return datasets.fingerprint.Hasher.hash((*parts, sorted(settings.items()), _package_code_hash(__name__)))


# ----------------------------------------------------------------------------- building and caching

# The text columns each kind of table starts from (token columns are added by its encoder).
COMPLETIONS = datasets.Features({"prompt": datasets.Value("string"), "responses": [datasets.Value("string")]})
PREFERENCES = datasets.Features(
    {**COMPLETIONS, "pairs": [[datasets.Value("int32")]], "margins": [datasets.Value("float64")]}
)
# A prompt's other columns are kept as JSON text, so any value (nested, mixed types) comes back unchanged.
PROMPTS = datasets.Features({"prompt": datasets.Value("string"), "columns": datasets.Value("string")})

WRITE_ROWS = 10_000  # rows per Arrow record batch while the texts are written


def table_path(cache_dir: str, kind: str, fingerprint: str) -> Path:
    return Path(os.path.expanduser(cache_dir)) / f"{kind}-{fingerprint}"


def is_saved(path: Path) -> bool:
    return (path / "dataset_info.json").exists()


def load_table(path: Path) -> datasets.Dataset:
    """A saved table, memory-mapped: its rows stay on disk until read."""
    return datasets.load_from_disk(str(path))


def write_texts(columns: dict[str, list], features: datasets.Features, path: Path) -> datasets.Dataset:
    """Text columns written to an Arrow file batch by batch (no second in-memory copy), memory-mapped back."""
    total = len(next(iter(columns.values())))
    with ArrowWriter(features=features, path=str(path)) as writer:
        for start in range(0, total, WRITE_ROWS):
            writer.write_batch({name: values[start : start + WRITE_ROWS] for name, values in columns.items()})
        writer.finalize()
    return datasets.Dataset.from_file(str(path))


def build_tables(
    targets: dict[str, Path],
    load_columns: Callable[[], dict[str, dict[str, list]]],
    features: datasets.Features,
    encode: Callable[[dict], dict],
    num_proc: int,
    desc: str,
) -> None:
    """Tokenize the splits in `targets` (split -> table path) and save each under its path atomically.

    Args:
        load_columns: reads the records and returns each split's text columns. They are written to disk and
            dropped before tokenizing starts, so the records and the token ids are never in memory together.
        encode: a batched `datasets.map` function from text columns to token columns.
    """
    parent = next(iter(targets.values())).parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".building-") as scratch:
        columns = load_columns()
        texts = {
            split: write_texts(columns[split], features, Path(scratch) / f"{split}-texts.arrow") for split in targets
        }
        del columns
        for split, final in targets.items():
            table = texts[split].map(
                encode,
                batched=True,
                num_proc=num_proc if num_proc > 1 and len(texts[split]) >= 2 * num_proc else None,
                cache_file_name=str(Path(scratch) / f"{split}-tokens.arrow"),
                new_fingerprint=final.name,
                desc=f"{desc} ({split})",
            )
            staged = Path(scratch) / f"{split}-table"
            table.save_to_disk(str(staged))
            del table
            # A rename, so a killed run never leaves a half-written table under the final name.
            try:
                os.replace(staged, final)
            except OSError:  # another process saved the same table first
                shutil.rmtree(staged, ignore_errors=True)


# ----------------------------------------------------------------------------- batched encoders


def encode_completions(
    batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int
) -> dict[str, list]:
    """Columns prompt, responses -> ids, prompt_lengths, truncated (one entry per completion of a row).

    Ids are those of `encode_prompt_responses`, but a row's prompt is tokenized once for all its
    completions (chosen and rejected, or K ranked ones), not once per completion.
    """
    check_lengths(max_length, max_prompt_length)
    prompt_ids = tokenizer(list(batch["prompt"]), add_special_tokens=True)["input_ids"]
    flat_ids = tokenizer(list(itertools.chain.from_iterable(batch["responses"])), add_special_tokens=False)["input_ids"]
    columns = {"ids": [], "prompt_lengths": [], "truncated": []}
    start = 0
    for prompt, responses in zip(prompt_ids, batch["responses"]):
        row = [
            join_prompt_response(prompt, response, tokenizer.eos_token_id, max_length, max_prompt_length)
            for response in flat_ids[start : start + len(responses)]
        ]
        start += len(responses)
        columns["ids"].append([example.ids for example in row])
        columns["prompt_lengths"].append([example.prompt_length for example in row])
        columns["truncated"].append([example.truncated for example in row])
    return columns


def encode_prompt_column(batch: dict, tokenizer: PreTrainedTokenizerBase, max_prompt_length: int) -> dict[str, list]:
    """Column prompt -> ids (the end of over-long prompts, as `encode_prompts` keeps), truncated."""
    full = tokenizer(list(batch["prompt"]), add_special_tokens=True)["input_ids"]
    return {
        "ids": [row[-max_prompt_length:] for row in full],
        "truncated": [len(row) > max_prompt_length for row in full],
    }


# ----------------------------------------------------------------------------- rows -> items


class _Rows(Dataset):
    """A map-style dataset over a tokenized table; slicing gives a list of items."""

    def __init__(self, table: datasets.Dataset):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.item(self.table[i], i) for i in range(*index.indices(len(self)))]
        return self.item(self.table[int(index)], int(index))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def item(self, row: dict, index: int):
        raise NotImplementedError

    def truncated_count(self) -> int:
        """Completions cut to fit the length limits (Arrow arithmetic: no row is read into Python)."""
        return int(pc.sum(pc.list_flatten(self.table.data.column("truncated"))).as_py() or 0)


class SFTRows(_Rows):
    """Rows prompt, ids, prompt_lengths, truncated (one completion each) as `SFTItem`s."""

    def item(self, row: dict, index: int) -> SFTItem:
        return SFTItem(EncodedExample(row["ids"][0], row["prompt_lengths"][0], row["truncated"][0]), row["prompt"])


class PreferenceRows(_Rows):
    """Rows prompt, responses, pairs, margins, ids, ... as `PreferenceItem`s with dataset-wide sequence ids.

    Args:
        first_id: the sequence id of the split's first completion (train first, then validation).
    """

    def __init__(self, table: datasets.Dataset, first_id: int):
        super().__init__(table)
        counts = pc.list_value_length(table.data.column("prompt_lengths")).to_numpy().astype(np.int64)
        self.first_ids = first_id + np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(table) else counts
        self.num_ids = int(counts.sum())

    def item(self, row: dict, index: int) -> PreferenceItem:
        examples = tuple(
            EncodedExample(ids, length, truncated)
            for ids, length, truncated in zip(row["ids"], row["prompt_lengths"], row["truncated"])
        )
        return PreferenceItem(
            row["prompt"],
            tuple(row["responses"]),
            examples,
            tuple(tuple(pair) for pair in row["pairs"]),
            tuple(row["margins"]),
            int(self.first_ids[index]),
        )


class PromptRows(_Rows):
    """Rows prompt, ids, truncated as `PromptItem`s."""

    def item(self, row: dict, index: int) -> PromptItem:
        return PromptItem(row["ids"], row["prompt"], json.loads(row["columns"]))

    def column_names(self) -> set[str]:
        """Every column any prompt carries."""
        return {name for text in self.table.data.column("columns").to_pylist() for name in json.loads(text)}

    def truncated_count(self) -> int:
        return int(pc.sum(self.table.data.column("truncated")).as_py() or 0)

    def empty_count(self) -> int:
        """Prompts that tokenize to nothing."""
        return int(pc.sum(pc.equal(pc.list_value_length(self.table.data.column("ids")), 0)).as_py() or 0)
