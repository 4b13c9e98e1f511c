"""Regularizers: small objects that each compute one term of an objective and its metrics.

Hydra groups (`regularizer/kl`, `regularizer/ptx`, `regularizer/nll`) choose them;
a module sums the terms it is given and never switches on names.
"""

from lit_rlhf.regularizers.term import RegularizerTerm

__all__ = ["RegularizerTerm"]
