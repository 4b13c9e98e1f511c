import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lit_rlhf.config import CONFIG_DIR
from lit_rlhf.losses.dpo import (
    HingeLoss,
    IPOLoss,
    PairLogps,
    ReferenceFreeLoss,
    RobustLoss,
    SigmoidLoss,
    dpo_robust_loss,
    dpo_sigmoid_loss,
    hinge_loss,
    ipo_loss,
)
from lit_rlhf.regularizers.nll import chosen_nll

# π_c = -1, π_r = -3, ref_c = ref_r = -2  ->  h = (-1 + 2) - (-3 + 2) = 2
LOGPS = (torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))
NEG_LOGSIG_1 = math.log1p(math.exp(-1.0))  # -log σ(1)  = 0.3132617
NEG_LOGSIG_MINUS_1 = math.log1p(math.e)  # -log σ(-1) = 1.3132617


def pairs_of(policy_chosen, policy_rejected, reference_chosen, reference_rejected) -> PairLogps:
    """The pairs the module would pass, with one-token responses (per-token = summed log-probs)."""
    ones = torch.ones_like(policy_chosen, dtype=torch.long)
    return PairLogps(policy_chosen, policy_rejected, reference_chosen, reference_rejected, ones, ones)


def test_sigmoid_by_hand():
    # β = 0.5: βh = 1 -> -log σ(1)
    torch.testing.assert_close(dpo_sigmoid_loss(*LOGPS, beta=0.5), torch.tensor([NEG_LOGSIG_1]))


def test_conservative_sigmoid_by_hand():
    # ε = 0.1: 0.9 · 0.3132617 + 0.1 · 1.3132617 = 0.4132617
    expected = 0.9 * NEG_LOGSIG_1 + 0.1 * NEG_LOGSIG_MINUS_1
    torch.testing.assert_close(dpo_sigmoid_loss(*LOGPS, beta=0.5, label_smoothing=0.1), torch.tensor([expected]))


def test_robust_by_hand_and_equals_sigmoid_without_noise():
    # ε = 0.1: (0.9 · 0.3132617 - 0.1 · 1.3132617) / 0.8 = 0.1882617
    expected = (0.9 * NEG_LOGSIG_1 - 0.1 * NEG_LOGSIG_MINUS_1) / 0.8
    torch.testing.assert_close(dpo_robust_loss(*LOGPS, beta=0.5, label_smoothing=0.1), torch.tensor([expected]))
    generator = torch.Generator().manual_seed(0)
    random_logps = torch.randn(4, 8, generator=generator)
    torch.testing.assert_close(
        dpo_robust_loss(*random_logps, beta=0.3, label_smoothing=0.0), dpo_sigmoid_loss(*random_logps, beta=0.3)
    )


def test_ipo_by_hand():
    # β = 0.5: (2 - 1/(2·0.5))² = 1;  β = 0.25: (2 - 2)² = 0
    torch.testing.assert_close(ipo_loss(*LOGPS, beta=0.5), torch.tensor([1.0]))
    torch.testing.assert_close(ipo_loss(*LOGPS, beta=0.25), torch.tensor([0.0]))


def test_hinge_by_hand():
    # β = 0.5: relu(1 - 1) = 0;  β = 0.25: relu(1 - 0.5) = 0.5
    torch.testing.assert_close(hinge_loss(*LOGPS, beta=0.5), torch.tensor([0.0]))
    torch.testing.assert_close(hinge_loss(*LOGPS, beta=0.25), torch.tensor([0.5]))


def test_chosen_nll_by_hand():
    # -(-6)/3 = 2, -(-3)/1 = 3
    torch.testing.assert_close(chosen_nll(torch.tensor([-6.0, -3.0]), torch.tensor([3, 1])), torch.tensor([2.0, 3.0]))


