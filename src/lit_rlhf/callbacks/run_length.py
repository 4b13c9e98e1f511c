"""How long a run trains, counted in training batches, and whether its end was validated.

Lightning's `global_step` counts optimizer steps: PPO takes several per batch (actor and critic, over
epochs and minibatches), so `trainer.max_steps` would end a PPO run after a fraction of an iteration.
For modules that optimise manually this callback stops after `max_batches` batches instead.
"""

from __future__ import annotations

import lightning as L


class RunLength(L.Callback):
    """Counts training batches; stops after `max_batches` (if set) and says whether the last one was validated.

    Args:
        max_batches: stop after this many training batches; None leaves the length to Lightning.
    """

    def __init__(self, max_batches: int | None):
        self.max_batches = max_batches
        self.validated_at: int | None = None

    @staticmethod
    def batches_done(trainer: L.Trainer) -> int:
        """Training batches processed so far in this fit, a resumed one included."""
        total = trainer.fit_loop.epoch_loop.batch_progress.total
        return total.processed  # pyright: ignore[reportAttributeAccessIssue]  # a _ProcessedTracker, typed as its base

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.max_batches is not None and self.batches_done(trainer) >= self.max_batches:
            trainer.should_stop = True

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.validated_at = self.batches_done(trainer)

    def needs_final_validation(self, trainer: L.Trainer) -> bool:
        """True unless the run's last training batch was followed by a validation."""
        return self.validated_at != self.batches_done(trainer)
