"""Where a data file stops being UTF-8 text: the file, line and byte a DataError names."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

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
