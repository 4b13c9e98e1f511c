"""Direct-alignment losses on sequence log-probabilities.

Every loss takes the summed (or, where `average_log_probs`, length-averaged) log-probabilities of
the chosen and rejected responses under the policy and the frozen reference,
each (B,), and returns a per-example loss (B,). With

    h = (log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l)),

the losses differ only in the function of h they minimise. The classes are the
Hydra group `loss/dpo`; their `needs_reference` and `average_log_probs` tell
the module what to compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"DPO losses need beta > 0, got {beta}")


def _check_label_smoothing(who: str, label_smoothing: float, allow_half: bool) -> None:
    upper_ok = label_smoothing <= 0.5 if allow_half else label_smoothing < 0.5
    if not (label_smoothing >= 0.0 and upper_ok):
        interval = "[0, 0.5]" if allow_half else "[0, 0.5)"
        raise ValueError(f"{who}: label_smoothing must lie in {interval}, got {label_smoothing}")


def _logratio_margin(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
) -> Tensor:
    """h = (π_c - ref_c) - (π_r - ref_r), all log-probs (B,) -> (B,)."""
    return (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)


def dpo_sigmoid_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> Tensor:
    """-(1-ε) log σ(βh) - ε log σ(-βh).

    ε = 0 is DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your
    Language Model is Secretly a Reward Model"); ε > 0 assumes each label is
    flipped with probability ε, conservative DPO (Mitchell 2023, "A note on DPO
    with noisy preferences & relationship to IPO").

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
        beta: β > 0, strength of the implicit KL to the reference.
        label_smoothing: ε in [0, 0.5].

    Returns:
        (B,).
    """
    _check_beta(beta)
    _check_label_smoothing("dpo_sigmoid_loss", label_smoothing, allow_half=True)
    logits = beta * _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def dpo_robust_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float,
) -> Tensor:
    """(-(1-ε) log σ(βh) + ε log σ(-βh)) / (1 - 2ε): an unbiased DPO loss under label noise ε.

    Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language Models with
    Noisy Feedback". Unlike conservative DPO, its expectation over flipped
    labels equals the clean DPO loss, which is why ε must stay below 0.5.

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
        beta: β > 0.
        label_smoothing: flip probability ε in [0, 0.5).

    Returns:
        (B,).
    """
    _check_beta(beta)
    _check_label_smoothing("dpo_robust_loss", label_smoothing, allow_half=False)
    logits = beta * _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    noisy = -(1.0 - label_smoothing) * F.logsigmoid(logits) + label_smoothing * F.logsigmoid(-logits)
    return noisy / (1.0 - 2.0 * label_smoothing)


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """(h - 1/(2β))²: regress the log-ratio margin to a finite target instead of pushing it to infinity.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning
    from Human Preferences" (IPO). Here β is the paper's τ; pass length-averaged
    log-probabilities, as TRL does.

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) length-averaged log-probabilities.
        beta: β > 0.

    Returns:
        (B,).
    """
    _check_beta(beta)
    margin = _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return (margin - 1.0 / (2.0 * beta)).square()


def hinge_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """relu(1 - βh): zero once the scaled margin exceeds 1.

    Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human
    Feedback" (calibration loss, with the reference log-ratio as in TRL).

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
        beta: β > 0 (1/β is the margin δ of the paper).

    Returns:
        (B,).
    """
    _check_beta(beta)
    margin = _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return torch.relu(1.0 - beta * margin)


class SigmoidLoss:
    """DPO, optionally conservative (Rafailov et al. 2023, "Direct Preference Optimization"; Mitchell 2023).

    Args:
        beta: β > 0.
        label_smoothing: ε in [0, 0.5]; 0 is plain DPO.
    """

    needs_reference: bool = True
    average_log_probs: bool = False

    def __init__(self, beta: float, label_smoothing: float) -> None:
        _check_beta(beta)
        _check_label_smoothing("SigmoidLoss", label_smoothing, allow_half=True)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def __call__(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        reference_chosen_logps: Tensor,
        reference_rejected_logps: Tensor,
    ) -> Tensor:
        return dpo_sigmoid_loss(
            policy_chosen_logps,
            policy_rejected_logps,
            reference_chosen_logps,
            reference_rejected_logps,
            self.beta,
            self.label_smoothing,
        )


class RobustLoss:
    """Robust DPO under label noise (Chowdhury et al. 2024, "Provably Robust DPO").

    Args:
        beta: β > 0.
        label_smoothing: assumed flip probability ε in [0, 0.5).
    """

    needs_reference: bool = True
    average_log_probs: bool = False

    def __init__(self, beta: float, label_smoothing: float) -> None:
        _check_beta(beta)
        _check_label_smoothing("RobustLoss", label_smoothing, allow_half=False)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def __call__(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        reference_chosen_logps: Tensor,
        reference_rejected_logps: Tensor,
    ) -> Tensor:
        return dpo_robust_loss(
            policy_chosen_logps,
            policy_rejected_logps,
            reference_chosen_logps,
            reference_rejected_logps,
            self.beta,
            self.label_smoothing,
        )


class IPOLoss:
    """IPO on sequence log-probs, as the paper states it; TRL averages them over tokens instead.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning
    from Human Preferences".

    Args:
        beta: β (the paper's τ) > 0.
        average_log_probs: regress the per-token (True) instead of the summed (False) log-ratio margin onto 1/(2β).
    """

    needs_reference: bool = True

    def __init__(self, beta: float, average_log_probs: bool) -> None:
        _check_beta(beta)
        self.beta = beta
        self.average_log_probs = average_log_probs

    def __call__(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        reference_chosen_logps: Tensor,
        reference_rejected_logps: Tensor,
    ) -> Tensor:
        return ipo_loss(
            policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, self.beta
        )


class HingeLoss:
    """SLiC-HF hinge loss (Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback").

    Args:
        beta: β > 0.
    """

    needs_reference: bool = True
    average_log_probs: bool = False

    def __init__(self, beta: float) -> None:
        _check_beta(beta)
        self.beta = beta

    def __call__(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        reference_chosen_logps: Tensor,
        reference_rejected_logps: Tensor,
    ) -> Tensor:
        return hinge_loss(
            policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, self.beta
        )


class ReferenceFreeLoss:
    """DPO without the reference log-ratio: -log σ(β(log π(y_w) - log π(y_l))); no reference model is run.

    The reference-free variant of Rafailov et al. 2023, "Direct Preference
    Optimization: Your Language Model is Secretly a Reward Model" (TRL's
    `reference_free`). The reference arguments are ignored and may be None.

    Args:
        beta: β > 0.
    """

    needs_reference: bool = False
    average_log_probs: bool = False

    def __init__(self, beta: float) -> None:
        _check_beta(beta)
        self.beta = beta

    def __call__(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        reference_chosen_logps: Tensor | None = None,
        reference_rejected_logps: Tensor | None = None,
    ) -> Tensor:
        zeros = torch.zeros_like(policy_chosen_logps)  # log π_ref = 0 for both: only the policy margin remains
        return dpo_sigmoid_loss(policy_chosen_logps, policy_rejected_logps, zeros, zeros, self.beta)
