"""Advantage estimators: GAE with a critic, and critic-free sequence-level baselines.

Under data parallelism, batch statistics (whitening, the batch-mean baseline) are taken over every
rank's rollout, so N ranks compute what one process computes on the concatenated rollout; group
statistics (RLOO, GRPO, ReMax) are per prompt, and a prompt's samples never span ranks.

Functions do the arithmetic; the classes are the Hydra group `advantage`, all
with the same call `(token_rewards, values, mask) -> (advantages, returns)` so
the PPO module needs no `if estimator == ...` switch. Call them under
`torch.no_grad()`: advantages are targets, not part of the graph.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_rlhf.ops.distributed import global_masked_whiten, global_mean
from lit_rlhf.ops.masking import masked_sum


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized Advantage Estimation over the tokens of each response.

    Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized
    Advantage Estimation":
        δ_t = r_t + γ V_{t+1} - V_t,   A_t = δ_t + γλ A_{t+1},   R_t = A_t + V_t.
    Positions outside the mask are terminal: their rewards and values count as
    0, so the value after a row's last real token is 0 and nothing leaks back
    from padding.

    Args:
        rewards: (B, T) per-token rewards (e.g. -β·KL_t, plus the score on the last token).
        values: (B, T) critic values V(s_t).
        mask: (B, T) true on real response tokens (left-aligned).
        gamma: discount γ in [0, 1].
        lam: GAE λ in [0, 1]; 1 gives Monte-Carlo returns minus V, 0 gives one-step TD.

    Returns:
        advantages: (B, T), zero outside the mask.
        returns: (B, T) = advantages + values, zero outside the mask.
    """
    keep = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    rewards = torch.where(keep, rewards, zero)
    values = torch.where(keep, values, zero)

    next_value = torch.zeros_like(values[:, 0])  # (B,)
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    advantages_reversed = []
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = torch.where(keep[:, t], delta + gamma * lam * next_advantage, zero)
        next_value = values[:, t]
        advantages_reversed.append(next_advantage)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)  # (B, T)
    return advantages, torch.where(keep, advantages + values, zero)


def _check_group_size(scores: Tensor, group_size: int, who: str) -> None:
    if group_size < 2:
        raise ValueError(f"{who} compares the samples of one prompt and needs group_size >= 2, got {group_size}")
    if scores.shape[0] % group_size != 0:
        raise ValueError(f"{who}: {scores.shape[0]} scores do not split into groups of {group_size} samples per prompt")


def reinforce_baseline_advantages(scores: Tensor) -> Tensor:
    """Score minus the batch-mean baseline b = mean(scores), the mean over every rank's batch.

    Williams 1992, "Simple Statistical Gradient-Following Algorithms for
    Connectionist Reinforcement Learning" (REINFORCE), with a Monte-Carlo
    baseline: the mean reward of the sampled batch.

    Args:
        scores: (N,) one scalar reward per sampled response.

    Returns:
        (N,).
    """
    return scores - global_mean(scores)


def rloo_advantages(scores: Tensor, group_size: int) -> Tensor:
    """REINFORCE Leave-One-Out: A_i = r_i - mean of the other k - 1 samples of the same prompt.

    Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style
    Optimization for Learning from Human Feedback in LLMs". Equivalently
    A_i = k/(k-1) · (r_i - group mean).

    Args:
        scores: (N,) with N = P·k; the k samples of prompt p are rows p·k … p·k+k-1.
        group_size: k ≥ 2.

    Returns:
        (N,).
    """
    _check_group_size(scores, group_size, "rloo_advantages")
    groups = scores.view(-1, group_size)  # (P, k)
    baseline = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - baseline).flatten()


def group_relative_advantages(scores: Tensor, group_size: int, eps: float = 1e-6, scale: bool = True) -> Tensor:
    """GRPO: A_i = (r_i - group mean) / (group std + eps), std unbiased.

    Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical
    Reasoning in Open Language Models" (Group Relative Policy Optimization).
    `scale=False` keeps only the mean-centring (Liu et al. 2025, "Understanding
    R1-Zero-Like Training: A Critical Perspective", Dr. GRPO), which avoids
    up-weighting prompts whose samples all score alike.

    Args:
        scores: (N,) with N = P·k, the k samples of a prompt contiguous.
        group_size: k ≥ 2.
        eps: keeps groups with identical scores finite (their advantage is 0).
        scale: divide by the group standard deviation.

    Returns:
        (N,).
    """
    _check_group_size(scores, group_size, "group_relative_advantages")
    groups = scores.view(-1, group_size)  # (P, k)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (groups.std(dim=1, keepdim=True) + eps)
    return centred.flatten()


