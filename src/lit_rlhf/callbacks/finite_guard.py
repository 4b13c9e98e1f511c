"""Non-finite gradients and weights never train, and never reach a checkpoint or an export.

A finite loss can still give a NaN or inf gradient (an overflow in the backward pass), and a finite
gradient can still give non-finite weights (a step too large). Before every optimizer step all ranks
check the gradients together: in skip mode (`module.skip_nonfinite_updates=true`) the step is dropped
by setting the gradients to None, so the optimizer leaves the weights and its state (moments, step
counts) untouched; otherwise the run stops with one line. After every training batch the trained
weights are checked; weights already broken cannot be skipped, so the run stops, before the
checkpoint callback could save them.

PPO optimises manually and checks its gradients itself (`PPOModule.update`), actor and critic together.
"""

from __future__ import annotations

from typing import cast

import lightning as L

from lit_rlhf.errors import NonFiniteError
from lit_rlhf.modules.common import finite_gradients_or_skip
from lit_rlhf.ops.distributed import every_rank
from lit_rlhf.ops.finite import tensors_finite


class NonFiniteGuard(L.Callback):
    """Check gradients before each optimizer step (automatic optimization) and weights after each batch.

    Reads the module's `skip_nonfinite_updates`. Put it before the checkpoint callback: a batch that broke
    the weights then stops the run before they are saved.
    """

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if not pl_module.automatic_optimization:
            return
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        # cast: a plain attribute of every module; nn.Module.__getattr__ types unknown ones as Tensor | Module
        skip = cast(bool, pl_module.skip_nonfinite_updates)
        if not finite_gradients_or_skip("gradient", trainer.global_step, skip, parameters):
            optimizer.zero_grad(set_to_none=True)  # optimizers skip parameters without a gradient

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        trained = [p for p in pl_module.parameters() if p.requires_grad]
        if every_rank(tensors_finite(trained)):
            return
        raise NonFiniteError(
            f"the weights became non-finite in the update at step {trainer.global_step} although its gradients were "
            "finite (a step too large); nothing was saved from it. Lower the learning rate or clip gradients "
            "(trainer.gradient_clip_val); the last checkpoint, if any, is from before"
        )
