"""On-policy distillation (issue #29): the teacher's divergences by hand and against torch.distributions,
the JSD loss's gradient against autograd of the exact divergence, and the PPO module's use of them."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from conftest import compose_config
from test_ignored_choices import perturb, plain_policy_loss, rollout
from torch.distributions import Categorical, kl_divergence

from lit_rlhf.command import find_user_error
from lit_rlhf.errors import ConfigError
from lit_rlhf.ops.forward import sequence_token_logprobs
from lit_rlhf.ops.masking import masked_mean
from lit_rlhf.regularizers.distill import DistillInLoss, DistillInReward, exact_reverse_kl, generalized_jsd
from lit_rlhf.regularizers.kl.estimators import FullEstimator, K1Estimator
from lit_rlhf.train import build

# Two sampled tokens: the student gives them 0.75 and 0.2, the teacher 0.40 and 0.5.
STUDENT = torch.tensor([[math.log(0.75), math.log(0.2)]])
TEACHER = torch.tensor([[math.log(0.40), math.log(0.5)]])
MASK = torch.tensor([[True, True]])
TEACHER_MODEL = torch.nn.Linear(1, 1)  # stands in for a frozen LM where only the arithmetic is tested


def random_logits(*shape, seed: int = 0, scale: float = 3.0, dtype=torch.float64) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_distillation_reward_is_minus_beta_times_the_sampled_log_ratios():
    distill = DistillInReward(TEACHER_MODEL, K1Estimator(), coef=0.5)
    per_token = distill.measure(STUDENT, TEACHER, MASK, None, None)
    # log(0.75 / 0.40) = 0.62861, log(0.2 / 0.5) = -0.91629: the second token pulls the reward up.
    torch.testing.assert_close(per_token, torch.tensor([[0.6286087, -0.9162907]]))
    torch.testing.assert_close(-distill.reward_penalty(per_token, MASK), torch.tensor([[-0.3143044, 0.4581454]]))
    # Nothing after a response's end reaches the reward, not even a NaN there.
    after_end = distill.measure(
        STUDENT, torch.tensor([[math.log(0.4), math.nan]]), torch.tensor([[True, False]]), None, None
    )
    torch.testing.assert_close(after_end, torch.tensor([[0.6286087, 0.0]]))


def test_exact_reverse_kl_reward_matches_torch_distributions():
    logits, teacher_logits = random_logits(2, 3, 11, seed=1), random_logits(2, 3, 11, seed=2)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    expected = kl_divergence(Categorical(logits=logits), Categorical(logits=teacher_logits)) * mask
    distill = DistillInReward(TEACHER_MODEL, FullEstimator(), coef=1.0)
    logprobs = torch.zeros(2, 3, dtype=torch.float64)  # unused by the exact estimator
    torch.testing.assert_close(distill.measure(logprobs, logprobs, mask, logits, teacher_logits), expected)
    torch.testing.assert_close(exact_reverse_kl(logits, teacher_logits) * mask, expected)


def test_different_vocabularies_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="one vocabulary") as error:
        exact_reverse_kl(torch.zeros(1, 2, 5), torch.zeros(1, 2, 6))
    assert "\n" not in str(error.value)


def naive_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """GKD's JSD_β from probabilities and torch.distributions: M = β·π_t + (1-β)·π_s; its ends the two KLs."""
    student, teacher = Categorical(logits=student_logits), Categorical(logits=teacher_logits)
    if beta in (0.0, 1.0):
        return kl_divergence(teacher, student) if beta == 0.0 else kl_divergence(student, teacher)
    mixture = Categorical(probs=beta * teacher.probs + (1 - beta) * student.probs)
    return beta * kl_divergence(teacher, mixture) + (1 - beta) * kl_divergence(student, mixture)


def test_jsd_ends_are_the_forward_and_reverse_kl():
    logits, teacher_logits = random_logits(2, 4, 9, seed=3), random_logits(2, 4, 9, seed=4)
    student, teacher = Categorical(logits=logits), Categorical(logits=teacher_logits)
    torch.testing.assert_close(generalized_jsd(logits, teacher_logits, 0.0), kl_divergence(teacher, student))
    torch.testing.assert_close(generalized_jsd(logits, teacher_logits, 1.0), kl_divergence(student, teacher))


