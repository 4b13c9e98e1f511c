"""Save the trained model and tokenizer in HF format at the end of a run, atomically.

A LoRA-trained model is saved merged (plain transformers loads it) with its adapter in `adapter/`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning as L

from lit_rlhf.models.adapters import save_trained_model


def save_pretrained_atomically(model, tokenizer, dirpath: Path) -> None:
    """Write into a sibling temp folder, then swap it in: a crash never leaves a half-written export."""
    dirpath = dirpath.resolve()
    dirpath.parent.mkdir(parents=True, exist_ok=True)
    tmp = dirpath.with_name(f".{dirpath.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_trained_model(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dirpath.exists():
        old = dirpath.with_name(f".{dirpath.name}.old{os.getpid()}")
        os.replace(dirpath, old)
        os.replace(tmp, dirpath)
        shutil.rmtree(old)
    else:
        os.replace(tmp, dirpath)


class HFExport(L.Callback):
    """At the end of fit, save `pl_module.export_model()` and its tokenizer to `dirpath`."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.interrupted or not trainer.is_global_zero:
            return
        save_pretrained_atomically(pl_module.export_model(), pl_module.tokenizer, self.dirpath)
        # Printed, not logged: the path must reach the user whatever the logging config.
        print(f"exported the trained model (HF format) to {self.dirpath.resolve()}")
