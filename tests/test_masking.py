import pytest
import torch

from lit_rlhf.ops.masking import (
    last_true_index,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    response_mask,
)

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[True, True, False], [True, False, False]])
GARBAGE = 1e30  # NaN-free but huge: any leak through the mask would dominate the result


def with_garbage(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, values, torch.full_like(values, GARBAGE))


def test_masked_sum_and_mean_by_hand():
    # selected: 1, 2 | 4  -> sum 7, mean 7/3; per row sums 3 and 4, means 1.5 and 4
    assert masked_sum(VALUES, MASK).item() == 7.0
    torch.testing.assert_close(masked_mean(VALUES, MASK), torch.tensor(7 / 3))
    torch.testing.assert_close(masked_sum(VALUES, MASK, dim=1), torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(masked_mean(VALUES, MASK, dim=1), torch.tensor([1.5, 4.0]))


def test_float_mask_equals_bool_mask():
    float_mask = MASK.float()
    torch.testing.assert_close(masked_mean(VALUES, float_mask), masked_mean(VALUES, MASK))
    torch.testing.assert_close(masked_var(VALUES, float_mask), masked_var(VALUES, MASK))
    torch.testing.assert_close(masked_whiten(VALUES, float_mask), masked_whiten(VALUES, MASK))


def test_masked_var_by_hand():
    # selected 1, 2, 4: mean 7/3, squared deviations 16/9 + 1/9 + 25/9 = 14/3
    # unbiased: 14/3 / 2 = 7/3; biased: 14/3 / 3 = 14/9
    torch.testing.assert_close(masked_var(VALUES, MASK), torch.tensor(7 / 3))
    torch.testing.assert_close(masked_var(VALUES, MASK, unbiased=False), torch.tensor(14 / 9))
    torch.testing.assert_close(masked_var(VALUES, MASK), torch.tensor([1.0, 2.0, 4.0]).var())


def test_masked_var_needs_enough_entries():
    one = torch.tensor([[True, False, False], [False, False, False]])
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(VALUES, one)
    assert masked_var(VALUES, one, unbiased=False).item() == 0.0
    with pytest.raises(ValueError, match="at least 1"):
        masked_var(VALUES, torch.zeros_like(MASK), unbiased=False)


def test_masked_whiten_by_hand():
    # selected 1, 2, 4: mean 7/3, unbiased std sqrt(7/3)
    whitened = masked_whiten(VALUES, MASK)
    expected_selected = (torch.tensor([1.0, 2.0, 4.0]) - 7 / 3) / (7 / 3) ** 0.5
    torch.testing.assert_close(whitened[MASK], expected_selected)
    assert (whitened[~MASK] == 0).all()
    torch.testing.assert_close(masked_mean(whitened, MASK), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(masked_var(whitened, MASK), torch.tensor(1.0))


def test_masked_whiten_keeps_mean_without_shift():
    whitened = masked_whiten(VALUES, MASK, shift_mean=False)
    torch.testing.assert_close(masked_mean(whitened, MASK), torch.tensor(7 / 3))
    torch.testing.assert_close(masked_var(whitened, MASK), torch.tensor(1.0))


def test_masked_whiten_single_entry_has_nothing_to_scale():
    one = torch.tensor([[False, True, False], [False, False, False]])
    assert torch.equal(masked_whiten(VALUES, one), torch.zeros_like(VALUES))
    kept = masked_whiten(VALUES, one, shift_mean=False)
    torch.testing.assert_close(kept[0, 1], torch.tensor(2.0))  # (2 - 2) / sqrt(0 + eps) + 2


@pytest.mark.parametrize("fn", [masked_sum, masked_mean])
def test_reductions_ignore_masked_out_garbage(fn):
    noisy = with_garbage(VALUES, MASK)
    torch.testing.assert_close(fn(noisy, MASK), fn(VALUES, MASK))
    torch.testing.assert_close(fn(noisy, MASK, dim=1), fn(VALUES, MASK, dim=1))


def test_var_and_whiten_ignore_masked_out_garbage():
    values = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    noisy = with_garbage(values, mask)
    torch.testing.assert_close(masked_var(noisy, mask), masked_var(values, mask))
    torch.testing.assert_close(masked_whiten(noisy, mask), masked_whiten(values, mask))


def test_infinite_garbage_does_not_leak():
    # Selecting with torch.where (not multiplying by the mask) keeps 0 * inf = NaN out.
    noisy = torch.where(MASK, VALUES, torch.full_like(VALUES, float("inf")))
    assert masked_sum(noisy, MASK).item() == 7.0


def test_response_mask_by_hand():
    ids = torch.tensor(
        [
            [5, 2, 7, 2],  # stop at 1: keep 0..1, later stop tokens are padding
            [5, 6, 7, 8],  # no stop: truncated, keep everything
            [2, 0, 0, 0],  # stop first: keep only the stop token
        ]
    )
    mask, has_stop = response_mask(ids, stop_token_ids=[2])
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    assert torch.equal(has_stop, torch.tensor([True, False, True]))


def test_response_mask_several_stop_ids_and_none():
    ids = torch.tensor([[5, 9, 2, 0], [5, 6, 2, 9]])
    mask, has_stop = response_mask(ids, stop_token_ids=(2, 9))
    assert torch.equal(mask, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool))
    assert has_stop.all()
    mask, has_stop = response_mask(ids, stop_token_ids=[])
    assert mask.all() and not has_stop.any()


def test_last_true_index():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0]], dtype=torch.bool)
    assert torch.equal(last_true_index(mask), torch.tensor([1, 2, 0, 1]))
    assert torch.equal(last_true_index(mask.float()), torch.tensor([1, 2, 0, 1]))


def test_last_true_index_rejects_empty_row():
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        last_true_index(torch.tensor([[1, 0], [0, 0]], dtype=torch.bool))
