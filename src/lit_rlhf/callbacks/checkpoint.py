"""Checkpoints that a killed run resumes from: written atomically, every N training batches.

Lightning's ModelCheckpoint counts `global_step`, which under manual optimisation
(PPO) counts every optimizer step of actor and critic; we count training batches
instead (one batch = one PPO iteration), and replace `last.ckpt` only once the
new file is complete. A checkpoint holding a NaN or inf (weights, optimizer moments)
is never written, and a full or read-only disk is one line with no temporary file left.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch

from lit_rlhf.errors import NonFiniteError
from lit_rlhf.ops.distributed import every_rank
from lit_rlhf.ops.finite import nonfinite_names
from lit_rlhf.outputs import claim_folder, temporary_beside

log = logging.getLogger("lit_rlhf")


def capture_rng_states() -> dict:
    """Every RNG a run draws from, as tensors and plain types (loadable with torch.load(weights_only=True))."""
    state = np.random.get_state()
    assert isinstance(state, tuple), "numpy's global RandomState is MT19937, whose legacy state is a tuple"
    kind, keys, position, has_gauss, cached_gaussian = state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
        "python": random.getstate(),
    }


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(states["python"])


class ResumableCheckpoint(L.Callback):
    """Keep `<dirpath>/last.ckpt` current: every `every_n_batches` training batches and at the end.

    The checkpoint also holds the RNG states, restored when training restarts (after
    Lightning's sanity check, which would otherwise consume random numbers).
    """

    def __init__(self, dirpath: str, every_n_batches: int):
        if every_n_batches < 1:
            raise ValueError(f"every_n_batches must be >= 1, got {every_n_batches}")
        self.dirpath = Path(dirpath)
        self.every_n_batches = every_n_batches
        self._rng_to_restore: dict | None = None
        self.saved_after: int | None = None  # training batches done when `last.ckpt` was last written

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def save(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:  # created with our marker, so a resumed run may write here again
            claim_folder(self.dirpath, "checkpoint", "callbacks.checkpoint.dirpath")
        with temporary_beside(self.last_path, "the checkpoint") as temporary:
            trainer.save_checkpoint(temporary)
            if trainer.is_global_zero:
                os.replace(temporary, self.last_path)
        trainer.strategy.barrier()
        self.saved_after = trainer.fit_loop.total_batch_idx + 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.fit_loop.total_batch_idx + 1) % self.every_n_batches == 0:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)
        if trainer.is_global_zero:
            log.info("checkpoint: %s", self.last_path)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        broken = nonfinite_names({key: checkpoint.get(key) for key in ("state_dict", "optimizer_states")})
        if not every_rank(not broken):
            raise NonFiniteError(
                f"refusing to save a checkpoint with non-finite values ({', '.join(broken[:3]) or 'on another rank'}"
                f"{', ...' if len(broken) > 3 else ''}); {self.last_path} keeps the last finite state"
            )
        checkpoint["rng_states"] = capture_rng_states()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("rng_states")

    def on_train_start(self, trainer, pl_module) -> None:
        if self._rng_to_restore is not None:
            restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
