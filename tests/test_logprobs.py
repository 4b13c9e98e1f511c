import math

import torch
from torch.distributions import Categorical

from lit_rlhf.ops.logprobs import entropy_from_logits, token_logprobs


def reference_token_logprobs(logits, labels):
    return torch.log_softmax(logits.double(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def test_token_logprobs_by_hand():
    # logits (0, ln 3) -> probabilities (1/4, 3/4)
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])  # (1, 2, 2)
    labels = torch.tensor([[1, 0]])
    torch.testing.assert_close(token_logprobs(logits, labels), torch.tensor([[math.log(0.75), math.log(0.25)]]))


def test_token_logprobs_matches_log_softmax_gather():
    generator = torch.Generator().manual_seed(0)
    logits = 5 * torch.randn(3, 4, 11, generator=generator)
    labels = torch.randint(0, 11, (3, 4), generator=generator)
    result = token_logprobs(logits, labels)
    assert result.shape == (3, 4) and result.dtype == torch.float32
    torch.testing.assert_close(result, reference_token_logprobs(logits, labels).float())


def test_token_logprobs_gradient_matches_log_softmax():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 7, generator=generator, requires_grad=True)
    labels = torch.randint(0, 7, (2, 3), generator=generator)
    (grad,) = torch.autograd.grad(token_logprobs(logits, labels).sum(), logits)
    (expected,) = torch.autograd.grad(reference_token_logprobs(logits, labels).sum(), logits)
    torch.testing.assert_close(grad, expected.float())


def test_token_logprobs_upcasts_bfloat16():
    generator = torch.Generator().manual_seed(2)
    logits = (3 * torch.randn(2, 5, 1000, generator=generator)).bfloat16()
    labels = torch.randint(0, 1000, (2, 5), generator=generator)
    result = token_logprobs(logits, labels)
    assert result.dtype == torch.float32
    # Exact up to float32 rounding, because the bf16 logits themselves are the input.
    torch.testing.assert_close(result, reference_token_logprobs(logits, labels).float())


def test_entropy_matches_categorical():
    logits = 4 * torch.randn(3, 5, 9, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(entropy_from_logits(logits), Categorical(logits=logits).entropy())


def test_entropy_by_hand():
    # uniform over 4 -> ln 4; one-hot (others -inf) -> 0 and no NaN
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, -math.inf, -math.inf, -math.inf]]])
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([[math.log(4.0), 0.0]]))
