"""KeepGoingSweeper: Hydra's basic sweeper, except that a failed job does not end the sweep.

Hydra's basic sweeper raises the first failure once its batch is done, which skips later batches and
the end-of-sweep callbacks, so `lit_rlhf.sweep.SweepSummary` could not report. Selected by
conf/hydra/sweeper/keep_going.yaml (the default for `-m`).
"""

from __future__ import annotations

from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf


class KeepGoingSweeper(BasicSweeper):
    """Hydra's basic sweeper, except that a failed job does not stop the sweep or hide its summary."""

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        # setup() sets these before Hydra calls sweep() (Hydra's BasicSweeper.sweep asserts the same)
        assert self.hydra_context is not None and self.config is not None and self.launcher is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(
            parser.parse_overrides([*self._parse_config(), *arguments]), self.max_batch_size
        )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns, first_job = [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            returns.append(self.launcher.launch(batch, initial_job_idx=first_job))
            first_job += len(batch)
        return returns
