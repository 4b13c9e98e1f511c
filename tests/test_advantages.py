import math

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

from lit_rlhf.ops.masking import masked_whiten
from lit_rlhf.rl.advantages import (
    GAE,
    RLOO,
    GroupRelative,
    ReinforceBaseline,
    ReMax,
    gae,
    group_relative_advantages,
    reinforce_baseline_advantages,
    rloo_advantages,
)


def naive_gae(rewards, values, lengths, gamma, lam):
    """Textbook GAE, one row at a time in plain Python: V after the last real token is 0."""
    batch, width = len(rewards), len(rewards[0])
    advantages = [[0.0] * width for _ in range(batch)]
    for row in range(batch):
        running = 0.0
        for t in reversed(range(lengths[row])):
            next_value = values[row][t + 1] if t + 1 < lengths[row] else 0.0
            delta = rewards[row][t] + gamma * next_value - values[row][t]
            running = delta + gamma * lam * running
            advantages[row][t] = running
    returns = [
        [a + (v if t < lengths[row] else 0.0) for t, (a, v) in enumerate(zip(adv_row, val_row))]
        for row, (adv_row, val_row) in enumerate(zip(advantages, values))
    ]
    return torch.tensor(advantages, dtype=torch.float64), torch.tensor(returns, dtype=torch.float64)


def test_gae_by_hand_monte_carlo():
    # γ = λ = 1: A_t = (sum of rewards from t) - V_t = 1 - V_t; returns = 1 everywhere
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.1, 0.2, 0.3]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[0.9, 0.8, 0.7]]))
    torch.testing.assert_close(returns, torch.tensor([[1.0, 1.0, 1.0]]))


def test_gae_by_hand_discounted():
    # γ = λ = 0.5, rewards (1, 2), values (0.5, 1.0):
    # δ_1 = 2 + 0.5·0 - 1 = 1                 A_1 = 1
    # δ_0 = 1 + 0.5·1 - 0.5 = 1               A_0 = 1 + 0.25·1 = 1.25
    # returns = A + V = (1.75, 2.0); the padded third position stays 0
    rewards = torch.tensor([[1.0, 2.0, 7.0]])
    values = torch.tensor([[0.5, 1.0, 9.0]])
    mask = torch.tensor([[True, True, False]])
    advantages, returns = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[1.25, 1.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[1.75, 2.0, 0.0]]))


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.8), (0.5, 0.0), (1.0, 1.0)])
def test_gae_matches_naive_loop_on_ragged_rows(gamma, lam):
    generator = torch.Generator().manual_seed(0)
    lengths = [6, 3, 1, 5]  # includes a row of length 1
    rewards = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    values = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    mask = torch.arange(6) < torch.tensor(lengths).unsqueeze(1)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    expected_advantages, expected_returns = naive_gae(rewards.tolist(), values.tolist(), lengths, gamma, lam)
    torch.testing.assert_close(advantages, expected_advantages)
    torch.testing.assert_close(returns, expected_returns)


def test_gae_ignores_masked_out_garbage():
    generator = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(2, 3, 5, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    clean = gae(rewards, values, mask, 0.9, 0.95)
    noisy = gae(rewards.masked_fill(~mask, 1e6), values.masked_fill(~mask, -1e6), mask, 0.9, 0.95)
    for a, b in zip(clean, noisy):
        torch.testing.assert_close(a, b)


def test_reinforce_baseline_by_hand():
    # mean of (1, 2, 3, 6) is 3
    torch.testing.assert_close(
        reinforce_baseline_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0])), torch.tensor([-2.0, -1.0, 0.0, 3.0])
    )