def test_reference_free_ignores_reference():
    loss_fn = ReferenceFreeLoss(beta=0.5)
    assert loss_fn.needs_reference is False
    policy_chosen, policy_rejected = LOGPS[0], LOGPS[1]
    # β(π_c - π_r) = 0.5 · 2 = 1 -> -log σ(1)
    torch.testing.assert_close(
        loss_fn(pairs_of(policy_chosen, policy_rejected, None, None)), torch.tensor([NEG_LOGSIG_1])
    )
    torch.testing.assert_close(
        loss_fn(pairs_of(policy_chosen, policy_rejected, torch.tensor([5.0]), torch.tensor([-7.0]))),
        torch.tensor([NEG_LOGSIG_1]),
    )


@pytest.mark.parametrize(
    "loss_fn",
    [
        SigmoidLoss(beta=0.1, label_smoothing=0.0),
        RobustLoss(beta=0.1, label_smoothing=0.2),
        IPOLoss(beta=0.1, average_log_probs=False),
        HingeLoss(beta=0.1),
        ReferenceFreeLoss(beta=0.1),
    ],
    ids=lambda loss_fn: type(loss_fn).__name__,
)
def test_gradients_raise_chosen_and_lower_rejected(loss_fn):
    # At h = 0 every loss wants a larger margin: the chosen log-prob's gradient is negative.
    policy_chosen = torch.tensor([-2.0, -4.0], requires_grad=True)
    policy_rejected = torch.tensor([-2.0, -4.0], requires_grad=True)
    reference = torch.tensor([-2.0, -4.0])
    loss_fn(pairs_of(policy_chosen, policy_rejected, reference, reference)).mean().backward()
    assert (policy_chosen.grad < 0).all() and (policy_rejected.grad > 0).all()


# Constructor arguments of each loss (the YAML in conf/loss/dpo holds the defaults; the code repeats none).
LOSS_ARGUMENTS = {
    SigmoidLoss: {"beta": 0.1, "label_smoothing": 0.0},
    RobustLoss: {"beta": 0.1, "label_smoothing": 0.1},
    IPOLoss: {"beta": 0.1, "average_log_probs": False},
    HingeLoss: {"beta": 0.1},
    ReferenceFreeLoss: {"beta": 0.1},
}


@pytest.mark.parametrize("cls", list(LOSS_ARGUMENTS))
def test_one_step_changes_parameters(cls):
    # trl-style smoke test: a tiny "policy" with a learnable offset per response, one SGD step.
    offsets = torch.nn.Parameter(torch.zeros(2))
    before = offsets.detach().clone()
    loss_fn = cls(**LOSS_ARGUMENTS[cls])
    reference = torch.tensor([-5.0])
    loss = loss_fn(pairs_of(reference + offsets[0], reference + offsets[1], reference, reference)).mean()
    loss.backward()
    torch.optim.SGD([offsets], lr=1.0).step()
    assert not torch.equal(offsets.detach(), before)


def test_class_attributes():
    losses = [cls(**arguments) for cls, arguments in LOSS_ARGUMENTS.items()]
    # IPO can average log-probs over tokens (TRL's convention); the others always sum them.
    assert [loss.average_log_probs for loss in losses] == [False, False, False, False, False]
    assert IPOLoss(beta=0.1, average_log_probs=True).average_log_probs is True
    assert [cls.needs_reference for cls in (SigmoidLoss, RobustLoss, IPOLoss, HingeLoss, ReferenceFreeLoss)] == [
        True,
        True,
        True,
        True,
        False,
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RobustLoss(beta=0.1, label_smoothing=0.5), r"\[0, 0.5\)"),
        (lambda: SigmoidLoss(beta=0.1, label_smoothing=0.6), r"\[0, 0.5\]"),
        (lambda: SigmoidLoss(beta=0.1, label_smoothing=-0.1), r"\[0, 0.5\]"),
        (lambda: IPOLoss(beta=0.0, average_log_probs=False), "beta > 0"),
        (lambda: dpo_robust_loss(*LOGPS, beta=0.1, label_smoothing=0.5), r"\[0, 0.5\)"),
    ],
)
def test_invalid_hyperparameters_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "loss" / "dpo").glob("*.yaml")), ids=lambda path: path.stem)
def test_every_loss_config_instantiates(path):
    written = OmegaConf.load(path)
    loss_fn = instantiate(written)
    assert loss_fn.beta == written.beta
