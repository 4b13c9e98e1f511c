"""The DPO loss family as pure functions of sequence log-probabilities.

Every function takes (B,) log-probabilities of the chosen (w) and rejected (l)
responses under the policy π and the frozen reference π_ref, and returns a
per-example loss (B,). Two quantities recur:

    Δ_w = log π(y_w) - log π_ref(y_w),   Δ_l = log π(y_l) - log π_ref(y_l),   h = Δ_w - Δ_l.

The losses here see only a margin: h (sigmoid, robust, ipo, hinge, exo_pair,
discopop), the sorted margins of a batch (aot), or the policy's own length-
normalised margin (simpo). Those that move each side on its own are in
`dpo_side_functions`. The classes in `lit_rlhf.losses.dpo` bind the
hyperparameters from config.
"""

from __future__ import annotations

import math

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


def _smoothed_logistic(logits: Tensor, label_smoothing: float) -> Tensor:
    """-(1-ε) log σ(z) - ε log σ(-z): the logistic loss when each label is flipped with probability ε."""
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


# ------------------------------------------------------------------ functions of the margin h
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
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0, strength of the implicit KL to the reference.
        label_smoothing: ε in [0, 0.5].

    Returns:
        (B,).
    """
    _check_beta(beta)
    _check_label_smoothing("dpo_sigmoid_loss", label_smoothing, allow_half=True)
    margin = _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return _smoothed_logistic(beta * margin, label_smoothing)


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
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
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
        policy_chosen_logps: (B,) length-averaged log-probabilities of the chosen responses, policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
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
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0 (1/β is the margin δ of the paper).

    Returns:
        (B,).
    """
    _check_beta(beta)
    margin = _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return torch.relu(1.0 - beta * margin)


def exo_pair_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float,
) -> Tensor:
    """KL(q ‖ p) over {y_w, y_l}, with q = (σ(βh), σ(-βh)) the policy's and p = (1-ε, ε) the labels'.

    Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model
    Alignment" (EXO-pref, Eq. 16). It is the reverse KL where DPO is the
    forward one, so it seeks a mode instead of covering both; ε > 0 keeps
    log ε finite (the paper uses 1e-3).

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.
        label_smoothing: ε in (0, 0.5].

    Returns:
        (B,).
    """
    _check_beta(beta)
    if not 0.0 < label_smoothing <= 0.5:
        raise ValueError(f"exo_pair_loss: label_smoothing must lie in (0, 0.5], got {label_smoothing}")
    logits = beta * _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    chosen_term = torch.sigmoid(logits) * (F.logsigmoid(logits) - math.log1p(-label_smoothing))
    rejected_term = torch.sigmoid(-logits) * (F.logsigmoid(-logits) - math.log(label_smoothing))
    return chosen_term + rejected_term


def discopop_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    tau: float,
) -> Tensor:
    """(1 - m)·(-log σ(βh)) + m·exp(-βh), with m = σ(βh/τ): logistic for small margins, exponential for large.

    Chris Lu et al. 2024, "Discovering Preference Optimization Algorithms with
    and for Large Language Models" (DiscoPOP / LRML, Eq. 5).

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.
        tau: temperature τ > 0 of the mixing weight (the paper's 0.05).

    Returns:
        (B,).
    """
    _check_beta(beta)
    if not tau > 0:
        raise ValueError(f"discopop_loss: tau must be > 0, got {tau}")
    logits = beta * _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    mix = torch.sigmoid(logits / tau)
    return (1.0 - mix) * -F.logsigmoid(logits) + mix * torch.exp(-logits)


# ------------------------------------------------------------------ distributional (sorted) losses
def aot_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float,
) -> Tensor:
    """The smoothed logistic loss of β(sort(π_c - π_r) - sort(ref_c - ref_r)): the policy's margins dominate.

    Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal
    Transport" (AOT, paired): first-order stochastic dominance of the policy's
    log-ratio margins over the reference's, via the 1-D optimal transport of the
    batch (matching sorted values). The loss of one pair depends on the batch.

    Args:
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0.
        label_smoothing: ε in [0, 0.5].

    Returns:
        (B,), in sorted order rather than the batch's.
    """
    _check_beta(beta)
    _check_label_smoothing("aot_loss", label_smoothing, allow_half=True)
    policy_sorted = torch.sort(policy_chosen_logps - policy_rejected_logps).values
    reference_sorted = torch.sort(reference_chosen_logps - reference_rejected_logps).values
    return _smoothed_logistic(beta * (policy_sorted - reference_sorted), label_smoothing)


# ------------------------------------------------------------------ reference-free
def simpo_loss(policy_chosen_avg_logps: Tensor, policy_rejected_avg_logps: Tensor, beta: float, gamma: float) -> Tensor:
    """-log σ(β(log π(y_w)/|y_w| - log π(y_l)/|y_l|) - γ): a length-normalised reward with a target margin γ.

    Meng et al. 2024, "SimPO: Simple Preference Optimization with a
    Reference-Free Reward" (Eq. 6). No reference model.

    Args:
        policy_chosen_avg_logps: (B,) chosen log-probabilities averaged over response tokens.
        policy_rejected_avg_logps: (B,) rejected log-probabilities averaged over response tokens.
        beta: β > 0.
        gamma: the target reward margin γ ≥ 0.

    Returns:
        (B,).
    """
    _check_beta(beta)
    if gamma < 0:
        raise ValueError(f"simpo_loss: gamma must be >= 0, got {gamma}")
    return -F.logsigmoid(beta * (policy_chosen_avg_logps - policy_rejected_avg_logps) - gamma)
