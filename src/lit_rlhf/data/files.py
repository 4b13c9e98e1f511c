"""Finding and reading a data path: a local file or folder, or a Hub dataset, read into rows that know their line.

Everything is read through `datasets.load_dataset`; each row is then validated
in one pass. `datasets` does not say which line of a file is bad, so local
JSON files are also scanned for the line number of every row (a cheap byte
scan). Lines are parsed as JSON here only when `datasets` fails: to name the
bad line, or to recover valid rows its reader cannot handle. Every file source
(`preferences`, `prompts`, `demonstrations`, `pretraining`) reads through here.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import os
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import datasets

from lit_rlhf.errors import DataError

logger = logging.getLogger("lit_rlhf")

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_DATASETS_JSON_LOGGER = "datasets.packaged_modules.json.json"
SAVED = "saved"  # the "builder" of a folder written by save_to_disk

Record = TypeVar("Record")


# ----------------------------------------------------------------------------- rows -> records


def validate_rows(rows: SplitRows, parse: Callable[[dict], Record], skip_invalid: bool) -> list[Record]:
    """Parse every row; the first invalid one raises, or with `skip_invalid` all are counted and warned about once."""
    records, skipped, first_skipped = [], 0, None
    for index, row in enumerate(rows.rows):
        try:
            records.append(parse(row))
        except DataError as error:
            if not skip_invalid:
                raise DataError(f"{rows.where(index)}: {error}") from None
            skipped += 1
            if first_skipped is None:
                first_skipped = (rows.where(index), error)
    if skipped:
        place, reason = first_skipped
        first = place.line_or_record if len(rows.files) == 1 else str(place)
        logger.warning(
            f"skipped {skipped} of {len(rows.rows)} records in {rows.name}: they are invalid and "
            f"skip_invalid=True (first at {first}: {reason})"
        )
    if not records:
        why = f"all {skipped} records are invalid (first at {place}: {reason})" if skipped else "the data is empty"
        raise DataError(f"no valid records in {rows.name}: {why}")
    return records


# ----------------------------------------------------------------------------- where the data is


@dataclass(frozen=True)
class LocalData:
    """Data on disk: the path given, the `datasets` builder that reads it, and its files per split."""

    path: str
    builder: str
    files: dict[str, list[str]]


def locate(path: str) -> LocalData | str:
    """LocalData for an existing file or folder; the name itself for a Hub dataset id; DataError otherwise."""
    local = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(local):
        return LocalData(local, _builder_for(local), {"train": [local]})
    if os.path.isdir(local) and is_saved_dataset(local):
        return LocalData(local, SAVED, {split: [local] for split in _saved_splits(local)})
    if os.path.isdir(local):
        return _folder(local)
    if _HUB_ID.match(path) and not path.startswith("."):
        return path
    raise DataError(f"data file not found: {local}")


def is_saved_dataset(folder: str) -> bool:
    """Whether `folder` was written by `datasets`' `save_to_disk` (a Dataset or a DatasetDict)."""
    return any(os.path.exists(os.path.join(folder, name)) for name in ("dataset_dict.json", "state.json"))


def _load_saved(folder: str):
    try:
        return datasets.load_from_disk(folder)
    except Exception as error:  # a damaged or foreign folder: say what datasets said
        raise DataError(f"cannot read the saved dataset in {folder}: {type(error).__name__}: {error}") from error


def _saved_splits(folder: str) -> list[str]:
    """A saved DatasetDict's splits; a saved Dataset is one `train` split."""
    saved = _load_saved(folder)
    return list(saved) if isinstance(saved, datasets.DatasetDict) else ["train"]


def _builder_for(file: str) -> str:
    stem, extension = os.path.splitext(file)
    if extension in _OPENERS:
        stem, extension = os.path.splitext(stem)
    if extension not in _BUILDERS:
        supported = ", ".join(_BUILDERS)
        raise DataError(
            f"{file}: unsupported file type '{extension}' (supported: {supported}, "
            f"optionally compressed as {', '.join(_OPENERS)})"
        )
    return _BUILDERS[extension]


