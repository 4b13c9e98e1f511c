import math

import pytest
import torch

from lit_rlhf.losses.ppo import (
    clipped_policy_loss,
    clipped_surrogate,
    clipped_value_loss,
    explained_variance,
    old_policy_kl,
    sequence_log_ratio,
    token_log_ratio,
)
from lit_rlhf.ops.masking import masked_mean

EPS = 0.2

# One token per region, ε = 0.2, plus one padded position (index 5) holding garbage.
#   token  A    ratio  -A·ρ   -A·clip(ρ)  max    active
#   0      +1   1.1    -1.1   -1.1        -1.1   inside the clip range
#   1      +1   1.5    -1.5   -1.2        -1.2   clipped (A > 0, ρ > 1+ε): no gradient
#   2      +1   0.5    -0.5   -0.8        -0.5   unclipped (A > 0, ρ < 1-ε)
#   3      -1   1.5    +1.5   +1.2        +1.5   unclipped (A < 0, ρ > 1+ε)
#   4      -1   0.5    +0.5   +0.8        +0.8   clipped (A < 0, ρ < 1-ε): no gradient
# loss = (-1.1 - 1.2 - 0.5 + 1.5 + 0.8) / 5 = -0.1;  clipfrac = 2/5
RATIOS = [1.1, 1.5, 0.5, 1.5, 0.5]
ADVANTAGES = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, 123.0]])
MASK = torch.tensor([[True] * 5 + [False]])


def policy_inputs():
    logprobs = torch.tensor([[math.log(r) for r in RATIOS] + [1000.0]], requires_grad=True)  # exp(1000) = inf
    old_logprobs = torch.zeros(1, 6)
    return logprobs, old_logprobs


def test_clipped_policy_loss_in_every_region():
    logprobs, old_logprobs = policy_inputs()
    torch.testing.assert_close(clipped_policy_loss(logprobs, old_logprobs, ADVANTAGES, MASK, EPS), torch.tensor(-0.1))
    ratio = torch.exp(token_log_ratio(logprobs, old_logprobs, MASK))
    clipped = clipped_surrogate(ratio, ADVANTAGES, EPS, EPS, None).clipped
    torch.testing.assert_close(masked_mean(clipped.float(), MASK), torch.tensor(0.4))


def test_clipped_policy_loss_gradient_stops_only_in_clipped_regions():
    logprobs, old_logprobs = policy_inputs()
    clipped_policy_loss(logprobs, old_logprobs, ADVANTAGES, MASK, EPS).backward()
    # d(-A·ρ)/d log π = -A·ρ, divided by the 5 real tokens; clipped tokens and padding get 0
    expected = torch.tensor([[-1.1, 0.0, -0.5, 1.5, 0.0, 0.0]]) / 5
    torch.testing.assert_close(logprobs.grad, expected)


def test_old_policy_kl_by_hand():
    logprobs, old_logprobs = policy_inputs()
    kl = old_policy_kl(token_log_ratio(logprobs, old_logprobs, MASK))
    # (ρ - 1) - ln ρ on the real tokens, 0 on padding (log-ratio zeroed there)
    expected = torch.tensor([[(r - 1) - math.log(r) for r in RATIOS] + [0.0]])
    torch.testing.assert_close(kl, expected)


def test_clipped_policy_loss_on_policy_is_minus_mean_advantage():
    # First PPO epoch: π = π_old, ρ = 1 everywhere, nothing clipped.
    advantages = torch.tensor([[2.0, -1.0, 0.5]])
    logprobs = torch.tensor([[-1.0, -2.0, -3.0]])
    loss = clipped_policy_loss(logprobs, logprobs.clone(), advantages, torch.ones(1, 3), EPS)
    torch.testing.assert_close(loss, torch.tensor(-0.5))  # -(2 - 1 + 0.5) / 3


