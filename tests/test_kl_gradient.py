"""The gradient each `regularizer.kl.gradient` choice gives, against exact KL gradients on a categorical policy.

A 6-token policy π_θ = softmax(θ) and a fixed π_ref; tokens are sampled from π_old. The exact
∇KL(π_θ ‖ π_ref) (reverse, what GRPO's β should bound) and ∇KL(π_ref ‖ π_θ) (forward) come from
autograd on the closed forms. The loss gradient of each choice is taken two ways, both through
`kl_loss_values`: its exact expectation Σ_y π_old(y)·∇loss(y), and a Monte Carlo mean over sampled
tokens, compared within 5 standard errors (Tang & Munos 2025, arXiv 2506.09477; Liu et al. 2025,
arXiv 2510.01555).
"""

from __future__ import annotations

import pytest
import torch

from lit_rlhf.ops.aggregation import token_mean
from lit_rlhf.regularizers.kl.estimators import kl_k1, kl_k2, kl_k3
from lit_rlhf.regularizers.kl.gradient import kl_loss_values

VOCAB = 6
ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def policies(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(VOCAB, generator=generator, dtype=torch.float64)
    ref_log_probs = torch.log_softmax(torch.randn(VOCAB, generator=generator, dtype=torch.float64), 0)
    # π_old: a slightly different policy, for the off-policy case (a later PPO minibatch).
    old_theta = theta + 0.5 * torch.randn(VOCAB, generator=generator, dtype=torch.float64)
    return theta, ref_log_probs, old_theta


def exact_kl_gradients(theta: torch.Tensor, ref_log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∇θ KL(π ‖ π_ref), ∇θ KL(π_ref ‖ π)) from the closed forms."""
    theta = theta.clone().requires_grad_(True)
    log_p = torch.log_softmax(theta, 0)
    reverse = (log_p.exp() * (log_p - ref_log_probs)).sum()
    (reverse_grad,) = torch.autograd.grad(reverse, theta)
    theta = theta.detach().clone().requires_grad_(True)
    forward = (ref_log_probs.exp() * (ref_log_probs - torch.log_softmax(theta, 0))).sum()
    (forward_grad,) = torch.autograd.grad(forward, theta)
    return reverse_grad, forward_grad


def loss_gradient(tokens, theta, ref_log_probs, old_log_probs, estimator, gradient):
    """∇θ of the token mean of the KL term over `tokens` (1-D), through the module's code path."""
    theta = theta.clone().requires_grad_(True)
    logprobs = torch.log_softmax(theta, 0)[tokens].unsqueeze(0)  # (1, N)
    ref, old = ref_log_probs[tokens].unsqueeze(0), old_log_probs[tokens].unsqueeze(0)
    mask = torch.ones_like(logprobs, dtype=torch.bool)
    values = ESTIMATORS[estimator](logprobs, ref)
    loss = token_mean(kl_loss_values(values, logprobs, ref, old, mask, gradient), mask)
    (grad,) = torch.autograd.grad(loss, theta)
    return grad


def expected_gradient(theta, ref_log_probs, old_log_probs, estimator, gradient):
    """Σ_y π_old(y) ∇loss(y): the exact mean of the sampled gradient."""
    per_token = torch.stack(
        [
            loss_gradient(torch.tensor([y]), theta, ref_log_probs, old_log_probs, estimator, gradient)
            for y in range(VOCAB)
        ]
    )
    return (old_log_probs.exp().unsqueeze(1) * per_token).sum(0)


def monte_carlo_gradient(theta, ref_log_probs, old_log_probs, estimator, gradient, batches=20, per_batch=20_000):
    """Mean and standard error of the gradient over `batches` independent batches of sampled tokens."""
    generator = torch.Generator().manual_seed(1)
    probs = old_log_probs.exp()
    grads = torch.stack(
        [
            loss_gradient(
                torch.multinomial(probs, per_batch, replacement=True, generator=generator),
                theta,
                ref_log_probs,
                old_log_probs,
                estimator,
                gradient,
            )
            for _ in range(batches)
        ]
    )
    return grads.mean(0), grads.std(0) / batches**0.5


# (estimator, gradient, π_old == π?) -> which exact gradient the loss's expected gradient equals.
CASES = [
    ("k1", "naive", True, "zero"),
    ("k3", "naive", True, "forward"),
    ("k2", "naive", True, "reverse"),
    ("k3", "straight_through", True, "reverse"),
    ("k1", "straight_through", True, "reverse"),
    ("k3", "importance_weighted", True, "reverse"),
    ("k1", "importance_weighted", True, "reverse"),
    ("k3", "importance_weighted", False, "reverse"),
    ("k1", "importance_weighted", False, "reverse"),
]


@pytest.mark.parametrize(("estimator", "gradient", "on_policy", "target"), CASES)
def test_expected_and_sampled_gradients_match_the_exact_kl_gradient(estimator, gradient, on_policy, target):
    theta, ref_log_probs, old_theta = policies()
    old_log_probs = torch.log_softmax(theta if on_policy else old_theta, 0)
    reverse, forward = exact_kl_gradients(theta, ref_log_probs)
    wanted = {"reverse": reverse, "forward": forward, "zero": torch.zeros_like(reverse)}[target]

    expected = expected_gradient(theta, ref_log_probs, old_log_probs, estimator, gradient)
    torch.testing.assert_close(expected, wanted, rtol=1e-9, atol=1e-12)
    sampled, standard_error = monte_carlo_gradient(theta, ref_log_probs, old_log_probs, estimator, gradient)
    assert ((sampled - wanted).abs() <= 5 * standard_error + 1e-12).all(), (sampled, wanted, standard_error)


def test_naive_k3_is_not_the_reverse_kl_gradient_and_off_policy_needs_the_weight():
    """The cases above would pass with the choices swapped only if these gradients coincided; they do not."""
    theta, ref_log_probs, old_theta = policies()
    on, off = torch.log_softmax(theta, 0), torch.log_softmax(old_theta, 0)
    reverse, forward = exact_kl_gradients(theta, ref_log_probs)
    assert (reverse - forward).norm() > 0.1 * reverse.norm()
    naive_k3 = expected_gradient(theta, ref_log_probs, on, "k3", "naive")
    assert (naive_k3 - reverse).norm() > 0.1 * reverse.norm()
    # Off-policy, k2's gradient without the importance weight is biased; with it, it is not.
    straight = expected_gradient(theta, ref_log_probs, off, "k3", "straight_through")
    assert (straight - reverse).norm() > 0.05 * reverse.norm()
    sampled, standard_error = monte_carlo_gradient(theta, ref_log_probs, off, "k3", "straight_through")
    assert ((sampled - reverse).abs() > 5 * standard_error).any()


def test_the_value_of_straight_through_is_the_estimator_value():
    logprobs = torch.tensor([[-0.3, -2.0]], requires_grad=True)
    ref, mask = torch.tensor([[-1.0, -1.5]]), torch.ones(1, 2, dtype=torch.bool)
    values = kl_k3(logprobs, ref)
    straight = kl_loss_values(values, logprobs, ref, logprobs.detach(), mask, "straight_through")
    torch.testing.assert_close(straight, values)
    # Its gradient is k2's: (log π - log π_ref) per token = [0.7, -0.5].
    (grad,) = torch.autograd.grad(straight.sum(), logprobs)
    torch.testing.assert_close(grad, torch.tensor([[0.7, -0.5]]))


def test_importance_weight_is_one_on_padding_and_differentiable():
    logprobs = torch.tensor([[-0.5, 50.0]], requires_grad=True)  # garbage after the stop token
    old, ref = torch.tensor([[-1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])
    mask = torch.tensor([[True, False]])
    values = kl_k1(logprobs, ref)
    weighted = kl_loss_values(values, logprobs, ref, old, mask, "importance_weighted")
    # ρ = e^{0.5} on the real token; 1 on padding, so no overflow
    torch.testing.assert_close(weighted.detach(), torch.tensor([[0.5 * torch.e**0.5, 50.0]]))
    (grad,) = torch.autograd.grad(weighted[0, 0], logprobs)
    # d(ρ·x)/d log π = ρ·x + ρ = e^{0.5}·1.5
    torch.testing.assert_close(grad, torch.tensor([[1.5 * torch.e**0.5, 0.0]]))