def _sequence_scores(token_rewards: Tensor, mask: Tensor) -> Tensor:
    """Undiscounted return of each response (γ = 1): (B, T) -> (B,)."""
    return masked_sum(token_rewards, mask, dim=1)


def _broadcast_over_tokens(sequence_advantages: Tensor, mask: Tensor) -> Tensor:
    """(B,) -> (B, T): every real token of a response gets its sequence's advantage, padding gets 0."""
    per_token = sequence_advantages.unsqueeze(1).expand(mask.shape)
    return torch.where(mask.bool(), per_token, torch.zeros((), dtype=per_token.dtype, device=per_token.device))


def _whiten_sequences(sequence_advantages: Tensor) -> Tensor:
    """Zero-mean unit-variance over responses (of every rank), each counted once whatever its length."""
    return global_masked_whiten(sequence_advantages, torch.ones_like(sequence_advantages, dtype=torch.bool))


def _check_samples_per_prompt(samples_per_prompt: int, minimum: int, who: str) -> int:
    if samples_per_prompt < minimum:
        raise ValueError(f"{who}: samples_per_prompt must be >= {minimum}, got {samples_per_prompt}")
    return samples_per_prompt


class GAE:
    """Token-level advantages from a critic.

    Schulman et al. 2016, "High-Dimensional Continuous Control Using
    Generalized Advantage Estimation".

    Args:
        gamma: discount γ.
        lam: GAE λ.
        whiten: normalise the advantages over all real tokens of the batch, on every rank together
            (the returns, the critic's targets, are computed before whitening).
    """

    needs_critic: bool = True
    needs_greedy_baseline: bool = False
    samples_per_prompt: int = 1

    def __init__(self, gamma: float, lam: float, whiten: bool) -> None:
        if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
            raise ValueError(f"GAE: gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
        self.gamma = gamma
        self.lam = lam
        self.whiten = whiten

    def __call__(self, token_rewards: Tensor, values: Tensor | None, mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """token_rewards, values, mask: (B, T) -> advantages (B, T), returns (B, T)."""
        if values is None:
            raise ValueError(
                "GAE needs the critic's values; without a critic use RLOO, GroupRelative or ReinforceBaseline"
            )
        advantages, returns = gae(token_rewards, values, mask, self.gamma, self.lam)
        if self.whiten:
            advantages = global_masked_whiten(advantages, mask)
        return advantages, returns


class TokenReturns:
    """Per-token REINFORCE without a critic: each token's advantage is its return-to-go Σ_{s≥t} γ^{s-t} r_s.

    Williams 1992 (REINFORCE with reward-to-go); what GAE gives with V = 0 and λ = 1. Dense per-token rewards
    (on-policy distillation's -KL_t; Gu et al. 2024, "MiniLLM") then credit each token with what follows it,
    not the whole response's sum as the sequence-level estimators do; γ = 0 credits each token with its own
    reward only (Thinking Machines' on-policy distillation).

    Args:
        samples_per_prompt: responses sampled per prompt (≥ 1).
        gamma: discount γ in [0, 1].
        whiten: normalise the advantages over all real tokens of the batch (their mean is the baseline).
    """

    needs_critic: bool = False
    needs_greedy_baseline: bool = False

    def __init__(self, samples_per_prompt: int, gamma: float, whiten: bool) -> None:
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"TokenReturns: gamma must lie in [0, 1], got {gamma}")
        self.samples_per_prompt = _check_samples_per_prompt(samples_per_prompt, 1, "TokenReturns")
        self.gamma, self.whiten = gamma, whiten

    def __call__(self, token_rewards: Tensor, values: Tensor | None, mask: Tensor) -> tuple[Tensor, None]:
        """token_rewards, mask: (B, T); values ignored -> advantages (B, T), None."""
        advantages, _ = gae(token_rewards, torch.zeros_like(token_rewards), mask, self.gamma, 1.0)
        if self.whiten:
            advantages = global_masked_whiten(advantages, mask)
        return advantages, None


class ReinforceBaseline:
    """REINFORCE with the batch-mean score as baseline.

    Williams 1992, "Simple Statistical Gradient-Following Algorithms for
    Connectionist Reinforcement Learning".

    Args:
        samples_per_prompt: responses sampled per prompt (≥ 1); the baseline is
            the mean over the whole batch either way.
        whiten: normalise the sequence advantages over the batch's responses.
    """

    needs_critic: bool = False
    needs_greedy_baseline: bool = False

    def __init__(self, samples_per_prompt: int, whiten: bool) -> None:
        self.samples_per_prompt = _check_samples_per_prompt(samples_per_prompt, 1, "ReinforceBaseline")
        self.whiten = whiten

    def __call__(self, token_rewards: Tensor, values: Tensor | None, mask: Tensor) -> tuple[Tensor, None]:
        """token_rewards, mask: (B, T); values ignored -> advantages (B, T), None."""
        advantages = reinforce_baseline_advantages(_sequence_scores(token_rewards, mask))
        if self.whiten:
            advantages = _whiten_sequences(advantages)
        return _broadcast_over_tokens(advantages, mask), None


class RLOO:
    """REINFORCE Leave-One-Out: each sample's baseline is the mean score of the other samples of its prompt.

    Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style
    Optimization for Learning from Human Feedback in LLMs".

    Args:
        samples_per_prompt: k ≥ 2 contiguous responses per prompt.
        whiten: normalise the sequence advantages over the batch's responses.
    """

    needs_critic: bool = False
    needs_greedy_baseline: bool = False

    def __init__(self, samples_per_prompt: int, whiten: bool) -> None:
        self.samples_per_prompt = _check_samples_per_prompt(samples_per_prompt, 2, "RLOO")
        self.whiten = whiten

    def __call__(self, token_rewards: Tensor, values: Tensor | None, mask: Tensor) -> tuple[Tensor, None]:
        """token_rewards, mask: (B, T) with B a multiple of k; values ignored -> advantages (B, T), None."""
        advantages = rloo_advantages(_sequence_scores(token_rewards, mask), self.samples_per_prompt)
        if self.whiten:
            advantages = _whiten_sequences(advantages)
        return _broadcast_over_tokens(advantages, mask), None


class GroupRelative:
    """GRPO's group-normalised advantages.

    Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical
    Reasoning in Open Language Models".

    Args:
        samples_per_prompt: k ≥ 2 contiguous responses per prompt.
        eps: added to the group std.
        scale: divide by the group std (False: Dr. GRPO's mean-centring only).
    """

    needs_critic: bool = False
    needs_greedy_baseline: bool = False

    def __init__(self, samples_per_prompt: int, eps: float, scale: bool) -> None:
        self.samples_per_prompt = _check_samples_per_prompt(samples_per_prompt, 2, "GroupRelative")
        self.eps = eps
        self.scale = scale

    def __call__(self, token_rewards: Tensor, values: Tensor | None, mask: Tensor) -> tuple[Tensor, None]:
        """token_rewards, mask: (B, T) with B a multiple of k; values ignored -> advantages (B, T), None."""
        scores = _sequence_scores(token_rewards, mask)
        advantages = group_relative_advantages(scores, self.samples_per_prompt, self.eps, self.scale)
        return _broadcast_over_tokens(advantages, mask), None


class ReMax:
    """Self-critical baseline: each response's return minus the score of the greedy response to its prompt.

    Rennie et al. 2017, "Self-critical Sequence Training for Image Captioning"; Li et al. 2023, "ReMax:
    A Simple, Effective, and Efficient Reinforcement Learning Method for Aligning Large Language Models".
    The greedy response depends only on the prompt, so the baseline leaves the gradient unbiased; the
    module generates and scores it (`needs_greedy_baseline`), with the same shaping as the samples.

    Args:
        samples_per_prompt: sampled responses per prompt (ReMax: 1); all share the prompt's greedy baseline.
        whiten: normalise the sequence advantages over the batch's responses.
    """

    needs_critic: bool = False
    needs_greedy_baseline: bool = True

    def __init__(self, samples_per_prompt: int, whiten: bool) -> None:
        self.samples_per_prompt = _check_samples_per_prompt(samples_per_prompt, 1, "ReMax")
        self.whiten = whiten

    def __call__(
        self, token_rewards: Tensor, values: Tensor | None, mask: Tensor, greedy_scores: Tensor
    ) -> tuple[Tensor, None]:
        """token_rewards, mask: (B, T); greedy_scores: (B,), each row's prompt's greedy score -> (B, T), None."""
        advantages = _sequence_scores(token_rewards, mask) - greedy_scores
        if self.whiten:
            advantages = _whiten_sequences(advantages)
        return _broadcast_over_tokens(advantages, mask), None
