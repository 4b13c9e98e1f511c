"""Gao et al. 2023, "Scaling Laws for Reward Model Overoptimization": gold reward against d = sqrt(KL).

    best-of-n:  R_bon(d) = d (α_bon − β_bon d)
    RL:         R_RL(d)  = d (α_RL − β_RL log d)

Rewards are measured relative to the starting policy (R(0) = 0), so the fits take gold − gold_at_KL_0.
Both forms are linear in (α, β): R = α·d − β·g(d) with g(d) = d² or d·log d, so the least-squares fit is
exact (numpy's lstsq), no iterative optimiser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FORMS = ("bon", "rl")


@dataclass(frozen=True)
class GaoFit:
    """A fitted form: `form` is `bon` or `rl`; `rmse` is the fit's root-mean-square residual."""

    form: str
    alpha: float
    beta: float
    rmse: float

    def __call__(self, d: np.ndarray) -> np.ndarray:
        return gao_curve(self.form, np.asarray(d, dtype=float), self.alpha, self.beta)


def _penalty_basis(form: str, d: np.ndarray) -> np.ndarray:
    if form == "bon":
        return d * d
    if form == "rl":
        # d log d -> 0 as d -> 0: the starting point d = 0 lies on every RL curve.
        return np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
    raise ValueError(f"unknown form '{form}'; choose one of: {', '.join(FORMS)}")


def gao_curve(form: str, d: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """R(d) of `form` (`bon`: d(α − βd); `rl`: d(α − β log d))."""
    return alpha * d - beta * _penalty_basis(form, d)


def fit_gao(form: str, d: Sequence[float] | np.ndarray, reward: Sequence[float] | np.ndarray) -> GaoFit:
    """Least-squares α, β of `form` to points (d, reward), reward relative to the start (R(0) = 0).

    Args:
        d: (N,) sqrt(KL) of each point, nats^(1/2).
        reward: (N,) gold reward minus the starting policy's.
    """
    d, reward = np.asarray(d, dtype=float), np.asarray(reward, dtype=float)
    if d.shape != reward.shape or d.ndim != 1:
        raise ValueError(f"d and reward must be 1-D of one length, got {d.shape} and {reward.shape}")
    basis = np.stack([d, -_penalty_basis(form, d)], axis=1)  # (N, 2): R = [d, -g(d)] @ [α, β]
    if np.linalg.matrix_rank(basis) < 2:
        raise ValueError(f"fitting the {form} form needs at least two points with distinct d > 0")
    (alpha, beta), *_ = np.linalg.lstsq(basis, reward, rcond=None)
    residual = reward - basis @ np.array([alpha, beta])
    return GaoFit(form, float(alpha), float(beta), float(np.sqrt(np.mean(residual**2))))