def _folder(folder: str) -> LocalData:
    """Let `datasets` infer the splits from file names, exactly as `load_dataset(folder)` would."""
    try:
        builder = datasets.load_dataset_builder(folder)
    except Exception as error:  # datasets raises many kinds; all mean "nothing readable here"
        raise DataError(f"cannot read data folder {folder}: {error}") from error
    files = {str(split): list(split_files) for split, split_files in builder.config.data_files.items()}
    return LocalData(folder, builder.name, files)


def available_splits(path: str) -> list[str]:
    data = locate(path)
    if isinstance(data, LocalData):
        return list(data.files)
    try:
        return datasets.get_dataset_split_names(data)
    except Exception as error:
        raise DataError(_hub_failure(data, error)) from error


def _hub_failure(name: str, error: Exception) -> str:
    local = os.path.abspath(os.path.expanduser(name))
    return (
        f"could not load '{name}' from the Hugging Face Hub ({type(error).__name__}: {error}); "
        f"no local file or folder {local} exists either, and offline runs need one as data.path"
    )


def _missing_split(split: str, path: str, available: list[str]) -> DataError:
    return DataError(f"split '{split}' not found in {path}; available: {', '.join(available)}")


# ----------------------------------------------------------------------------- reading rows with their lines


@dataclass(frozen=True)
class Place:
    """Where a row came from: a file and either its 1-based line or its 1-based record number."""

    file: str
    line: int | None
    record: int

    @property
    def line_or_record(self) -> str:
        return f"line {self.line}" if self.line is not None else f"record {self.record}"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else f"{self.file}: record {self.record}"


@dataclass(frozen=True)
class FileRows:
    """One file's share of a split: its first row index and, for JSON lines, the line of each row."""

    file: str
    first_row: int
    lines: list[int] | None


@dataclass(frozen=True)
class SplitRows:
    """The rows of one split, as dicts (a list, or a memory-mapped dataset), and the files they came from."""

    name: str
    rows: Sequence[dict]
    files: list[FileRows]

    def where(self, index: int) -> Place:
        part = self.files[bisect_right([f.first_row for f in self.files], index) - 1]
        offset = index - part.first_row
        return Place(part.file, part.lines[offset] if part.lines is not None else None, offset + 1)


def read_split(path: str, split: str, exact_json: bool = False) -> SplitRows:
    """All rows of one split. Raises DataError for a missing split, unreadable data or a malformed JSON line.

    `exact_json` parses JSON files line by line instead of through Arrow, which would unify the rows'
    types (an int column with one float becomes all floats; nested dicts gain each other's keys as None):
    every value then arrives exactly as the file holds it.
    """
    data = locate(path)
    if not isinstance(data, LocalData):
        return _read_hub(data, split)
    if split not in data.files:
        raise _missing_split(split, data.path, list(data.files))
    files = data.files[split]
    name = files[0] if len(files) == 1 else f"{data.path} (split '{split}')"
    if data.builder == SAVED:
        saved = _load_saved(data.path)
        rows = saved[split] if isinstance(saved, datasets.DatasetDict) else saved
        return SplitRows(f"{data.path} (split '{split}')", rows, [FileRows(data.path, 0, None)])
    if data.builder != "json":
        return SplitRows(name, _load(data.builder, files, split, name), [FileRows(name, 0, None)])
    lines = {file: _row_lines(file) for file in files}
    files = [file for file in files if lines[file] != []]  # datasets' JSON reader trips over an empty file
    if not files:
        raise DataError(f"no records in {name}: the data is empty")
    rows = [row for file in files for row in _parse_json_file(file)] if exact_json else _load_json(files, split)
    return SplitRows(name, rows, _file_rows(files, lines, len(rows), name))


def _read_hub(name: str, split: str) -> SplitRows:
    try:
        dataset_splits = datasets.load_dataset(name)
    except Exception as error:
        raise DataError(_hub_failure(name, error)) from error
    if split not in dataset_splits:
        raise _missing_split(split, name, list(dataset_splits))
    return SplitRows(name, dataset_splits[split], [FileRows(name, 0, None)])


