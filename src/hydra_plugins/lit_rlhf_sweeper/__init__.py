"""lit-rlhf's Hydra sweepers: KeepGoingSweeper (`-m` sweeps) and OptunaSweeper (hparams_search=...).

Hydra loads sweepers only from the `hydra_plugins` namespace, and imports every module here whose name does
not start with `_` on every run: the Optuna code lives in `_*.py`, imported only when a search starts.
"""
