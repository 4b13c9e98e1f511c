"""Keeping the trainer's process as it was around an engine that reseeds RNGs and patches torch.

vLLM's worker calls `torch.manual_seed`, `random.seed` and `numpy.random.seed` when it starts, and its
CPU worker replaces `torch.set_num_threads` with a function that only warns. Exact resume needs the
trainer's random streams untouched, and the trainer keeps its own thread count.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


@contextlib.contextmanager
def preserved_process_state():
    """Restore, on exit, every RNG state (torch CPU and CUDA, Python, NumPy), `torch.set_num_threads`
    itself and the torch thread count."""
    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(threads)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@contextlib.contextmanager
def seeded_torch_rng(seed: int | None, device: torch.device):
    """Draw from `seed` alone and leave the global torch RNG as it was; with None, draw from the global RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