def _load(builder: str, files: list[str], split: str, name: str) -> Sequence[dict]:
    try:
        return datasets.load_dataset(builder, data_files={split: files}, split=split)
    except Exception as error:  # datasets wraps reader errors in several types; the cause is what matters
        cause = error.__cause__ or error
        raise DataError(f"could not read {name}: {type(cause).__name__}: {cause}") from error


def _load_json(files: list[str], split: str) -> Sequence[dict]:
    """The rows as a memory-mapped `datasets.Dataset` (iterated, never copied into a list), or a parsed list."""
    try:
        with _quiet(_DATASETS_JSON_LOGGER):
            return datasets.load_dataset("json", data_files={split: files}, split=split)
    except Exception:
        # datasets never says which line is bad, and it also fails on some valid
        # files (a field whose type changes between rows, with blank lines in
        # between). Parsing the lines ourselves names the bad line or recovers the rows.
        return [row for file in files for row in _parse_json_file(file)]


@contextmanager
def _quiet(logger_name: str):
    """Mute a library logger for a moment: its error message is replaced by a clearer one (or not needed)."""
    muted = logging.getLogger(logger_name)
    level = muted.level
    muted.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        muted.setLevel(level)


def _file_rows(files: list[str], lines: dict[str, list[int] | None], row_count: int, name: str) -> list[FileRows]:
    """Row offsets per file; record numbers instead of lines unless every file's rows match what was loaded."""
    counts = [len(lines[file]) if lines[file] is not None else None for file in files]
    if None in counts or sum(counts) != row_count:
        return [FileRows(name, 0, None)]
    parts, first_row = [], 0
    for file, count in zip(files, counts):
        parts.append(FileRows(file, first_row, lines[file]))
        first_row += count
    return parts


def _open(file: str):
    opener = _OPENERS.get(os.path.splitext(file)[1], open)
    try:
        return opener(file, "rb")
    except OSError as error:
        raise DataError(f"cannot read {file}: {error.strerror or error}") from error


def _is_json_array(file: str) -> bool:
    # datasets reads a file that starts with '[' as one JSON array, whose records are not lines.
    with _open(file) as stream:
        return stream.read(4).removeprefix(b"\xef\xbb\xbf").startswith(b"[")


def _row_lines(file: str) -> list[int] | None:
    """1-based line number of each row of a JSON-lines file (blank lines hold no row); None for a JSON array."""
    if _is_json_array(file):
        return None
    with _open(file) as stream:
        try:
            return [number for number, line in enumerate(stream, 1) if not line.isspace()]
        except (OSError, EOFError) as error:  # e.g. a truncated .gz
            raise DataError(f"cannot read {file}: {error}") from error


def _parse_json_file(file: str) -> list[dict]:
    """Every record of a JSON-lines file or JSON array; DataError naming the place of the first bad one."""
    with _open(file) as stream:
        if _is_json_array(file):
            records = _parse_json(stream.read(), file, 1)
            places = [f"{file}: record {number}" for number in range(1, len(records) + 1)]
        else:
            numbered = [(number, line) for number, line in enumerate(stream, 1) if not line.isspace()]
            # Strip the newline: a line cut short would otherwise fail on the *next* line number.
            records = [_parse_json(line.strip(), file, number) for number, line in numbered]
            places = [f"{file}:{number}" for number, _ in numbered]
    for place, record in zip(places, records):
        if not isinstance(record, dict):
            raise DataError(f"{place}: record is not a JSON object (got {type(record).__name__})")
    return records


def _parse_json(text: bytes, file: str, first_line: int) -> Any:
    try:
        return json.loads(text)  # bytes: json detects UTF-8 with or without BOM
    except ValueError as error:  # includes UnicodeDecodeError
        line = first_line + getattr(error, "lineno", 1) - 1
        reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        raise DataError(f"{file}:{line}: not valid JSON ({reason})") from None
