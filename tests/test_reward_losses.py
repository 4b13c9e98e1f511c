import math

import pytest
import torch
from hydra.utils import instantiate

from lit_rlhf.losses.reward import (
    BradleyTerryLoss,
    MarginLoss,
    bradley_terry_loss,
    margin_loss,
    ranked_pair_indices,
    reward_centering_penalty,
)


def test_bradley_terry_by_hand():
    # -log σ(1) = log(1 + e^-1) = 0.31326;  -log σ(0) = log 2
    chosen, rejected = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5])
    torch.testing.assert_close(
        bradley_terry_loss(chosen, rejected), torch.tensor([math.log1p(math.exp(-1)), math.log(2)])
    )


def test_bradley_terry_is_stable_for_large_gaps():
    # σ(-200) underflows to 0 in float32, but logsigmoid gives the exact -200
    loss = bradley_terry_loss(torch.tensor([100.0, -100.0]), torch.tensor([-100.0, 100.0]))
    torch.testing.assert_close(loss, torch.tensor([0.0, 200.0]))


def test_bradley_terry_gradient_pushes_rewards_apart():
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).sum().backward()
    # d/d r_w of -log σ(r_w - r_l) = -(1 - σ(0)) = -0.5
    assert chosen.grad.item() == pytest.approx(-0.5) and rejected.grad.item() == pytest.approx(0.5)


def test_margin_loss_by_hand():
    # -log σ(2 - 1 - 1) = log 2; with m = 0 it is Bradley-Terry
    chosen, rejected = torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0])
    torch.testing.assert_close(
        margin_loss(chosen, rejected, torch.tensor([1.0, 0.0])), torch.tensor([math.log(2), math.log1p(math.exp(-1))])
    )


def test_reward_centering_penalty_by_hand():
    # (1 + -3)² = 4, (0.5 + 0.5)² = 1
    torch.testing.assert_close(
        reward_centering_penalty(torch.tensor([1.0, 0.5]), torch.tensor([-3.0, 0.5])), torch.tensor([4.0, 1.0])
    )


@pytest.mark.parametrize(
    ("group_sizes", "better", "worse"),
    [
        ([2], [0], [1]),
        ([3], [0, 0, 1], [1, 2, 2]),
        ([4], [0, 0, 0, 1, 1, 2], [1, 2, 3, 2, 3, 3]),
        # groups at offsets 0 and 2: (0,1) | (2,3) (2,4) (3,4)
        ([2, 3], [0, 2, 2, 3], [1, 3, 4, 4]),
        # a group of one contributes no pair but still shifts the offset
        ([3, 1, 2], [0, 0, 1, 4], [1, 2, 2, 5]),
        ([], [], []),
    ],
)
def test_ranked_pair_indices(group_sizes, better, worse):
    better_idx, worse_idx = ranked_pair_indices(group_sizes)
    assert better_idx.dtype == worse_idx.dtype == torch.long
    assert better_idx.tolist() == better and worse_idx.tolist() == worse
    assert len(better) == sum(k * (k - 1) // 2 for k in group_sizes)


def test_ranked_pair_indices_rejects_empty_group():
    with pytest.raises(ValueError, match="at least one sequence"):
        ranked_pair_indices([3, 0])


def test_ranked_pairs_feed_the_pairwise_loss():
    # Rewards already in the labelled order give a smaller loss than reversed ones.
    better, worse = ranked_pair_indices([3])
    in_order = torch.tensor([3.0, 2.0, 1.0])
    assert (
        bradley_terry_loss(in_order[better], in_order[worse]).mean()
        < bradley_terry_loss(in_order.flip(0)[better], in_order.flip(0)[worse]).mean()
    )


def test_bradley_terry_class_ignores_margin():
    loss_fn = BradleyTerryLoss()
    assert loss_fn.uses_margin is False
    chosen, rejected = torch.tensor([1.0]), torch.tensor([0.0])
    torch.testing.assert_close(
        loss_fn(chosen, rejected, margin=torch.tensor([5.0])), bradley_terry_loss(chosen, rejected)
    )


def test_margin_class_scales_margin():
    loss_fn = MarginLoss(scale=0.5)
    assert loss_fn.uses_margin is True
    # -log σ(2 - 1 - 0.5·2) = log 2
    torch.testing.assert_close(
        loss_fn(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([2.0])), torch.tensor([math.log(2)])
    )


@pytest.mark.parametrize("margin", [None, torch.tensor([1.0, float("nan")])])
def test_margin_class_needs_every_margin(margin):
    with pytest.raises(ValueError, match="margin loss needs a margin for every pair"):
        MarginLoss(scale=1.0)(torch.zeros(2), torch.zeros(2), margin)


def test_losses_instantiate_from_hydra_config():
    assert isinstance(instantiate({"_target_": "lit_rlhf.losses.reward.BradleyTerryLoss"}), BradleyTerryLoss)
    assert instantiate({"_target_": "lit_rlhf.losses.reward.MarginLoss", "scale": 2.0}).scale == 2.0
