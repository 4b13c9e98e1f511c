"""Save the trained model and tokenizer in HF format at the end of a run, atomically.

A LoRA-trained model is saved merged (plain transformers loads it) with its adapter in `adapter/`.
The export folder is written beside its target and swapped in; it replaces only an earlier export
(a folder holding our marker), never a folder of someone else's, and never holds a NaN or inf.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, cast

import lightning as L
import torch

from lit_rlhf.errors import NonFiniteError
from lit_rlhf.models.adapters import save_trained_model
from lit_rlhf.ops.finite import nonfinite_names
from lit_rlhf.outputs import replace_folder_atomically


def save_pretrained_atomically(model, tokenizer, dirpath: Path, setting: str = "paths.export_dir") -> Path:
    """Write into a sibling temp folder, then swap it in: a crash never leaves a half-written export.

    Args:
        setting: the override that moves the export, named if the folder is refused.
    """

    def write(folder: Path) -> None:
        save_trained_model(model, folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    return replace_folder_atomically(dirpath, write, "export", setting)


class ExportableModule(Protocol):
    """What HFExport needs of the LightningModule (the SFT, DPO, PPO and reward-model modules have both)."""

    tokenizer: Any

    def export_model(self) -> torch.nn.Module: ...


class HFExport(L.Callback):
    """At the end of fit, save `pl_module.export_model()` and its tokenizer to `dirpath`."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.interrupted or not trainer.is_global_zero:
            return
        module = cast(ExportableModule, pl_module)  # Lightning types it as a plain LightningModule
        model = module.export_model()
        broken = nonfinite_names(dict(model.state_dict()))
        if broken:
            raise NonFiniteError(
                f"refusing to export a model with non-finite weights ({', '.join(broken[:3])}); nothing was written"
            )
        path = save_pretrained_atomically(model, module.tokenizer, self.dirpath)
        # Printed, not logged: the path must reach the user whatever the logging config.
        print(f"exported the trained model (HF format) to {path}")
