"""What an Optuna search's sweeper and its trials share: the pruners, the study storage, the trial attributes.

The sweeper (hydra_plugins/lit_rlhf_sweeper) builds the study and each trial's `lit_rlhf.callbacks.OptunaPruning`
reports to it; both read these names from here. Optuna is imported on first use: only searches need it.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from lit_rlhf.errors import ConfigError

# The pruners a search config names -> their Optuna classes (`none` never stops a trial).
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
}
# Trial user attributes the callback writes and the sweeper reads.
LAST_METRICS = "last_metrics"
TRAINING = "training"


def build_with_options(kind: str, name: str, cls: type, options: dict[str, Any], **fixed: Any):
    """`cls(**fixed, **options)`, with an unknown option named in one line, as a ConfigError."""
    accepted = [p for p in inspect.signature(cls).parameters if p not in fixed]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"it takes: {', '.join(accepted)}" if accepted else "it takes no further options"
        raise ConfigError(f"{kind} '{name}' does not take {', '.join(unknown)}; {takes}")
    try:
        return cls(**fixed, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{kind} '{name}': {error}") from None


def options_of(kind: str, name: str, options_by_name: dict[str, Any], names) -> dict[str, Any]:
    """The chosen sampler's or pruner's options, from `hydra.sweeper.<kind>_options` (a mapping name -> options),
    so that switching the sampler or pruner on the command line never hands one the other's settings."""
    unknown = sorted(set(options_by_name or {}) - set(names))
    if unknown:
        raise ConfigError(
            f"hydra.sweeper.{kind}_options names no {kind} '{unknown[0]}'; choose among: {', '.join(names)}"
        )
    return dict((options_by_name or {}).get(name) or {})


def make_pruner(name: str, options_by_name: dict[str, Any]):
    """The Optuna pruner called `name` (a key of PRUNERS), built with its entry of `options_by_name`."""
    if name not in PRUNERS:
        raise ConfigError(f"unknown pruner '{name}'; choose one of: {', '.join(PRUNERS)}")
    import optuna

    options = options_of("pruner", name, options_by_name, PRUNERS)
    return build_with_options("pruner", name, getattr(optuna.pruners, PRUNERS[name]), options)


def open_storage(url: str):
    """The study's RDB storage; SQLite waits up to a minute for a lock instead of failing at once
    (the sweeper and its parallel jobs write to one file)."""
    import optuna

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    # Workers that open a fresh SQLite file at once race to create its tables; the loser sees a
    # UNIQUE-constraint error, and its second try finds the tables made.
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except Exception as error:  # SQLAlchemy's errors for a bad URL or an unreachable server
            if attempt == 2 or "UNIQUE constraint" not in str(error):
                raise ConfigError(f"cannot open the study storage {url}: {error}") from None
            time.sleep(0.5 * (attempt + 1))
