"""PPO-Penalty's adaptive rule and the trust region's loss, by hand (Schulman et al. 2017 §3-4)."""

import math

import pytest
import torch

from lit_rlhf.errors import ConfigError
from lit_rlhf.losses.ppo import clipped_policy_loss
from lit_rlhf.ops.aggregation import TokenMean
from lit_rlhf.rl.trust_region import AdaptiveOldPolicyKL, RatioClip, TrustRegion

RATIOS = [1.1, 1.5, 0.5]
ADVANTAGES = torch.tensor([[1.0, 1.0, -1.0]])
MASK = torch.ones(1, 3, dtype=torch.bool)
OLD = torch.zeros(1, 3)


def logprobs():
    return torch.tensor([[math.log(r) for r in RATIOS]], requires_grad=True)


def penalty(coef=1.0):
    return AdaptiveOldPolicyKL(coef=coef, target=0.01, tolerance=1.5, factor=2.0)


def test_adaptive_rule_halves_doubles_or_keeps():
    rule = penalty(coef=1.0)
    rule.update(0.001)  # < 0.01 / 1.5: halve
    assert rule.value == 0.5
    rule.update(0.1)  # > 0.01 · 1.5: double
    assert rule.value == 1.0
    rule.update(0.012)  # inside [0.0067, 0.015]: keep
    assert rule.value == 1.0
    restored = penalty(coef=7.0)
    restored.load_state_dict(rule.state_dict())
    assert restored.value == 1.0


def test_kl_penalty_loss_is_the_unclipped_surrogate_plus_beta_kl():
    region = TrustRegion(ratio="token", clip=None, kl_penalty=penalty(coef=2.0))
    loss, metrics = region.policy_loss(logprobs(), OLD, ADVANTAGES, MASK, TokenMean())
    # -A·ρ: -1.1, -1.5, +0.5 -> mean -0.7; KL(π_old‖π) per token (ρ-1) - ln ρ, mean over 3
    kl = sum((r - 1) - math.log(r) for r in RATIOS) / 3
    torch.testing.assert_close(loss, torch.tensor(-0.7 + 2.0 * kl))
    torch.testing.assert_close(metrics["approx_kl"], torch.tensor(kl))
    assert metrics["clipfrac"] == 0 and float(metrics["trust_region_kl_coef"]) == 2.0


def test_clip_and_kl_penalty_adds_the_penalty_to_the_clipped_loss():
    clip = RatioClip(eps_low=0.2, eps_high=0.2, dual_clip=None)
    both = TrustRegion(ratio="token", clip=clip, kl_penalty=penalty(coef=0.5))
    clip_only = TrustRegion(ratio="token", clip=clip, kl_penalty=None)
    kl = sum((r - 1) - math.log(r) for r in RATIOS) / 3
    loss_both, _ = both.policy_loss(logprobs(), OLD, ADVANTAGES, MASK, TokenMean())
    loss_clip, _ = clip_only.policy_loss(logprobs(), OLD, ADVANTAGES, MASK, TokenMean())
    torch.testing.assert_close(loss_clip, clipped_policy_loss(logprobs(), OLD, ADVANTAGES, MASK, 0.2))
    torch.testing.assert_close(loss_both, loss_clip + 0.5 * kl)


def test_mismatch_weights_multiply_the_clipped_surrogate_but_not_the_penalty():
    clip = RatioClip(eps_low=0.2, eps_high=0.2, dual_clip=None)
    weights = torch.tensor([[1.0, 0.5, 2.0]])  # e.g. TIS's min(π_old/μ, C) per token
    clip_only = TrustRegion(ratio="token", clip=clip, kl_penalty=None)
    loss, metrics = clip_only.policy_loss(logprobs(), OLD, ADVANTAGES, MASK, TokenMean(), mismatch_weights=weights)
    # Clipped per token: ρ=1.1, A=1 -> -1.1; ρ=1.5, A=1 -> -min(1.5, 1.2) = -1.2; ρ=0.5, A=-1 -> -min(-0.5, -0.8)
    # = 0.8. Weighted: -1.1·1 - 1.2·0.5 + 0.8·2 = -0.1, token mean -0.1/3 (unweighted: -1.5/3).
    torch.testing.assert_close(loss, torch.tensor(-0.1 / 3))
    assert float(metrics["clipfrac"]) == pytest.approx(2 / 3)  # the clip is measured before the weights
    both = TrustRegion(ratio="token", clip=clip, kl_penalty=penalty(coef=0.5))
    loss_both, _ = both.policy_loss(logprobs(), OLD, ADVANTAGES, MASK, TokenMean(), mismatch_weights=weights)
    kl = sum((r - 1) - math.log(r) for r in RATIOS) / 3  # the old-policy KL, not weighted
    torch.testing.assert_close(loss_both, torch.tensor(-0.1 / 3 + 0.5 * kl))


def test_sequence_ratio_changes_the_clipped_loss():
    clip = RatioClip(eps_low=0.2, eps_high=0.2, dual_clip=None)
    token, _ = TrustRegion("token", clip, None).policy_loss(logprobs(), OLD, ADVANTAGES, MASK, TokenMean())
    sequence, _ = TrustRegion("sequence", clip, None).policy_loss(logprobs(), OLD, ADVANTAGES, MASK, TokenMean())
    # s = exp(mean log ρ) = (1.1 · 1.5 · 0.5)^(1/3) = 0.9378, inside the clip range on every token:
    # loss = -(1 + 1 - 1)·s / 3
    s = (1.1 * 1.5 * 0.5) ** (1 / 3)
    torch.testing.assert_close(sequence, torch.tensor(-s / 3))
    assert not torch.isclose(token, sequence)


@pytest.mark.parametrize(
    "build",
    [
        lambda: RatioClip(eps_low=0.0, eps_high=0.2, dual_clip=None),
        lambda: RatioClip(eps_low=0.2, eps_high=0.2, dual_clip=0.9),
        lambda: TrustRegion(ratio="tokens", clip=RatioClip(0.2, 0.2, None), kl_penalty=None),
        lambda: TrustRegion(ratio="token", clip=None, kl_penalty=None),
        lambda: AdaptiveOldPolicyKL(coef=1.0, target=0.01, tolerance=1.0, factor=2.0),
    ],
)
def test_bad_settings_are_refused(build):
    with pytest.raises(ConfigError):
        build()
