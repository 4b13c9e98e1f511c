"""The DPO loss family as config objects: the Hydra group `loss/dpo`.

Each class binds the hyperparameters of one loss function, kept by family in `dpo_sigmoid` (DPO, cDPO,
robust DPO), `ipo` (IPO, SPPO), `margin_shapes` (SLiC-HF, EXO, DiscoPOP), `aot`, `anchored` (NCA, BCO,
APO) and `reference_free` (SimPO, MPO's SFT term), and is called on a `PairLogps`; its `needs_reference`
tells the module whether to run the reference model. Every YAML of the group wraps its loss in a `MixedLoss`
under its own key, so `loss/dpo=[sigmoid,bco_pair]` merges two files into one
weighted sum (MPO), while `loss/dpo=sigmoid` is a sum of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple, cast

import torch
from torch import Tensor

from lit_rlhf.errors import ConfigError
from lit_rlhf.losses.anchored import apo_down_loss, apo_zero_loss, bco_pair_loss, nca_pair_loss
from lit_rlhf.losses.aot import aot_loss, aot_pair_loss
from lit_rlhf.losses.dpo_sigmoid import dpo_robust_loss, dpo_sigmoid_loss
from lit_rlhf.losses.ipo import ipo_loss, sppo_hard_loss
from lit_rlhf.losses.log_ratios import check_beta, check_label_smoothing
from lit_rlhf.losses.margin_shapes import discopop_loss, exo_pair_loss, hinge_loss
from lit_rlhf.losses.reference_free import sft_loss, simpo_loss


class PairLogps(NamedTuple):
    """Log-probabilities of B preference pairs, each (B,), summed over the response tokens.

    Attributes:
        policy_chosen, policy_rejected: log π(y_w | x), log π(y_l | x).
        reference_chosen, reference_rejected: the same under π_ref; None when no loss needs them.
        chosen_lengths, rejected_lengths: response tokens of each side.
    """

    policy_chosen: Tensor
    policy_rejected: Tensor
    reference_chosen: Tensor | None
    reference_rejected: Tensor | None
    chosen_lengths: Tensor
    rejected_lengths: Tensor

    def per_token(self) -> PairLogps:
        """The same pairs with each log-prob divided by its response length (at least 1)."""
        chosen = self.chosen_lengths.clamp(min=1).to(self.policy_chosen.dtype)
        rejected = self.rejected_lengths.clamp(min=1).to(self.policy_rejected.dtype)
        return self._replace(
            policy_chosen=self.policy_chosen / chosen,
            policy_rejected=self.policy_rejected / rejected,
            reference_chosen=None if self.reference_chosen is None else self.reference_chosen / chosen,
            reference_rejected=None if self.reference_rejected is None else self.reference_rejected / rejected,
        )

    def references(self) -> tuple[Tensor, Tensor]:
        """(ref_c, ref_r), for a loss with `needs_reference`: the module then ran the reference model."""
        assert self.reference_chosen is not None and self.reference_rejected is not None, "no reference log-probs"
        return self.reference_chosen, self.reference_rejected

    def four(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(π_c, π_r, ref_c, ref_r), the arguments of every reference-based DPO-family function."""
        return self.policy_chosen, self.policy_rejected, *self.references()


class PairLoss:
    """What the module asks of every loss; by default it needs the reference, sums log-probs and keeps no state."""

    needs_reference: bool = True
    average_log_probs: bool = False

    def __call__(self, pairs: PairLogps) -> Tensor:
        """(B,) loss of each pair."""
        raise NotImplementedError

    def update(self, pairs: PairLogps) -> None:
        """Called once per training batch, before the loss; only stateful losses (BCO) use it."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless: nothing to restore."""


