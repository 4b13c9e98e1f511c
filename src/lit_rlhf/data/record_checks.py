"""Reading a source's records, and what in them would mislead training.

* `read_records`: `source.load(split)`, with text that is not UTF-8 named by file, line and byte;
* `fresh_datasets_cache`: local files read past `datasets`' own cache, which is keyed by modification time;
* `suspect_row_counts`: rows whose completions are identical, and validation rows also in training.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import datasets

from lit_rlhf.errors import DataError


def read_records(source, split: str) -> list:
    """`source.load(split)`, with text that is not UTF-8 named by file, line and byte."""
    try:
        return source.load(split)
    except UnicodeDecodeError as error:
        path = getattr(source, "path", None)
        place = first_non_utf8(path) if isinstance(path, str) else None
        if place is None:
            raise DataError(f"the '{split}' data is not UTF-8 text ({error}); save it as UTF-8") from None
        file, line, column, byte = place
        raise DataError(
            f"{file}:{line}: not UTF-8 text (byte 0x{byte:02x} at byte {column} of the line); save the file as UTF-8"
        ) from None


@contextlib.contextmanager
def fresh_datasets_cache(source, cache_dir: str) -> Iterator[None]:
    """While records are read from local files, `datasets` keeps its Arrow copy in a scratch folder, removed after.

    `datasets` keys its cache of a local file by the file's modification time, so a file rewritten within
    the same time would be read back stale. Records are read only when the token tables (keyed by the
    files' bytes) are missing, so they are read fresh then. Hub datasets keep their cache (no re-download).
    """
    path = getattr(source, "path", None)
    if not (isinstance(path, str) and os.path.exists(os.path.expanduser(path))):
        yield
        return
    parent = Path(os.path.expanduser(cache_dir))
    parent.mkdir(parents=True, exist_ok=True)
    previous = datasets.config.HF_DATASETS_CACHE
    with tempfile.TemporaryDirectory(dir=parent, prefix=".building-records-") as scratch:
        datasets.config.HF_DATASETS_CACHE = Path(scratch)
        try:
            yield
        finally:
            datasets.config.HF_DATASETS_CACHE = previous


def row_keys(table) -> list[tuple]:
    """One hashable key per row of a tokenized table: its prompt and, where the table has them, its responses."""
    columns = [table.data.column(name).to_pylist() for name in ("prompt", "responses") if name in table.column_names]
    return [tuple(tuple(value) if isinstance(value, list) else value for value in row) for row in zip(*columns)]


def suspect_row_counts(train_table, val_table) -> dict[str, int]:
    """Rows whose completions repeat one another (a pair whose chosen equals its rejected: nothing to learn),
    and validation rows that also appear in training (a validation that flatters)."""
    counts = {}
    if "responses" in train_table.column_names:
        for split, table in (("training", train_table), ("validation", val_table)):
            responses = table.data.column("responses").to_pylist()
            counts[f"{split} rows whose completions are identical"] = sum(len(set(row)) < len(row) for row in responses)
    train = set(row_keys(train_table))
    counts["validation rows also in the training split"] = sum(key in train for key in row_keys(val_table))
    return counts


# ----------------------------------------------------------------------------- where text stops being UTF-8

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_CHUNK = 1 << 20


def first_non_utf8(path: str) -> tuple[Path, int, int, int] | None:
    """(file, line, column, byte) of the first invalid UTF-8 sequence in `path` (a file, or every file under a
    folder, compressed ones read through), or None when all of it decodes."""
    root = Path(path).expanduser()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    for file in files:
        place = _first_non_utf8_in(file)
        if place is not None:
            return (file, *place)
    return None


def _first_non_utf8_in(file: Path) -> tuple[int, int, int] | None:
    opener = _OPENERS.get(file.suffix, open)
    line, carry = 1, b""
    with opener(file, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            data = carry + chunk
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as error:
                if error.reason == "unexpected end of data" and error.start >= len(data) - 3:
                    end = error.start  # a character cut by the chunk boundary: decode it with the next chunk
                else:
                    start = data.rfind(b"\n", 0, error.start) + 1
                    return line + data.count(b"\n", 0, error.start), error.start - start + 1, data[error.start]
            else:
                end = len(data)
            line += data.count(b"\n", 0, end)
            carry = data[end:]
    if carry:  # the file ends inside a character
        return line, 1, carry[0]
    return None
