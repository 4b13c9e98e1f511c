"""Reward-model over-optimization made visible: the best-of-n frontier, Gao et al.'s fits, reward ensembles.

* `bon`: best-of-n sampling against the proxy reward model, scored by the gold reward (`+experiment=bon_frontier`);
* `fits`: Gao et al. 2023's functional forms of gold reward against d = sqrt(KL), fitted by least squares.

The figure that puts them together is `lit_rlhf.analysis.overoptimization`.
"""

from lit_rlhf.overoptimization.bon import BestOfN, BonRow, best_of_first_n, bon_kl, expected_best_of_n
from lit_rlhf.overoptimization.fits import GaoFit, fit_gao, gao_curve

__all__ = [
    "BestOfN",
    "BonRow",
    "GaoFit",
    "best_of_first_n",
    "bon_kl",
    "expected_best_of_n",
    "fit_gao",
    "gao_curve",
]
