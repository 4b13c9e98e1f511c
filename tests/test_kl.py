import math

import pytest
import torch
from hydra.utils import instantiate
from torch.distributions import Categorical, kl_divergence

from lit_rlhf.regularizers.kl.estimators import (
    AbsEstimator,
    FullEstimator,
    K1Estimator,
    K2Estimator,
    K3Estimator,
    kl_abs,
    kl_full,
    kl_k1,
    kl_k2,
    kl_k3,
)

# Two sampled tokens: π = 0.75 vs π_ref = 0.40 (seed 004's "you"), and π = 0.2 vs π_ref = 0.5.
LOGPROBS = torch.tensor([[math.log(0.75), math.log(0.2)]])
REF_LOGPROBS = torch.tensor([[math.log(0.40), math.log(0.5)]])
X = [math.log(0.75 / 0.40), math.log(0.2 / 0.5)]  # [0.6286, -0.9163]


def test_k1_by_hand_and_can_be_negative():
    result = kl_k1(LOGPROBS, REF_LOGPROBS)
    torch.testing.assert_close(result, torch.tensor([X]))
    assert result[0, 1] < 0


def test_abs_by_hand():
    torch.testing.assert_close(kl_abs(LOGPROBS, REF_LOGPROBS), torch.tensor([[0.6286087, 0.9162907]]))


def test_k2_by_hand():
    # ½ · 0.6286² = 0.19757, ½ · 0.9163² = 0.41980
    torch.testing.assert_close(kl_k2(LOGPROBS, REF_LOGPROBS), torch.tensor([[0.5 * X[0] ** 2, 0.5 * X[1] ** 2]]))


def test_k3_by_hand():
    # π_ref/π - 1 - log(π_ref/π):  0.4/0.75 - 1 + 0.6286 = 0.16194;  0.5/0.2 - 1 - 0.9163 = 0.58371
    expected = torch.tensor([[0.4 / 0.75 - 1 + X[0], 0.5 / 0.2 - 1 + X[1]]])
    torch.testing.assert_close(kl_k3(LOGPROBS, REF_LOGPROBS), expected)


def test_k3_is_never_negative():
    log_ratio = torch.linspace(-10, 10, 201)
    assert (kl_k3(log_ratio, torch.zeros_like(log_ratio)) >= 0).all()
    assert kl_k3(torch.tensor(0.3), torch.tensor(0.3)) == 0


def test_kl_full_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    logits, ref_logits = 3 * torch.randn(2, 2, 4, 13, generator=generator)
    expected = kl_divergence(Categorical(logits=logits), Categorical(logits=ref_logits))
    torch.testing.assert_close(kl_full(logits, ref_logits), expected)


def test_kl_full_with_banned_tokens_is_finite():
    logits = torch.tensor([[[0.0, 0.0, -math.inf]]])  # π = (½, ½, 0)
    ref_logits = torch.tensor([[[0.0, 0.0, 0.0]]])  # π_ref = (⅓, ⅓, ⅓)
    # KL = 2 · ½ · ln(½ / ⅓) = ln 1.5
    torch.testing.assert_close(kl_full(logits, ref_logits), torch.tensor([[math.log(1.5)]]))


def test_sampled_estimators_approach_exact_kl():
    """k1 and k3 are unbiased for tokens drawn from π, so their sample means converge to KL(π‖π_ref).

    Tolerance: by the central limit theorem the sample mean of N draws is off by
    about std/√N; 5 of those standard errors makes a failure a < 1e-6 event for
    any seed, and the fixed seed makes the test deterministic. The assert on the
    tolerance itself keeps the test sharp: < 0.02 nats, about 3% of this KL.
    """
    generator = torch.Generator().manual_seed(1234)
    policy = Categorical(logits=torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5]))
    reference = Categorical(logits=torch.tensor([0.0, 0.5, 1.0, 0.0, 0.0]))
    exact = kl_divergence(policy, reference).item()  # ≈ 0.61 nats

    samples = torch.multinomial(policy.probs, 200_000, replacement=True, generator=generator)
    logprobs, ref_logprobs = policy.logits[samples], reference.logits[samples]
    spread = {}
    for estimator in (kl_k1, kl_k3):
        per_token = estimator(logprobs, ref_logprobs)
        spread[estimator] = per_token.std().item()
        tolerance = 5 * spread[estimator] / math.sqrt(len(samples))
        assert tolerance < 0.02
        assert abs(per_token.mean().item() - exact) < tolerance, estimator.__name__
    # Why k3 is preferred when π is close to π_ref: same mean, less variance (≈ 0.64 vs 1.01 here).
    assert spread[kl_k3] < spread[kl_k1]


@pytest.mark.parametrize(
    ("estimator", "function"),
    [(K1Estimator(), kl_k1), (AbsEstimator(), kl_abs), (K2Estimator(), kl_k2), (K3Estimator(clamp=None), kl_k3)],
)
def test_sampled_estimator_classes_call_their_function(estimator, function):
    assert estimator.needs_logits is False
    torch.testing.assert_close(estimator(LOGPROBS, REF_LOGPROBS), function(LOGPROBS, REF_LOGPROBS))


def test_full_estimator_needs_logits():
    estimator = FullEstimator()
    assert estimator.needs_logits is True
    with pytest.raises(ValueError, match="logits"):
        estimator(LOGPROBS, REF_LOGPROBS)
    logits, ref_logits = torch.randn(2, 1, 2, 5, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(estimator(LOGPROBS, REF_LOGPROBS, logits, ref_logits), kl_full(logits, ref_logits))


@pytest.mark.parametrize("name", ["K1Estimator", "AbsEstimator", "K2Estimator", "K3Estimator", "FullEstimator"])
def test_estimators_instantiate_from_hydra_config(name):
    options = {"clamp": None} if name == "K3Estimator" else {}
    estimator = instantiate({"_target_": f"lit_rlhf.regularizers.kl.estimators.{name}", **options})
    assert type(estimator).__name__ == name


def test_kl_in_score_puts_the_sequence_penalty_on_the_last_token():
    from lit_rlhf.regularizers.kl.controllers import FixedKLController
    from lit_rlhf.regularizers.kl.penalty import KLInReward, KLInScore

    # Per-token KL 0.2, 0.3, 0.5 on a 3-token response, 0.4 on a 1-token one; β = 0.5.
    per_token_kl = torch.tensor([[0.2, 0.3, 0.5], [0.4, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    in_score = KLInScore(K1Estimator(), FixedKLController, coef=0.5)
    torch.testing.assert_close(
        in_score.reward_penalty(per_token_kl, mask), torch.tensor([[0.0, 0.0, 0.5], [0.2, 0.0, 0.0]])
    )
    # Same total per response as the per-token placement; different placement in time.
    in_reward = KLInReward(K1Estimator(), FixedKLController, coef=0.5).reward_penalty(per_token_kl, mask)
    torch.testing.assert_close(in_reward.sum(1), in_score.reward_penalty(per_token_kl, mask).sum(1))
    assert not torch.equal(in_reward, in_score.reward_penalty(per_token_kl, mask))
