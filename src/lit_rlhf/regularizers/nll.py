"""The NLL term on chosen responses: DPO+NLL (DPO alone can lower the chosen log-prob too), and a reward model's
LM-head regulariser (Yang et al. 2024). `needs_logprobs` tells a module whether to compute the log-probs at all."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_rlhf.errors import ConfigError
from lit_rlhf.regularizers.term import RegularizerTerm


def chosen_nll(chosen_logps_sum: Tensor, chosen_lengths: Tensor) -> Tensor:
    """-log π(y_w) / |y_w|: length-normalised NLL of the chosen response, added to DPO as α·NLL.

    Pang et al. 2024, "Iterative Reasoning Preference Optimization" (DPO+NLL):
    keeps the chosen likelihood from falling while the margin grows.

    Args:
        chosen_logps_sum: (B,) summed log π of the chosen response tokens.
        chosen_lengths: (B,) number of those tokens (≥ 1).

    Returns:
        (B,).
    """
    return -chosen_logps_sum / chosen_lengths.to(chosen_logps_sum.dtype)


class ChosenNLL:
    """alpha * mean(-log pi(y_w | x) / |y_w|).

    Pang et al. 2024, "Iterative Reasoning Preference Optimization"; seed 000's DPO+NLL. On a
    reward model, the same term trains an LM head on its hidden states (Yang et al. 2024,
    "Regularizing Hidden States Enables Learning Generalizable Reward Model").

    Args:
        coef: alpha.
    """

    needs_logprobs = True

    def __init__(self, coef: float):
        if coef < 0:
            raise ConfigError(f"regularizer.nll.coef must be >= 0, got {coef}")
        self.coef = coef

    def loss_term(self, chosen_logps_sum: torch.Tensor, chosen_lengths: torch.Tensor) -> RegularizerTerm:
        """Args: chosen_logps_sum (B,) summed response log-probs; chosen_lengths (B,) response tokens."""
        return RegularizerTerm(self.coef * chosen_nll(chosen_logps_sum, chosen_lengths).mean(), {})


class NoNLL:
    needs_logprobs = False

    def loss_term(self, chosen_logps_sum: torch.Tensor, chosen_lengths: torch.Tensor) -> RegularizerTerm:
        return RegularizerTerm.zero(chosen_logps_sum)
