"""Fast end-to-end runs of every stage experiment: parameters change and the named metrics are logged."""

from __future__ import annotations

import pytest
from conftest import changed, compose_config, logged_names, parameters_of, read_metrics

from lit_rlhf.train import build, fit, optimized_value

PPO_METRICS = {
    "train/kl",
    "train/kl_k1",
    "train/kl_k3",
    "train/kl_coef",
    "train/reward",
    "train/reward_total",
    "train/gold_reward",
    "train/entropy",
    "train/policy_loss",
    "train/clipfrac",
    "train/approx_kl",
    "train/response_length",
    "train/eos_fraction",
    "val/reward",
    "val/gold_reward",
    "val/kl",
    "val/kl_k1",
    "val/kl_k3",
}
CRITIC_METRICS = {"train/value_loss", "train/explained_variance"}
DISTILL_METRICS = {
    "train/kl_to_teacher",
    "train/kl_to_teacher_exact",
    "val/kl_to_teacher",
    "val/kl_to_teacher_exact",
    "val/teacher_gold_reward",
}
PPO_FAST = [
    "data.batch_size=4",
    "data.val_batch_size=4",
    "module.sampling.max_new_tokens=8",
    "trainer.limit_train_batches=2",
]


def test_sft_trains_from_scratch(tmp_path):
    run = build(compose_config("sft_tiny", tmp_path, ["data.batch_size=8", "module.sampling.max_new_tokens=8"]))
    before = parameters_of(run.module.policy)
    # Every experiment names the metric its sweeps report, and logs it.
    assert optimized_value(run.cfg, fit(run)) is not None
    assert changed(before, run.module.policy)
    assert {"train/loss", "val/loss", "val/gold_reward", "val/response_length"} <= logged_names(tmp_path)


def test_grpo_arith_trains_against_a_verifier_and_logs_greedy_accuracy(tmp_path):
    overrides = ["data.batch_size=4", "data.val_batch_size=16", "advantage.samples_per_prompt=4", *PPO_FAST[2:]]
    run = build(compose_config("grpo_arith", tmp_path, overrides))
    before = parameters_of(run.module.policy)
    metrics = fit(run)
    assert changed(before, run.module.policy)
    names = logged_names(tmp_path)
    assert {"train/reward", "train/reward/math", "val/reward/math", "val/accuracy", "val/accuracy/math"} <= names
    assert "val/gold_reward" not in names, "the arithmetic task has no gold reward: the verifier is its truth"
    assert optimized_value(run.cfg, metrics) == metrics["val/accuracy"]


@pytest.mark.parametrize("experiment", ["rm_tiny", "rm_margin", "rm_ranked", "rm_nll"])
def test_reward_model_stages(tmp_path, experiment):
    run = build(compose_config(experiment, tmp_path, ["data.batch_size=4", "data.val_batch_size=8"]))
    before = parameters_of(run.module.model)
    # Every experiment names the metric its sweeps report, and logs it.
    assert optimized_value(run.cfg, fit(run)) is not None
    assert changed(before, run.module.model)
    names = logged_names(tmp_path)
    assert {
        "train/loss",
        "train/reward_accuracy",
        "val/reward_accuracy",
        "val/reward_margin",
        "val/gold_accuracy",
    } <= names
    assert {"val/reward_chosen", "val/reward_rejected"} <= names


# One short run per PPO-family experiment: it builds, trains, freezes its reference and logs what it names.
# That each choice changes the quantity it names (estimators, advantages, KL gradients, aggregation, trust
# regions, micro-batches) is tested term by term in test_ignored_choices.py and test_ppo_micro_batches.py:
# a run like these would pass with the choice ignored.
@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment",
    [
        "ppo_kl",
        "ppo_adaptive_kl",
        "ppo_k3_loss",
        "ppo_full_kl",
        "ppo_ptx",
        "ppo_nokl",
        "rloo",
        "grpo",
        "grpo_unbiased_kl",
        "dr_grpo",
        "grpo_clip_higher",
        "gspo",
        "ppo_penalty",
        "ppo_seq_kl",
        "ppo_reward_shaping",
        "remax",
        "distill",
        "gkd",
    ],
)
def test_ppo_family_experiments(tmp_path, experiment):
    run = build(compose_config(experiment, tmp_path, PPO_FAST))
    module = run.module
    actor, reference = parameters_of(module.policy), parameters_of(module.reference)
    critic = parameters_of(module.critic) if module.critic is not None else None
    teacher = parameters_of(module.distill.teacher) if module.distill.has_teacher else None
    # Every experiment names the metric its sweeps report, and logs it.
    assert optimized_value(run.cfg, fit(run)) is not None
    assert changed(actor, module.policy)
    assert not changed(reference, module.reference), "the reference must stay frozen"
    names = logged_names(tmp_path)
    assert names >= PPO_METRICS, PPO_METRICS - names
    if critic is not None:
        assert changed(critic, module.critic)
        assert names >= CRITIC_METRICS
    if "ptx" in experiment:
        assert "train/ptx_nll" in names
    if "loss" in type(module.kl).__name__.lower():
        assert "train/kl_loss" in names
    if module.trust_region.kl_penalty is not None:
        assert {"train/trust_region_kl", "train/trust_region_kl_coef"} <= names
    if module.advantage.needs_greedy_baseline:
        assert "train/greedy_reward" in names
    if teacher is not None:
        assert not changed(teacher, module.distill.teacher), "the teacher must stay frozen"
        assert names >= DISTILL_METRICS, DISTILL_METRICS - names
    if "InLoss" in type(module.distill).__name__:
        assert "train/distill_loss" in names
    # The HF engine's log-probs (KV-cached decode) and the trainer's (one forward) of the same tokens: ~1e-6
    # in fp32, logged on every training step under rollout/.
    steps = [row for row in read_metrics(tmp_path) if "train/reward" in row]
    gaps = [row["rollout/logprob_diff/max"] for row in steps if "rollout/logprob_diff/max" in row]
    assert len(gaps) == len(steps) == 2 and max(gaps) <= 1e-4, gaps
    assert all("rollout/logprob_diff/mean" in row for row in steps)


