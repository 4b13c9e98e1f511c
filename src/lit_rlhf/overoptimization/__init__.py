"""Reward-model over-optimization made visible: the best-of-n frontier, Gao et al.'s fits, reward ensembles.

* `bon`: best-of-n sampling against the proxy reward model, scored by the gold reward (`+experiment=bon_frontier`);
* `fits`: Gao et al. 2023's functional forms of gold reward against d = sqrt(KL), fitted by least squares;
* `figure`: the BoN curve, PPO validation histories (mean ± sd over seeds) and the fits in one plot.
"""
