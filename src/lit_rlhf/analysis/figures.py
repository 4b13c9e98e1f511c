"""Where every figure goes through: matplotlib without a display, and PNGs written whole or not at all."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt

from lit_rlhf.outputs import atomic_write_bytes


def save_figure(figure, path: Path) -> None:
    """Render `figure` as a PNG in memory, write it to `path` atomically (`lit_rlhf.outputs`), and close it."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