def test_jsd_by_hand_on_two_tokens():
    # π_s = (½, ½), π_t = (1/10, 9/10), β = ½: M = (0.3, 0.7),
    # JSD = ½[0.1 ln(0.1/0.3) + 0.9 ln(0.9/0.7)] + ½[0.5 ln(0.5/0.3) + 0.5 ln(0.5/0.7)]
    #     = ½[-0.10986 + 0.22618] + ½[0.25541 - 0.16824] = 0.05816 + 0.04359 = 0.10175
    student_logits = torch.tensor([[[0.0, 0.0]]], dtype=torch.float64)
    teacher_logits = torch.tensor([[[math.log(0.1), math.log(0.9)]]], dtype=torch.float64)
    by_hand = 0.5 * (0.1 * math.log(1 / 3) + 0.9 * math.log(0.9 / 0.7)) + 0.5 * (
        0.5 * math.log(0.5 / 0.3) + 0.5 * math.log(0.5 / 0.7)
    )
    assert float(generalized_jsd(student_logits, teacher_logits, 0.5)) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.10175, abs=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_jsd_loss_gradient_equals_autograd_of_the_exact_divergence(beta):
    teacher_logits = random_logits(2, 3, 7, seed=6)
    logits = random_logits(2, 3, 7, seed=5).requires_grad_(True)
    (gradient,) = torch.autograd.grad(generalized_jsd(logits, teacher_logits, beta).sum(), logits)
    reference_logits = logits.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(naive_jsd(reference_logits, teacher_logits, beta).sum(), reference_logits)
    torch.testing.assert_close(gradient, expected)
    # The ends also have closed forms: ∂KL(π_t‖π_s)/∂z = π_s - π_t and ∂KL(π_s‖π_t)/∂z = π_s(log π_s - log π_t - KL).
    s, log_s, log_t = logits.softmax(-1), logits.log_softmax(-1), teacher_logits.log_softmax(-1)
    if beta == 0.0:
        torch.testing.assert_close(gradient, (s - teacher_logits.softmax(-1)).detach())
    if beta == 1.0:
        kl = (s * (log_s - log_t)).sum(-1, keepdim=True)
        torch.testing.assert_close(gradient, (s * (log_s - log_t - kl)).detach())


def test_jsd_is_zero_with_zero_gradient_when_teacher_equals_student():
    logits = random_logits(1, 3, 5, seed=7).requires_grad_(True)
    jsd = generalized_jsd(logits, logits.detach(), 0.3)
    (gradient,) = torch.autograd.grad(jsd.sum(), logits)
    assert float(jsd.detach().abs().max()) < 1e-12 and float(gradient.abs().max()) < 1e-12


def test_jsd_beta_outside_the_unit_interval_is_refused():
    with pytest.raises(ConfigError, match=r"beta must lie in \[0, 1\]"):
        DistillInLoss(TEACHER_MODEL, coef=1.0, beta=1.5)


# --------------------------------------------------------------------------------- in the PPO module
FAST = ["data.batch_size=4", "data.val_batch_size=4", "module.sampling.max_new_tokens=8"]


@pytest.fixture(scope="module")
def distill_build(tmp_path_factory):
    """One built `distill` run (γ = 0, no whitening, β = 0.7) and a batch of its prompts, shared by the tests
    below: a test that changes the module works on a copy."""
    overrides = [*FAST, "advantage.gamma=0.0", "advantage.whiten=false", "regularizer.distill.coef=0.7"]
    run = build(compose_config("distill", tmp_path_factory.mktemp("distill"), overrides))
    run.datamodule.setup("fit")
    batch = run.datamodule.on_before_batch_transfer(next(iter(run.datamodule.train_dataloader()))[0], 0)
    return run, batch