def test_rloo_by_hand():
    # group (1, 2, 3): 1 - (2+3)/2 = -1.5, 2 - (1+3)/2 = 0, 3 - (1+2)/2 = 1.5
    # group (4, 4, 4): every sample equals its baseline -> 0
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 4.0, 4.0])
    torch.testing.assert_close(rloo_advantages(scores, group_size=3), torch.tensor([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    # k = 2: each sample's baseline is the other one: (5 - 1, 1 - 5)
    torch.testing.assert_close(rloo_advantages(torch.tensor([5.0, 1.0]), group_size=2), torch.tensor([4.0, -4.0]))


def test_group_relative_by_hand():
    # group (1, 2, 3): mean 2, unbiased std 1        -> (-1, 0, 1) / (1 + eps)
    # group (0, 4, 2): mean 2, unbiased std sqrt(4) = 2 -> (-1, 1, 0)
    scores = torch.tensor([1.0, 2.0, 3.0, 0.0, 4.0, 2.0])
    expected = torch.tensor([-1.0, 0.0, 1.0, -1.0, 1.0, 0.0])
    torch.testing.assert_close(group_relative_advantages(scores, group_size=3, eps=0.0), expected)
    torch.testing.assert_close(group_relative_advantages(scores, group_size=3), expected, atol=1e-5, rtol=0)
    # scale=False (Dr. GRPO): centring only
    torch.testing.assert_close(
        group_relative_advantages(scores, group_size=3, scale=False), torch.tensor([-1.0, 0.0, 1.0, -2.0, 2.0, 0.0])
    )


def test_group_relative_identical_scores_give_zero():
    advantages = group_relative_advantages(torch.tensor([0.7, 0.7, 0.7, 0.7]), group_size=4)
    assert torch.equal(advantages, torch.zeros(4))


@pytest.mark.parametrize("fn", [rloo_advantages, group_relative_advantages])
def test_group_estimators_validate_group_size(fn):
    with pytest.raises(ValueError, match="group_size >= 2"):
        fn(torch.zeros(4), group_size=1)
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        fn(torch.zeros(4), group_size=3)


# --- Hydra estimator classes ----------------------------------------------------------------

# Two prompts × two samples. Per-token KL penalties plus the reward-model score on the last token.
TOKEN_REWARDS = torch.tensor(
    [
        [-0.1, -0.1, 2.2, 9.0],  # score 2.0
        [-0.2, 1.2, 9.0, 9.0],  # score 1.0
        [0.5, 9.0, 9.0, 9.0],  # score 0.5
        [0.0, 0.0, 0.0, 1.5],  # score 1.5
    ]
)
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)


def broadcast(sequence_advantages):
    return torch.where(MASK, torch.tensor(sequence_advantages).unsqueeze(1), 0.0)


def test_reinforce_baseline_class():
    # scores (2, 1, 0.5, 1.5), mean 1.25 -> (0.75, -0.25, -0.75, 0.25) on every real token
    estimator = ReinforceBaseline(samples_per_prompt=2, whiten=False)
    advantages, returns = estimator(TOKEN_REWARDS, None, MASK)
    assert returns is None and estimator.needs_critic is False
    torch.testing.assert_close(advantages, broadcast([0.75, -0.25, -0.75, 0.25]))


def test_rloo_class():
    # groups (2, 1) and (0.5, 1.5): k = 2 -> (1, -1) and (-1, 1)
    estimator = RLOO(samples_per_prompt=2, whiten=False)
    advantages, returns = estimator(TOKEN_REWARDS, None, MASK)
    assert returns is None and estimator.needs_critic is False and estimator.samples_per_prompt == 2
    torch.testing.assert_close(advantages, broadcast([1.0, -1.0, -1.0, 1.0]))


def test_group_relative_class():
    # groups (2, 1) and (0.5, 1.5): mean-centred ±0.5, unbiased std sqrt(0.5) -> ±0.5/0.7071 = ±0.7071
    estimator = GroupRelative(samples_per_prompt=2, eps=0.0, scale=True)
    advantages, returns = estimator(TOKEN_REWARDS, None, MASK)
    assert returns is None and estimator.needs_critic is False
    root_half = math.sqrt(0.5)
    torch.testing.assert_close(advantages, broadcast([root_half, -root_half, -root_half, root_half]))


@pytest.mark.parametrize("cls", [ReinforceBaseline, RLOO])
def test_whitened_sequence_advantages(cls):
    estimator = cls(samples_per_prompt=2, whiten=True)
    advantages, _ = estimator(TOKEN_REWARDS, None, MASK)
    raw, _ = cls(samples_per_prompt=2, whiten=False)(TOKEN_REWARDS, None, MASK)
    first_tokens = advantages[:, 0]  # one value per response
    torch.testing.assert_close(first_tokens, masked_whiten(raw[:, 0], torch.ones(4, dtype=torch.bool)))
    torch.testing.assert_close(first_tokens.std(), torch.tensor(1.0))
    assert (advantages[~MASK] == 0).all()


def test_gae_class():
    generator = torch.Generator().manual_seed(2)
    values = torch.randn(4, 4, generator=generator)
    estimator = GAE(gamma=1.0, lam=0.95, whiten=True)
    assert estimator.needs_critic is True and estimator.samples_per_prompt == 1
    advantages, returns = estimator(TOKEN_REWARDS, values, MASK)
    raw_advantages, raw_returns = gae(TOKEN_REWARDS, values, MASK, 1.0, 0.95)
    torch.testing.assert_close(returns, raw_returns)  # critic targets are not whitened
    torch.testing.assert_close(advantages, masked_whiten(raw_advantages, MASK))
    with pytest.raises(ValueError, match="critic"):
        estimator(TOKEN_REWARDS, None, MASK)


GROUP_ARGUMENTS = {RLOO: {"whiten": False}, GroupRelative: {"eps": 1e-6, "scale": True}}


@pytest.mark.parametrize("cls", [RLOO, GroupRelative])
def test_group_classes_need_two_samples(cls):
    with pytest.raises(ValueError, match="samples_per_prompt must be >= 2"):
        cls(samples_per_prompt=1, **GROUP_ARGUMENTS[cls])


@pytest.mark.parametrize(
    "choice, needs_critic", [("gae", True), ("reinforce", False), ("rloo", False), ("grpo", False)]
)
def test_advantage_choices_bring_their_critic_setting(tmp_path, choice, needs_critic):
    """`advantage=rloo` alone drops the critic: no `module.critic=null` override is needed."""
    cfg = compose_config("ppo_kl", tmp_path, [f"advantage={choice}"])
    estimator = instantiate(cfg.advantage)
    assert estimator.needs_critic is needs_critic and estimator.samples_per_prompt >= 1
    assert (cfg.module.critic is not None) is needs_critic
    assert (cfg.module.critic_optimizer is not None) is needs_critic


def test_remax_subtracts_the_greedy_score_of_each_prompt():
    # Two responses with returns 3 and -1 (score at the last token, a -0.5 penalty on row 0's first token),
    # greedy baselines 1.5 and -2: advantages 2.5 - 1.5 = 1 and -1 + 2 = 1, on every real token.
    token_rewards = torch.tensor([[-0.5, 0.0, 3.0], [-1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    advantages, returns = ReMax(samples_per_prompt=1, whiten=False)(
        token_rewards, None, mask, greedy_scores=torch.tensor([1.5, -2.0])
    )
    torch.testing.assert_close(advantages, torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    assert returns is None and ReMax.needs_greedy_baseline and not ReMax.needs_critic


def test_token_returns_by_hand():
    """Per-token REINFORCE: each token's advantage is the sum of the rewards from it to the response's end."""
    from lit_rlhf.rl.advantages import TokenReturns

    rewards = torch.tensor([[1.0, -2.0, 0.5, 9.0], [3.0, 1.0, 7.0, 7.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    advantages, returns = TokenReturns(samples_per_prompt=1, gamma=1.0, whiten=False)(rewards, None, mask)
    # Row 0: 1 - 2 + 0.5 = -0.5, -2 + 0.5 = -1.5, 0.5; row 1: 3 + 1 = 4, 1. Masked tokens: 0.
    torch.testing.assert_close(advantages, torch.tensor([[-0.5, -1.5, 0.5, 0.0], [4.0, 1.0, 0.0, 0.0]]))
    assert returns is None
    # γ = 0: each token keeps its own reward; γ = ½: 1 + ½(-2 + ½ · 0.5) = 0.125.
    myopic, _ = TokenReturns(1, gamma=0.0, whiten=False)(rewards, None, mask)
    torch.testing.assert_close(myopic, torch.where(mask, rewards, torch.zeros(())))
    half, _ = TokenReturns(1, gamma=0.5, whiten=False)(rewards, None, mask)
    assert float(half[0, 0]) == pytest.approx(0.125)


@pytest.mark.parametrize("gamma", [0.0, 0.7, 1.0])
def test_token_returns_match_a_naive_loop_and_whiten_over_tokens(gamma):
    from lit_rlhf.rl.advantages import TokenReturns

    generator = torch.Generator().manual_seed(3)
    rewards = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    lengths = [6, 2, 4]
    mask = torch.arange(6).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    # GAE with V = 0 and λ = 1 is the discounted return-to-go.
    expected, _ = naive_gae(rewards.tolist(), [[0.0] * 6] * 3, lengths, gamma, 1.0)
    advantages, _ = TokenReturns(1, gamma, whiten=False)(rewards, None, mask)
    torch.testing.assert_close(advantages, expected)
    whitened, _ = TokenReturns(1, gamma, whiten=True)(rewards, None, mask)
    torch.testing.assert_close(whitened, masked_whiten(expected, mask))
