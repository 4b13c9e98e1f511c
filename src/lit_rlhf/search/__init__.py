"""Hyperparameter search: what the Optuna sweeper (hydra_plugins/lit_rlhf_sweeper) and its trials share.

* `study`: the pruners a config names, the study's storage, the trial attributes a pruned trial leaves.

A low room (it imports only `errors`): the trial's pruning callback and the sweeper both read it, so
neither imports the other, nor the sweep summary (`lit_rlhf.sweep`) at the top.
"""

from lit_rlhf.search.study import (
    LAST_METRICS,
    PRUNERS,
    TRAINING,
    build_with_options,
    make_pruner,
    open_storage,
    options_of,
)

__all__ = [
    "LAST_METRICS",
    "PRUNERS",
    "TRAINING",
    "build_with_options",
    "make_pruner",
    "open_storage",
    "options_of",
]