def test_clip_higher_widens_only_the_upper_side():
    # ε_low = 0.2, ε_high = 0.6 (DAPO's clip-higher, exaggerated):
    #   token 1 (A=+1, ρ=1.5) is inside [0.8, 1.6] now: -1.5 (was clipped at -1.2)
    #   token 4 (A=-1, ρ=0.5) still clipped below at 0.8: +0.8
    logprobs, old_logprobs = policy_inputs()
    ratio = torch.exp(token_log_ratio(logprobs, old_logprobs, MASK))
    result = clipped_surrogate(ratio, ADVANTAGES, 0.2, 0.6, None)
    torch.testing.assert_close(result.loss[0, :5], torch.tensor([-1.1, -1.5, -0.5, 1.5, 0.8]))
    assert result.clipped[0, :5].tolist() == [False, False, False, False, True]


def test_dual_clip_caps_negative_advantages():
    # c = 1.3: a negative advantage's loss is at most -c·A = 1.3. Token 3 (A=-1, ρ=1.5) had 1.5 -> 1.3;
    # token 4 (0.8) and every positive-advantage token are unchanged.
    logprobs, old_logprobs = policy_inputs()
    ratio = torch.exp(token_log_ratio(logprobs, old_logprobs, MASK))
    result = clipped_surrogate(ratio, ADVANTAGES, EPS, EPS, 1.3)
    torch.testing.assert_close(result.loss[0, :5], torch.tensor([-1.1, -1.2, -0.5, 1.3, 0.8]))
    assert result.clipped[0, :5].tolist() == [False, True, False, True, True]


def test_sequence_log_ratio_is_the_length_normalised_ratio_with_token_gradients():
    # Row 0: log-ratios 0.3, -0.1, 0.4 -> mean 0.2 on every real token; row 1: one token 0.5, then padding.
    old = torch.zeros(2, 3)
    logprobs = torch.tensor([[0.3, -0.1, 0.4], [0.5, 7.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    log_ratio = sequence_log_ratio(logprobs, old, mask)
    torch.testing.assert_close(log_ratio, torch.tensor([[0.2, 0.2, 0.2], [0.5, 0.0, 0.0]]))
    # GSPO-token: ∂ s_{i,t} / ∂ log π_t = s_i, and nothing flows to the other tokens.
    torch.exp(log_ratio)[0, 1].backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, math.exp(0.2), 0.0], [0.0, 0.0, 0.0]]))


def test_clipped_value_loss_by_hand():
    # ε = 0.2, V_old = 0, one padded position with garbage
    #   V     V_clip  R   (V-R)²  (V_clip-R)²  max    clipped active?
    #   0.1   0.1     0   0.01    0.01         0.01   no
    #   0.5   0.2     1   0.25    0.64         0.64   yes
    #   0.5   0.2     0   0.25    0.04         0.25   no
    #  -0.5  -0.2     0   0.25    0.04         0.25   no
    # loss = ½ · (0.01 + 0.64 + 0.25 + 0.25) / 4 = 0.14375; clipfrac = 1/4
    values = torch.tensor([[0.1, 0.5, 0.5, -0.5, 1e6]], requires_grad=True)
    returns = torch.tensor([[0.0, 1.0, 0.0, 0.0, -1e6]])
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    result = clipped_value_loss(values, torch.zeros(1, 5), returns, mask, EPS)
    torch.testing.assert_close(result.loss, torch.tensor(0.14375))
    torch.testing.assert_close(result.clipfrac, torch.tensor(0.25))
    result.loss.backward()
    # ½ · 2(V - R) / 4 on unclipped tokens; the clipped one (V_clip is constant there) gets 0
    torch.testing.assert_close(values.grad, torch.tensor([[0.025, 0.0, 0.125, -0.125, 0.0]]))


def test_explained_variance_by_hand():
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    # perfect critic -> 1; constant critic -> Var[R - c] = Var[R] -> 0
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.5), returns, mask).item() == pytest.approx(0.0)
    # residuals (0, 0, 0, 1): var 0.1875; Var[R] = 1.25 -> 1 - 0.15 = 0.85 (padding value 99 ignored)
    values = torch.tensor([[1.0, 2.0, 3.0, 3.0, 99.0]])
    assert explained_variance(values, returns, mask).item() == pytest.approx(0.85)


def test_explained_variance_is_nan_for_constant_returns():
    returns = torch.ones(1, 3)
    assert math.isnan(explained_variance(torch.zeros(1, 3), returns, torch.ones(1, 3)).item())