class SigmoidLoss(PairLoss):
    """DPO, optionally conservative (Rafailov et al. 2023, "Direct Preference Optimization"; Mitchell 2023).

    Args:
        beta: β > 0.
        label_smoothing: ε in [0, 0.5]; 0 is plain DPO.
    """

    def __init__(self, beta: float, label_smoothing: float) -> None:
        check_beta(beta)
        check_label_smoothing("SigmoidLoss", label_smoothing, allow_half=True)
        self.beta, self.label_smoothing = beta, label_smoothing

    def __call__(self, pairs: PairLogps) -> Tensor:
        return dpo_sigmoid_loss(*pairs.four(), self.beta, self.label_smoothing)


class RobustLoss(PairLoss):
    """Robust DPO under label noise (Chowdhury et al. 2024, "Provably Robust DPO").

    Args:
        beta: β > 0.
        label_smoothing: assumed flip probability ε in [0, 0.5).
    """

    def __init__(self, beta: float, label_smoothing: float) -> None:
        check_beta(beta)
        check_label_smoothing("RobustLoss", label_smoothing, allow_half=False)
        self.beta, self.label_smoothing = beta, label_smoothing

    def __call__(self, pairs: PairLogps) -> Tensor:
        return dpo_robust_loss(*pairs.four(), self.beta, self.label_smoothing)


class IPOLoss(PairLoss):
    """IPO on sequence log-probs, as the paper states it; TRL averages them over tokens instead.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning
    from Human Preferences".

    Args:
        beta: β (the paper's τ) > 0.
        average_log_probs: regress the per-token (True) instead of the summed (False) log-ratio margin onto 1/(2β).
    """

    def __init__(self, beta: float, average_log_probs: bool) -> None:
        check_beta(beta)
        self.beta, self.average_log_probs = beta, average_log_probs

    def __call__(self, pairs: PairLogps) -> Tensor:
        return ipo_loss(*(pairs.per_token() if self.average_log_probs else pairs).four(), self.beta)


class HingeLoss(PairLoss):
    """SLiC-HF hinge loss (Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback").

    Args:
        beta: β > 0.
    """

    def __init__(self, beta: float) -> None:
        check_beta(beta)
        self.beta = beta

    def __call__(self, pairs: PairLogps) -> Tensor:
        return hinge_loss(*pairs.four(), self.beta)


class ReferenceFreeLoss(PairLoss):
    """DPO without the reference log-ratio: -log σ(β(log π(y_w) - log π(y_l))); no reference model is run.

    The reference-free variant of Rafailov et al. 2023, "Direct Preference
    Optimization: Your Language Model is Secretly a Reward Model" (TRL's
    `reference_free`). The reference log-probs are ignored and may be None.

    Args:
        beta: β > 0.
    """

    needs_reference = False

    def __init__(self, beta: float) -> None:
        check_beta(beta)
        self.beta = beta

    def __call__(self, pairs: PairLogps) -> Tensor:
        zeros = torch.zeros_like(pairs.policy_chosen)  # log π_ref = 0 for both: only the policy margin remains
        return dpo_sigmoid_loss(pairs.policy_chosen, pairs.policy_rejected, zeros, zeros, self.beta)


class ExoPairLoss(PairLoss):
    """EXO-pref (Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model Alignment").

    Args:
        beta: β > 0.
        label_smoothing: ε in (0, 0.5], the labels' probability of the rejected response.
    """

    def __init__(self, beta: float, label_smoothing: float) -> None:
        check_beta(beta)
        if not 0.0 < label_smoothing <= 0.5:
            raise ValueError(f"ExoPairLoss: label_smoothing must lie in (0, 0.5], got {label_smoothing}")
        self.beta, self.label_smoothing = beta, label_smoothing

    def __call__(self, pairs: PairLogps) -> Tensor:
        return exo_pair_loss(*pairs.four(), self.beta, self.label_smoothing)


class NCAPairLoss(PairLoss):
    """NCA (Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards").

    Args:
        beta: β > 0.
    """

    def __init__(self, beta: float) -> None:
        check_beta(beta)
        self.beta = beta

    def __call__(self, pairs: PairLogps) -> Tensor:
        return nca_pair_loss(*pairs.four(), self.beta)


