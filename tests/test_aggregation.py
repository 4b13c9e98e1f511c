"""The four loss aggregations on a ragged mask, computed by hand."""

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

from lit_rlhf.ops.aggregation import seq_mean_token_mean, seq_mean_token_sum, seq_mean_token_sum_norm, token_mean

# Row 0: 3 real tokens 1, 2, 3; row 1: 1 real token 6 (then padding holding garbage).
VALUES = torch.tensor([[1.0, 2.0, 3.0], [6.0, 1e6, -1e6]])
MASK = torch.tensor([[True, True, True], [True, False, False]])


def test_token_mean():
    # (1 + 2 + 3 + 6) / 4 = 3
    torch.testing.assert_close(token_mean(VALUES, MASK), torch.tensor(3.0))


def test_seq_mean_token_mean():
    # ((1 + 2 + 3) / 3 + 6 / 1) / 2 = (2 + 6) / 2 = 4
    torch.testing.assert_close(seq_mean_token_mean(VALUES, MASK), torch.tensor(4.0))


def test_seq_mean_token_sum():
    # (6 + 6) / 2 = 6
    torch.testing.assert_close(seq_mean_token_sum(VALUES, MASK), torch.tensor(6.0))


def test_seq_mean_token_sum_norm():
    # (6 + 6) / (2 rows · L = 4) = 1.5
    torch.testing.assert_close(seq_mean_token_sum_norm(VALUES, MASK, 4.0), torch.tensor(1.5))


def test_a_response_without_tokens_counts_zero_not_nan():
    mask = torch.tensor([[True, True, True], [False, False, False]])
    # (2 + 0) / 2 = 1
    torch.testing.assert_close(seq_mean_token_mean(VALUES, mask), torch.tensor(1.0))


def test_gradients_weigh_tokens_differently():
    values = VALUES.clone().requires_grad_(True)
    seq_mean_token_mean(values, MASK).backward()
    # row 0's tokens: 1/(2·3); row 1's token: 1/(2·1); padding: 0
    torch.testing.assert_close(values.grad, torch.tensor([[1 / 6, 1 / 6, 1 / 6], [0.5, 0.0, 0.0]]))


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("token_mean", 3.0), ("seq_mean_token_mean", 4.0), ("seq_mean_token_sum", 6.0), ("seq_mean_token_sum_norm", 0.15)],
)
def test_each_config_choice_builds_its_aggregation(tmp_path, choice, expected):
    # seq_mean_token_sum_norm's L is the generation budget, module.sampling.max_new_tokens = 40: 12 / 80 = 0.15
    cfg = compose_config("grpo", tmp_path, [f"loss_aggregation={choice}"])
    aggregate = instantiate(cfg.loss_aggregation)
    torch.testing.assert_close(aggregate(VALUES, MASK), torch.tensor(expected))
