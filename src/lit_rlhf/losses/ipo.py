"""Squared regression of log-ratios onto a finite target 1/(2β): IPO (on the margin) and SPPO (on each side).

Every function takes (B,) log-probabilities of the chosen (w) and rejected (l) responses under the policy π
and the frozen reference π_ref, and returns a per-example loss (B,); Δ_w, Δ_l and the margin h = Δ_w - Δ_l
are defined in `log_ratios`. The classes in `lit_rlhf.losses.dpo` bind the hyperparameters from config.
"""

from __future__ import annotations

from torch import Tensor

from lit_rlhf.losses.log_ratios import check_beta, logratio_margin


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
    check_beta(beta)
    margin = logratio_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
    )
    return (margin - 1.0 / (2.0 * beta)).square()


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
        policy_chosen_logps: (B,) sequence log-probabilities of the chosen responses under the policy.
        policy_rejected_logps: (B,) those of the rejected responses under the policy.
        reference_chosen_logps: (B,) those of the chosen responses under the reference.
        reference_rejected_logps: (B,) those of the rejected responses under the reference.
        beta: β > 0 (the paper's 1/η).

    Returns:
        (B,).
    """
    check_beta(beta)
    target = 0.5 / beta
    chosen = policy_chosen_logps - reference_chosen_logps
    rejected = policy_rejected_logps - reference_rejected_logps
    return (chosen - target).square() + (rejected + target).square()