def test_rollout_rewards_each_token_with_its_log_ratio_to_the_teacher(distill_build, monkeypatch):
    """With γ = 0 and no whitening, each token's advantage is its reward: -β(log π_s - log π_t), by hand."""
    run, batch = distill_build
    module = run.module
    experience, metrics, _, _ = rollout(module, batch, monkeypatch)
    mask, start = experience.response_mask, experience.prompt_length - 1
    with torch.no_grad():
        student, _ = sequence_token_logprobs(module.policy, experience.sequences, experience.attention_mask, start)
        teacher, _ = sequence_token_logprobs(
            module.distill.teacher, experience.sequences, experience.attention_mask, start
        )
    expected = torch.where(mask, -0.7 * (student - teacher), torch.zeros(()))
    assert float(expected.abs().max()) > 0.1, "the teacher must differ from the student"
    torch.testing.assert_close(experience.advantages, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metrics["kl_to_teacher"], ((student - teacher) * mask).sum(1).mean())


def test_gkd_adds_coef_times_the_mean_jsd_to_the_actor_loss(distill_build, monkeypatch):
    run, batch = distill_build
    module = copy.deepcopy(run.module)
    module.distill = DistillInLoss(module.distill.teacher, coef=0.3, beta=0.4)  # regularizer/distill=in_loss
    perturb(module.policy)
    experience, _, _, _ = rollout(module, batch, monkeypatch)
    # Random advantages, so that the policy-gradient term the JSD is added to is not 0.
    advantages = torch.randn(experience.advantages.shape, generator=torch.Generator().manual_seed(0))
    experience = dataclasses.replace(experience, advantages=advantages * experience.response_mask)
    loss, metrics = module.actor_loss(experience, None)

    mask, start = experience.response_mask, experience.prompt_length - 1
    _, logits = sequence_token_logprobs(module.policy, experience.sequences, experience.attention_mask, start)
    _, teacher_logits = sequence_token_logprobs(
        module.distill.teacher, experience.sequences, experience.attention_mask, start
    )
    jsd = masked_mean(naive_jsd(logits.double(), teacher_logits.double(), 0.4), mask).float()
    policy_loss = plain_policy_loss(module, experience)
    assert float(jsd) > 1e-3 and abs(float(policy_loss)) > 1e-3
    torch.testing.assert_close(metrics["distill_loss"], jsd.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, policy_loss + 0.3 * jsd, rtol=1e-5, atol=1e-6)


def test_a_teacher_equal_to_the_student_gives_zero_rewards_and_moves_nothing(distill_build, monkeypatch):
    """A frozen copy of the student as its teacher: every reward, advantage and gradient is exactly 0, so the
    optimizer step (AdamW without weight decay) leaves the policy where it is."""
    run, batch = distill_build
    module = copy.deepcopy(run.module)
    module.distill = DistillInReward(copy.deepcopy(module.policy), K1Estimator(), coef=0.7)
    experience, metrics, _, _ = rollout(module, batch, monkeypatch)
    assert float(metrics["kl_to_teacher"]) == 0.0 and float(metrics["kl_to_teacher_exact"]) == 0.0
    assert float(metrics["reward_total"]) == 0.0 and not experience.advantages.any()
    loss, _ = module.actor_loss(experience, None)
    loss.backward()
    gradients = [p.grad for p in module.policy.parameters() if p.grad is not None]
    assert gradients and not any(g.any() for g in gradients)


def test_a_teacher_with_another_tokenizer_is_refused_in_one_line(tmp_path):
    cfg = compose_config("distill", tmp_path, ["model.teacher.name_or_path=${asset:tiny-arith}"])
    with pytest.raises(Exception) as raised:
        build(cfg)
    # What `train.main` prints: the ConfigError behind Hydra's instantiation error, in one line.
    error = find_user_error(raised.value)
    assert isinstance(error, ConfigError) and "\n" not in str(error)
    assert "another tokenizer than the policy (vocabulary (18 tokens vs the policy's 512) differ)" in str(error)
    assert "cross-tokenizer distillation is not supported" in str(error)


def test_a_distillation_without_a_teacher_path_is_refused(tmp_path):
    cfg = compose_config("distill", tmp_path, ["model.teacher.name_or_path=null"])
    with pytest.raises(ConfigError, match=r"model\.teacher\.name_or_path is not set"):
        build(cfg)