@pytest.mark.parametrize("experiment", ["dpo", "dpo_nll", "ipo", "dpo_robust"])
def test_dpo_variants(tmp_path, experiment):
    overrides = ["data.batch_size=4", "data.val_batch_size=8", "module.sampling.max_new_tokens=8"]
    run = build(compose_config(experiment, tmp_path, overrides))
    before = parameters_of(run.module.policy)
    # Every experiment names the metric its sweeps report, and logs it.
    assert optimized_value(run.cfg, fit(run)) is not None
    assert changed(before, run.module.policy)
    names = logged_names(tmp_path)
    expected = {
        "train/reward_chosen",
        "train/reward_rejected",
        "train/reward_margin",
        "train/logps_chosen",
        "train/logps_rejected",
        "train/nll",
        "val/reward_accuracy",
        "val/reward_margin",
        "val/gold_reward",
    }
    assert expected <= names, expected - names


@pytest.mark.parametrize("loss", ["hinge", "conservative", "reference_free"])
def test_other_dpo_losses(tmp_path, loss):
    overrides = [f"loss/dpo={loss}", "data.batch_size=4", "data.val_batch_size=8", "module.val_sample_batches=0"]
    run = build(compose_config("dpo", tmp_path, overrides))
    before = parameters_of(run.module.policy)
    fit(run)
    assert changed(before, run.module.policy)
    assert (run.module.reference is None) == (loss == "reference_free")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A different architecture than the shipped Llama, saved as a local HF folder (what `model=hf` loads)."""
    from lit_rlhf.models.loading import build_causal_lm, embedded_task_tokenizer

    tokenizer = embedded_task_tokenizer()
    model = build_causal_lm(tokenizer, model_type="gpt2", n_embd=32, n_layer=1, n_head=2, n_positions=128)
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "experiment, overrides",
    [
        ("sft", ["data.batch_size=4", "data.val_batch_size=8", "module.val_sample_batches=0"]),
        ("rm", ["data.batch_size=4", "data.val_batch_size=8", "module.centering_coef=0.01"]),
        ("dpo", ["data.batch_size=4", "data.val_batch_size=8", "module.sampling.max_new_tokens=8"]),
        ("ppo_kl", PPO_FAST),
    ],
)
def test_the_presets_train_any_hf_causal_lm_by_path(tmp_path, tiny_gpt2, experiment, overrides):
    """`+experiment=sft|rm|dpo|ppo_kl model=hf model.name_or_path=<dir>`: AutoModelForCausalLM /
    ForSequenceClassification on a GPT-2, with the learning rates of model=hf."""
    if experiment == "ppo_kl":
        # No trained reward model for this GPT-2: the gold reward scores; the critic starts from the policy.
        overrides = [*overrides, "reward=function", "reward.fn=lit_rlhf.task.gold_reward.GoldReward"]
    # The embedded task's data, chosen explicitly: with a user's model it is refused otherwise.
    data = {"sft": "task_sft", "rm": "task_pairs", "dpo": "task_pairs", "ppo_kl": "task_prompts"}[experiment]
    users_model = ["model=hf", f"model.name_or_path={tiny_gpt2}", f"data={data}"]
    run = build(compose_config(experiment, tmp_path, [*users_model, *overrides]))
    if experiment == "ppo_kl":
        assert run.cfg.model.critic.name_or_path == str(tiny_gpt2), "no reward model: the critic is the policy's"
    assert run.cfg.optimized_metric != "val/gold_reward" or run.cfg.gold_reward is not None
    trained = run.module.model if experiment == "rm" else run.module.policy
    assert type(trained).__name__.startswith("GPT2")
    before = parameters_of(trained)
    fit(run)
    assert changed(before, trained)
