"""Controllers for the KL coefficient β in r_t = r_θ - β·KL_t.

Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences":
either a fixed β, or a proportional controller that steers the measured KL
towards a target. Both start from `regularizer.kl.coef` (their YAML is `_partial_`:
the KL penalty binds the coefficient) and keep their state in `state_dict()`, so a
resumed run continues with the coefficient it had.
"""

from __future__ import annotations

import math
from typing import Any

from lit_rlhf.errors import NonFiniteError


def _check_coef(name: str, coef: float) -> float:
    if not coef >= 0:  # also rejects NaN
        raise ValueError(f"KL controller: {name} must be >= 0, got {coef}")
    return float(coef)


class FixedKLController:
    """A constant KL coefficient (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences").

    Args:
        coef: β ≥ 0.
    """

    def __init__(self, coef: float) -> None:
        self.value = _check_coef("coef", coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt; accepts the same arguments as the adaptive controller."""

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = _check_coef("value", state["value"])


class AdaptiveKLController:
    """Proportional control of β towards a target KL.

    Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences".
    Every update:
        e = clip(KL / target - 1, -0.2, 0.2);  β ← β · (1 + e · n_steps / horizon).
    The clip bounds how fast β moves: by at most 20% per `horizon` steps.

    Args:
        coef: starting β ≥ 0.
        target: KL (nats per sequence, as measured by the caller) to steer towards, > 0.
        horizon: number of steps over which a 20% change may build up, > 0.
    """

    max_relative_error = 0.2

    def __init__(self, coef: float, target: float, horizon: int) -> None:
        if not target > 0:
            raise ValueError(f"AdaptiveKLController: target must be > 0, got {target}")
        if not horizon > 0:
            raise ValueError(f"AdaptiveKLController: horizon must be > 0, got {horizon}")
        self.value = _check_coef("coef", coef)
        self.target = float(target)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move β after `n_steps` environment steps (samples) that had mean KL `current_kl`."""
        if n_steps < 0:
            raise ValueError(f"AdaptiveKLController.update: n_steps must be >= 0, got {n_steps}")
        if not math.isfinite(float(current_kl)):
            # A NaN would silently poison β for the rest of the run.
            raise NonFiniteError(f"AdaptiveKLController.update: the measured KL is {float(current_kl)}")
        error = float(current_kl) / self.target - 1.0
        error = min(max(error, -self.max_relative_error), self.max_relative_error)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = _check_coef("value", state["value"])
