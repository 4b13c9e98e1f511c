"""The DPO loss family as pure functions of sequence log-probabilities.

Every function takes (B,) log-probabilities of the chosen (w) and rejected (l)
responses under the policy π and the frozen reference π_ref, and returns a
per-example loss (B,). Two quantities recur:

    Δ_w = log π(y_w) - log π_ref(y_w),   Δ_l = log π(y_l) - log π_ref(y_l),   h = Δ_w - Δ_l.

The losses of h (sigmoid, robust, ipo, hinge, exo_pair, discopop) only see the
margin; the others (nca_pair, bco_pair, sppo_hard, apo_*) move each side on its
own. The classes in `lit_rlhf.losses.dpo` bind the hyperparameters from config.
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
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
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
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
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
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
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


# ------------------------------------------------------------------ functions of each side
def nca_pair_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """-log σ(βΔ_w) - ½ log σ(-βΔ_w) - ½ log σ(-βΔ_l): absolute rewards, so the chosen likelihood is raised.

    Chen et al. 2024, "Noise Contrastive Alignment of Language Models with
    Explicit Rewards" (NCA, paired form).

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
        beta: β > 0.

    Returns:
        (B,).
    """
    _check_beta(beta)
    chosen = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected = beta * (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)


def bco_pair_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    baseline: float,
) -> Tensor:
    """-log σ(βΔ_w - δ) - log σ(-(βΔ_l - δ)): each side a binary classification around the reward shift δ.

    Jung et al. 2024, "Binary Classifier Optimization for Large Language Model
    Alignment" (BCO); δ is the running mean of the implicit rewards βΔ.

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
        beta: β > 0.
        baseline: the reward shift δ (0 gives TRL 1.16's `bco_pair`).

    Returns:
        (B,).
    """
    _check_beta(beta)
    chosen = beta * (policy_chosen_logps - reference_chosen_logps) - baseline
    rejected = beta * (policy_rejected_logps - reference_rejected_logps) - baseline
    return -F.logsigmoid(chosen) - F.logsigmoid(-rejected)


def sppo_hard_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """(Δ_w - 1/(2β))² + (Δ_l + 1/(2β))²: regress each log-ratio onto ±1/(2β).

    Wu et al. 2024, "Self-Play Preference Optimization for Language Model
    Alignment" (SPPO, Eq. 4.7), with the hard win probability P = 1 for the
    chosen response and 0 for the rejected one.

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
        beta: β > 0 (the paper's 1/η).

    Returns:
        (B,).
    """
    _check_beta(beta)
    target = 0.5 / beta
    chosen = policy_chosen_logps - reference_chosen_logps
    rejected = policy_rejected_logps - reference_rejected_logps
    return (chosen - target).square() + (rejected + target).square()


def apo_zero_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """(1 - σ(βΔ_w)) + σ(βΔ_l): raise the chosen likelihood, lower the rejected one.

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive
    Revisions: Addressing Underspecification in Alignment" (APO-zero, Eq. 7): for
    chosen responses better than the model's own.

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
        beta: β > 0.

    Returns:
        (B,).
    """
    _check_beta(beta)
    chosen = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected = beta * (policy_rejected_logps - reference_rejected_logps)
    return (1.0 - torch.sigmoid(chosen)) + torch.sigmoid(rejected)


def apo_down_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """σ(βΔ_w) + (1 - σ(βh)): lower both likelihoods, the rejected one more.

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive
    Revisions" (APO-down, Eq. 8): for chosen responses worse than the model's own.

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
        beta: β > 0.

    Returns:
        (B,).
    """
    _check_beta(beta)
    chosen = beta * (policy_chosen_logps - reference_chosen_logps)
    margin = beta * _logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return torch.sigmoid(chosen) + (1.0 - torch.sigmoid(margin))


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
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
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


def aot_pair_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float,
) -> Tensor:
    """The smoothed logistic loss of β(sort(Δ_w) - sort(Δ_l)): chosen log-ratios dominate rejected ones.

    Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal
    Transport" (AOT, unpaired: chosen and rejected sorted apart). TRL called it
    `aot_pair` and renamed it `aot_unpaired`.

    Args:
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
            reference_rejected_logps: (B,) sequence log-probabilities.
        beta: β > 0.
        label_smoothing: ε in [0, 0.5].

    Returns:
        (B,), in sorted order rather than the batch's.
    """
    _check_beta(beta)
    _check_label_smoothing("aot_pair_loss", label_smoothing, allow_half=True)
    chosen_sorted = torch.sort(policy_chosen_logps - reference_chosen_logps).values
    rejected_sorted = torch.sort(policy_rejected_logps - reference_rejected_logps).values
    return _smoothed_logistic(beta * (chosen_sorted - rejected_sorted), label_smoothing)


# ------------------------------------------------------------------ reference-free losses
def simpo_loss(policy_chosen_avg_logps: Tensor, policy_rejected_avg_logps: Tensor, beta: float, gamma: float) -> Tensor:
    """-log σ(β(log π(y_w)/|y_w| - log π(y_l)/|y_l|) - γ): a length-normalised reward with a target margin γ.

    Meng et al. 2024, "SimPO: Simple Preference Optimization with a
    Reference-Free Reward" (Eq. 6). No reference model.

    Args:
        policy_chosen_avg_logps, policy_rejected_avg_logps: (B,) log-probabilities averaged over response tokens.
        beta: β > 0.
        gamma: the target reward margin γ ≥ 0.

    Returns:
        (B,).
    """
    _check_beta(beta)
    if gamma < 0:
        raise ValueError(f"simpo_loss: gamma must be >= 0, got {gamma}")
    return -F.logsigmoid(beta * (policy_chosen_avg_logps - policy_rejected_avg_logps) - gamma)


def sft_loss(policy_chosen_logps: Tensor, chosen_lengths: Tensor) -> Tensor:
    """-Σ log π(y_w) / Σ |y_w|: the token-mean NLL of the batch's chosen responses, repeated per pair.

    The SFT term of MPO (Wang et al. 2024, "Enhancing the Reasoning Ability of
    Multimodal Large Language Models via Mixed Preference Optimization") and
    TRL's `sft` loss type. Unlike `regularizer/nll`, which averages each
    response's per-token NLL, every token of the batch weighs the same.

    Args:
        policy_chosen_logps: (B,) summed log π of the chosen response tokens.
        chosen_lengths: (B,) number of those tokens.

    Returns:
        (B,), every entry the batch's token-mean NLL.
    """
    token_mean = -policy_chosen_logps.sum() / chosen_lengths.sum().clamp(min=1).to(policy_chosen_logps.dtype)
    return token_mean.expand_as(policy_chosen_logps)
