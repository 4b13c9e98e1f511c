"""How a (B, T) per-token loss becomes the scalar that is backpropagated: the `loss_aggregation` group.

The choice decides how much each token and each response weighs, so it changes the gradient, not
only its scale, once responses differ in length. With a mask m and |o_i| = Σ_t m_it:

- token_mean               Σ_it m·l / Σ_it m         every token of the batch counts the same (DAPO);
- seq_mean_token_mean      1/B Σ_i (Σ_t m·l / |o_i|)  every response counts the same (GRPO's 1/|o_i|);
- seq_mean_token_sum       1/B Σ_i Σ_t m·l            a response counts by its length;
- seq_mean_token_sum_norm  1/(B·L) Σ_i Σ_t m·l        Dr. GRPO's constant normaliser L (the generation
                                                      budget), so no length bias (Liu et al. 2025,
                                                      "Understanding R1-Zero-Like Training").

Each is a sum over rows divided by a normaliser of the whole minibatch, so a minibatch split into
micro-batches gives the same loss as Σ_micro aggregate(micro)·share(micro): `share` is the micro-batch's
part of the normaliser (its tokens for token_mean, its rows for the others). `count` is that quantity,
which data-parallel ranks sum to weigh their losses (`ops.distributed.rank_share`).
"""

from __future__ import annotations

from torch import Tensor

from lit_rlhf.ops.masking import masked_mean, masked_sum


def token_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Σ m·l / Σ m over the whole batch. (B, T) -> scalar."""
    return masked_mean(values, mask)


def seq_mean_token_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over responses of each response's token mean (Shao et al. 2024, GRPO). (B, T) -> scalar.

    A response with no real token contributes 0 (its length is clamped to 1).
    """
    lengths = mask.sum(dim=1).clamp(min=1).to(values.dtype)
    return (masked_sum(values, mask, dim=1) / lengths).mean()


def seq_mean_token_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over responses of each response's token sum. (B, T) -> scalar."""
    return masked_sum(values, mask, dim=1).mean()


def seq_mean_token_sum_norm(values: Tensor, mask: Tensor, normalizer: float) -> Tensor:
    """Σ_i Σ_t m·l / (B · L) with a constant L (Liu et al. 2025, Dr. GRPO). (B, T) -> scalar."""
    return masked_sum(values, mask, dim=1).sum() / (values.shape[0] * normalizer)


def token_count(mask: Tensor) -> float:
    """The normaliser of token_mean: the real tokens."""
    return float(mask.sum())


def row_count(mask: Tensor) -> float:
    """The normaliser of the per-response aggregations: the rows."""
    return float(mask.shape[0])


def token_share(mask: Tensor, whole_mask: Tensor) -> float:
    """The micro-batch's part of the whole minibatch's real tokens."""
    return float(mask.sum()) / float(whole_mask.sum())


def row_share(mask: Tensor, whole_mask: Tensor) -> float:
    """The micro-batch's part of the whole minibatch's responses."""
    return mask.shape[0] / whole_mask.shape[0]


class TokenMean:
    """Every real token of the minibatch weighs the same (the default; DAPO's token-level loss)."""

    share = staticmethod(token_share)
    count = staticmethod(token_count)

    def __call__(self, values: Tensor, mask: Tensor) -> Tensor:
        return token_mean(values, mask)


class SeqMeanTokenMean:
    """Every response weighs the same, its tokens averaged (GRPO, Shao et al. 2024)."""

    share = staticmethod(row_share)
    count = staticmethod(row_count)

    def __call__(self, values: Tensor, mask: Tensor) -> Tensor:
        return seq_mean_token_mean(values, mask)


class SeqMeanTokenSum:
    """Each response's tokens summed, then averaged over responses."""

    share = staticmethod(row_share)
    count = staticmethod(row_count)

    def __call__(self, values: Tensor, mask: Tensor) -> Tensor:
        return seq_mean_token_sum(values, mask)


class SeqMeanTokenSumNorm:
    """Token sums divided by a constant L, not by the length (Dr. GRPO, Liu et al. 2025).

    Args:
        normalizer: L > 0, usually the generation budget (max_new_tokens).
    """

    share = staticmethod(row_share)
    count = staticmethod(row_count)

    def __init__(self, normalizer: float):
        if not normalizer > 0:
            raise ValueError(f"SeqMeanTokenSumNorm: normalizer must be > 0, got {normalizer}")
        self.normalizer = float(normalizer)

    def __call__(self, values: Tensor, mask: Tensor) -> Tensor:
        return seq_mean_token_sum_norm(values, mask, self.normalizer)