class BCOPairLoss(PairLoss):
    """BCO on pairs (Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment").

    The reward shift δ is the mean, over the training batches so far (this one
    included), of each batch's mean implicit reward β·Δ; validation reads it
    without moving it. The object keeps it in its `state_dict()`, so a resumed
    run continues with the δ it had.

    Args:
        beta: β > 0.
        baseline: `running_mean` (the paper's δ) or `none` (δ = 0, TRL 1.16's `bco_pair`).
    """

    baselines = ("running_mean", "none")

    def __init__(self, beta: float, baseline: str) -> None:
        check_beta(beta)
        if baseline not in self.baselines:
            raise ConfigError(f"loss.dpo bco_pair: unknown baseline '{baseline}'; valid: {', '.join(self.baselines)}")
        self.beta, self.baseline = beta, baseline
        self.reward_mean, self.batches = 0.0, 0

    def implicit_reward_mean(self, pairs: PairLogps) -> float:
        """The batch's mean of β·Δ over both sides, 2B rewards."""
        reference_chosen, reference_rejected = pairs.references()
        chosen = pairs.policy_chosen - reference_chosen
        rejected = pairs.policy_rejected - reference_rejected
        return float(self.beta * torch.cat([chosen, rejected]).detach().mean())

    def update(self, pairs: PairLogps) -> None:
        if self.baseline == "running_mean":
            self.batches += 1
            self.reward_mean += (self.implicit_reward_mean(pairs) - self.reward_mean) / self.batches

    def __call__(self, pairs: PairLogps) -> Tensor:
        return bco_pair_loss(*pairs.four(), self.beta, self.reward_mean)

    def state_dict(self) -> dict[str, Any]:
        return {"reward_mean": self.reward_mean, "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reward_mean, self.batches = float(state["reward_mean"]), int(state["batches"])


class SPPOHardLoss(PairLoss):
    """SPPO, hard win probabilities (Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment").

    Args:
        beta: β > 0.
    """

    def __init__(self, beta: float) -> None:
        check_beta(beta)
        self.beta = beta

    def __call__(self, pairs: PairLogps) -> Tensor:
        return sppo_hard_loss(*pairs.four(), self.beta)


class AOTLoss(PairLoss):
    """AOT, paired (Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport").

    Args:
        beta: β > 0.
        label_smoothing: ε in [0, 0.5].
    """

    def __init__(self, beta: float, label_smoothing: float) -> None:
        check_beta(beta)
        check_label_smoothing("AOTLoss", label_smoothing, allow_half=True)
        self.beta, self.label_smoothing = beta, label_smoothing

    def __call__(self, pairs: PairLogps) -> Tensor:
        return aot_loss(*pairs.four(), self.beta, self.label_smoothing)


class AOTPairLoss(PairLoss):
    """AOT, unpaired (Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport").

    Args:
        beta: β > 0.
        label_smoothing: ε in [0, 0.5].
    """

    def __init__(self, beta: float, label_smoothing: float) -> None:
        check_beta(beta)
        check_label_smoothing("AOTPairLoss", label_smoothing, allow_half=True)
        self.beta, self.label_smoothing = beta, label_smoothing

    def __call__(self, pairs: PairLogps) -> Tensor:
        return aot_pair_loss(*pairs.four(), self.beta, self.label_smoothing)


class APOLoss(PairLoss):
    """APO (D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions").

    Args:
        beta: β > 0.
        anchor: `zero` (chosen better than the model's outputs: raise it) or `down` (worse: lower both).
    """

    anchors: ClassVar[dict] = {"zero": apo_zero_loss, "down": apo_down_loss}

    def __init__(self, beta: float, anchor: str) -> None:
        check_beta(beta)
        if anchor not in self.anchors:
            raise ConfigError(f"loss.dpo apo: unknown anchor '{anchor}'; valid: {', '.join(self.anchors)}")
        self.beta, self.loss = beta, self.anchors[anchor]

    def __call__(self, pairs: PairLogps) -> Tensor:
        return self.loss(*pairs.four(), self.beta)


class DiscoPOPLoss(PairLoss):
    """DiscoPOP (Chris Lu et al. 2024, "Discovering Preference Optimization Algorithms with and for LLMs").

    Args:
        beta: β > 0.
        tau: temperature τ > 0 of the logistic/exponential mix.
    """

    def __init__(self, beta: float, tau: float) -> None:
        check_beta(beta)
        self.beta, self.tau = beta, tau

    def __call__(self, pairs: PairLogps) -> Tensor:
        return discopop_loss(*pairs.four(), self.beta, self.tau)


class SimPOLoss(PairLoss):
    """SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward").

    Length-normalised log-probs, no reference model.

    Args:
        beta: β > 0 (on per-token log-probs, so larger than DPO's: the paper uses 2-2.5).
        gamma: target reward margin γ ≥ 0.
    """

    needs_reference = False
    average_log_probs = True

    def __init__(self, beta: float, gamma: float) -> None:
        check_beta(beta)
        self.beta, self.gamma = beta, gamma

    def __call__(self, pairs: PairLogps) -> Tensor:
        averaged = pairs.per_token()
        return simpo_loss(averaged.policy_chosen, averaged.policy_rejected, self.beta, self.gamma)


class SFTLoss(PairLoss):
    """The token-mean NLL of the chosen responses as a loss (MPO's SFT term; TRL's `sft`); no reference."""

    needs_reference = False

    def __call__(self, pairs: PairLogps) -> Tensor:
        return sft_loss(pairs.policy_chosen, pairs.chosen_lengths)


class MixedLoss:
    """Σ_k w_k · loss_k: several losses of the family on the same pairs, as in MPO.

    Wang et al. 2024, "Enhancing the Reasoning Ability of Multimodal Large
    Language Models via Mixed Preference Optimization" (MPO: sigmoid 0.8,
    bco_pair 0.2, sft 1.0); TRL's `loss_type` list with `loss_weights`. The
    per-pair sum is meaningful only through its batch mean (the AOT losses sort
    the batch).

    Args:
        beta: the shared β > 0 every term reads (by interpolation) and the implicit rewards are logged with.
        weights: name -> w_k ≥ 0, one per term.
        terms: name -> loss object.
    """

    def __init__(self, beta: float, weights: Mapping[str, float], terms: Mapping[str, PairLoss]) -> None:
        check_beta(beta)
        if not terms or set(weights) != set(terms):
            raise ConfigError(
                f"loss.dpo: every term needs one weight; terms: {sorted(terms)}, weights: {sorted(weights)}"
            )
        negative = {name: w for name, w in weights.items() if w < 0}
        if negative:
            raise ConfigError(f"loss.dpo.weights must be >= 0, got {negative}")
        self.beta = beta
        self.terms = dict(terms)
        self.weights = {name: float(weights[name]) for name in self.terms}
        self.needs_reference = any(term.needs_reference for term in self.terms.values())
        # The implicit rewards the module logs are per-token only if every term works per token.
        self.average_log_probs = all(term.average_log_probs for term in self.terms.values())

    def update(self, pairs: PairLogps) -> None:
        for term in self.terms.values():
            term.update(pairs)

    def parts(self, pairs: PairLogps) -> dict[str, Tensor]:
        """name -> unweighted (B,) loss of each term."""
        return {name: term(pairs) for name, term in self.terms.items()}

    def __call__(self, pairs: PairLogps) -> Tensor:
        # `terms` is non-empty (checked in __init__), so the sum never is its int start 0.
        return cast(Tensor, sum(self.weights[name] * loss for name, loss in self.parts(pairs).items()))

    def state_dict(self) -> dict[str, Any]:
        return {name: term.state_dict() for name, term in self.terms.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A term absent from the checkpoint (a loss added on resume) keeps its fresh state.
        for name, term in self.terms.items():
            if name in state:
                term.load_state_dict(state[name])
