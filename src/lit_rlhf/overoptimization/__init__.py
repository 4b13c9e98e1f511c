"""Reward-model over-optimization made visible: the best-of-n frontier, Gao et al.'s fits, reward ensembles.

* `bon`: best-of-n sampling against the proxy reward model, scored by the gold reward (`+experiment=bon_frontier`);
* `fits`: Gao et al. 2023's functional forms of gold reward against d = sqrt(KL), fitted by least squares;
* `figure`: the BoN curve, PPO validation histories (mean ± sd over seeds) and the fits in one plot.
"""

from lit_rlhf.overoptimization.bon import BestOfN, BonRow, best_of_first_n, bon_kl, expected_best_of_n
from lit_rlhf.overoptimization.figure import overoptimization_outputs, plot_overoptimization
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
    "overoptimization_outputs",
    "plot_overoptimization",
]
