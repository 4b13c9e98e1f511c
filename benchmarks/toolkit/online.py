"""RLOO, GRPO and PPO: our PPOModule (experiments `rloo`, `grpo`, `ppo_kl`) against TRL 1.16's RLOOTrainer and
GRPOTrainer, and TRL 1.12's PPOTrainer (the last TRL with one).

Every TRL setting comes from the composed experiment config; TRL's own choices stay (RLOO: a sequence-level
ratio, a mean per response; PPO: no gradient clipping, one AdamW over policy and critic, the score one token
after EOS, the value loss one position past EOS). Each check feeds one identical rollout to both trainers.
"""

from __future__ import annotations

import copy
import functools
from unittest import mock

import torch

from lit_rlhf.data.collate import pad_right
from lit_rlhf.data.tokenization import encode_prompts
from lit_rlhf.models.loading import load_causal_lm, load_reward_model, load_tokenizer
from lit_rlhf.ops.masking import masked_sum
from toolkit import common as toolkit


# ------------------------------------------------------------------------------------- RLOO and GRPO
def group_config(cfg, algo: str, iterations: int, seed: int, output_dir: str):
    """RLOOConfig or GRPOConfig mirroring the composed config, and the optimizer steps of one iteration."""
    module, advantage, kl, sampling = cfg.module, cfg.advantage, cfg.regularizer.kl, cfg.module.sampling
    steps = module.num_minibatches * module.ppo_epochs
    # One optimizer step per minibatch, `num_minibatches` of them per pass over the rollouts, `ppo_epochs` passes.
    rollouts = cfg.data.batch_size * advantage.samples_per_prompt
    batching = dict(per_device_train_batch_size=rollouts // module.num_minibatches, gradient_accumulation_steps=1)
    batching |= dict(steps_per_generation=module.num_minibatches, num_iterations=module.ppo_epochs)
    batching |= dict(num_generations=advantage.samples_per_prompt, max_steps=iterations * steps, seed=seed)
    generation = dict(max_completion_length=sampling.max_new_tokens, temperature=sampling.temperature)
    generation |= dict(top_k=sampling.top_k, top_p=sampling.top_p)
    update = dict(learning_rate=module.actor_optimizer.lr, weight_decay=module.actor_optimizer.weight_decay)
    update |= dict(lr_scheduler_type="constant", max_grad_norm=module.max_grad_norm, epsilon=module.clip_eps)
    update |= dict(beta=kl.coef, disable_dropout=True, logging_steps=steps)
    shared = dict(output_dir=output_dir, **batching, **generation, **update, **toolkit.TRL_PLAIN)
    if algo == "rloo":
        from trl import RLOOConfig

        # Our rloo: k1 per token in the reward (summed over the response), which is TRL RLOO's KL.
        assert kl._target_.endswith("KLInReward") and kl.estimator._target_.endswith("K1Estimator"), kl
        return RLOOConfig(**shared, normalize_advantages=advantage.whiten), steps
    from trl import GRPOConfig

    # Our grpo: beta * masked token-mean of k3 in the loss, the policy loss a token-mean over the minibatch
    # (TRL's "bnpo"); TRL's default bias-corrected KL multiplies k3 by the ratio, which ours does not.
    assert kl._target_.endswith("KLInLoss") and kl.estimator._target_.endswith("K3Estimator"), kl
    grpo = dict(loss_type="bnpo", scale_rewards="group" if advantage.scale else "none", use_bias_correction_kl=False)
    return GRPOConfig(**shared, **grpo, entropy_coef=module.entropy_coef), steps


def reward_model_score(model, tokenizer, missing_eos_penalty: float, lengths: list[float]):
    """A TRL reward function scoring with our reward model on the same tokens as ours, EOS included.

    (TRL's own path for a model reward decodes completions without their EOS, on which tiny-rm was trained.)
    Less `missing_eos_penalty` for responses that never stopped, as ours; each call (one per iteration)
    appends its mean completion length to `lengths`.
    """

    @torch.no_grad()
    def reward_model(prompts, completions, completion_ids, **kwargs) -> list[float]:
        prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        ids, mask = pad_right([p + list(c) for p, c in zip(prompt_ids, completion_ids)], tokenizer.pad_token_id)
        scores = model(input_ids=ids, attention_mask=mask).logits[:, 0].float()
        stopped = torch.tensor([bool(c) and c[-1] == tokenizer.eos_token_id for c in completion_ids])
        lengths.append(sum(len(c) for c in completion_ids) / len(completion_ids))
        return (scores - missing_eos_penalty * (~stopped).float()).tolist()

    return reward_model


def build_group_trainer(cfg, algo: str, run, iterations: int):
    """The TRL trainer on the same policy, reward model and prompts as the composed config."""
    from datasets import Dataset
    from trl import GRPOTrainer, RLOOTrainer

    args, steps_per_iteration = group_config(cfg, algo, iterations, run.seed, f"{run.workdir}/trl")
    tokenizer = load_tokenizer(cfg.model.tokenizer.name_or_path)
    reward_model = load_reward_model(cfg.model.reward.name_or_path).eval().requires_grad_(False)
    lengths = []
    reward = reward_model_score(reward_model, tokenizer, cfg.module.missing_eos_penalty, lengths)
    prompts = Dataset.from_dict({"prompt": toolkit.embedded_prompts("train", cfg.seed)})
    trainer = (RLOOTrainer if algo == "rloo" else GRPOTrainer)(
        load_causal_lm(run.model_path), [reward], args=args, train_dataset=prompts, processing_class=tokenizer
    )
    return trainer, lengths, steps_per_iteration


def group_trl_side(algo: str, run):
    cfg, clock = toolkit.our_config(run, algo), toolkit.Clock()
    trainer, lengths, steps_per_iteration = build_group_trainer(cfg, algo, run, run.steps)
    with toolkit.fixed_length(trainer.model, cfg.module.sampling.max_new_tokens if run.fixed_length else None):
        toolkit.train_trl(trainer, clock, steps_per_iteration)
    clock.metrics["response_length"] = lengths
    result = clock.result(cfg.data.batch_size * cfg.advantage.samples_per_prompt, run.warmup)
    return result, trainer.accelerator.unwrap_model(trainer.model), trainer.processing_class


def loss_and_gradient(model, loss: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The loss's value and its gradient over `model`'s parameters, flattened."""
    model.zero_grad()
    loss.backward()
    return float(loss.detach()), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def group_check(algo: str, run) -> dict:
    """Identical rollouts into both trainers; what each makes of them at the first update."""
    cfg = toolkit.our_config(run, algo, iterations=1)
    ours, _ = toolkit.build_ours(cfg)
    trainer, _, _ = build_group_trainer(cfg, algo, run, 1)
    peer, k = trainer.model, ours.advantage.samples_per_prompt
    rollout, experience, metrics = toolkit.our_rollout(ours, cfg, run.seed)
    with toolkit.scripted_generate(peer, rollout, ours.tokenizer.pad_token_id):
        inputs = trainer._generate_and_score_completions(
            [{"prompt": p} for p in rollout.prompts.prompts for _ in range(k)]
        )
    mask, our_adv, trl_adv = experience.response_mask, experience.advantages[:, 0], inputs["advantages"]
    width = inputs["completion_ids"].shape[1]
    assert torch.equal(inputs["completion_mask"].bool(), mask[:, :width]), "completion masks differ"
    checks = [toolkit.compare("advantage (on all of a response's tokens), max", None, None, our_adv - trl_adv)]
    checks += [toolkit.compare("mean absolute advantage", float(our_adv.abs().mean()), float(trl_adv.abs().mean()))]
    if algo == "rloo":
        diff = masked_sum(experience.old_logprobs, mask, dim=1) - inputs["old_logps"]
        checks += [toolkit.compare("old log-prob of a response, max", None, None, diff)]
    else:
        diff = (experience.ref_logprobs[:, :width] - inputs["ref_per_token_logps"]).masked_fill(~mask[:, :width], 0)
        checks += [toolkit.compare("reference per-token log-prob, max", None, None, diff)]
    # The loss and its gradient on the whole batch as one minibatch, at the rollout's own parameters.
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which is not running here
    our_loss, our_grad = loss_and_gradient(ours.policy, ours.actor_loss(experience, None)[0])
    peer_loss, peer_grad = loss_and_gradient(peer, trainer._compute_loss(peer, inputs))
    checks += [toolkit.compare("policy loss at the first update", our_loss, peer_loss)]
    # TRL RLOO: sequence-level ratio, mean over responses; ours: token-level ratio, mean over tokens. At
    # ratio 1 the gradients differ exactly by the mean response length.
    tokens_per_response = float(mask.sum()) / len(mask)
    scale, what = (tokens_per_response, "TRL = ours x tokens per response") if algo == "rloo" else (1.0, "equal")
    cosine = float(torch.nn.functional.cosine_similarity(our_grad.double(), peer_grad.double(), dim=0))
    relative = float((peer_grad - scale * our_grad).norm() / peer_grad.norm())
    checks += [toolkit.compare(f"gradient: cosine {cosine:.6f}, relative ({what})", None, None, relative)]
    extra = {"tokens_per_response": tokens_per_response, "kl_k1_per_response": float(metrics["kl_k1"])}
    return {"compared": checks, "gradient_norms": [float(our_grad.norm()), float(peer_grad.norm())], **extra}


# ----------------------------------------------------------------------------------------------- PPO
def build_ppo_trainer(cfg, run, iterations: int, prompts=None, **override):
    """TRL 1.12's PPOTrainer on the same models and prompts as the composed `ppo_kl` config."""
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    module, kl, advantage = cfg.module, cfg.regularizer.kl, cfg.advantage
    # ppo_kl: k1 per token in the reward, fixed coefficient, GAE with whitened advantages, one sample per prompt.
    assert kl._target_.endswith("KLInReward") and kl.estimator._target_.endswith("K1Estimator"), kl
    assert kl.controller._target_.endswith("FixedKLController") and advantage._target_.endswith(".GAE"), cfg
    assert advantage.whiten and module.entropy_coef == 0
    assert module.actor_optimizer.weight_decay == module.critic_optimizer.weight_decay
    tokenizer = load_tokenizer(cfg.model.tokenizer.name_or_path)
    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"  # TRL's collator pads the queries it generates from

    def dataset(texts):
        return Dataset.from_dict({"input_ids": encode_prompts(tokenizer, texts, cfg.data.max_prompt_length)[0]})

    batch, sampling = cfg.data.batch_size, module.sampling
    batching = dict(per_device_train_batch_size=batch, gradient_accumulation_steps=1, total_episodes=iterations * batch)
    batching |= dict(num_mini_batches=module.num_minibatches, num_ppo_epochs=module.ppo_epochs, seed=run.seed)
    batching |= dict(local_rollout_forward_batch_size=batch, num_sample_generations=0, logging_steps=1)
    generation = dict(response_length=sampling.max_new_tokens, temperature=sampling.temperature, stop_token="eos")
    objective = dict(missing_eos_penalty=module.missing_eos_penalty, kl_coef=kl.coef, kl_estimator="k1")
    objective |= dict(cliprange=module.clip_eps, cliprange_value=module.value_clip_eps, whiten_rewards=False)
    objective |= dict(gamma=advantage.gamma, lam=advantage.lam)
    paths = dict(sft_model_path=run.model_path, reward_model_path=cfg.model.reward.name_or_path)
    update = dict(learning_rate=module.actor_optimizer.lr, lr_scheduler_type="constant")
    settings = dict(**batching, **generation, **objective, **paths, **update, **toolkit.TRL_PLAIN)
    policy, value = load_causal_lm(run.model_path), load_reward_model(cfg.model.critic.name_or_path)
    groups = [dict(params=policy.parameters(), lr=module.actor_optimizer.lr)]
    groups += [dict(params=value.parameters(), lr=module.critic_optimizer.lr)]
    optimizer = torch.optim.AdamW(groups, weight_decay=module.actor_optimizer.weight_decay)
    models = dict(model=policy, ref_model=load_causal_lm(run.model_path), value_model=value)
    models |= dict(reward_model=load_reward_model(cfg.model.reward.name_or_path))
    data = dict(train_dataset=dataset(prompts or toolkit.embedded_prompts("train", cfg.seed)))
    data |= dict(eval_dataset=dataset(toolkit.embedded_prompts("validation", cfg.seed, 32)), processing_class=left)
    args = PPOConfig(output_dir=f"{run.workdir}/trl", **(settings | override))
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    trainer = PPOTrainer(args=args, optimizers=(optimizer, constant), **models, **data)
    return trainer, tokenizer


def watching(name: str, seen):
    """TRL PPO's module-level function `name`, each of whose results `seen(result, *args)` sees (and returns)."""
    from trl.experimental.ppo import ppo_trainer

    original = getattr(ppo_trainer, name)
    return mock.patch.object(
        ppo_trainer, name, lambda *args, **kwargs: seen(original(*args, **kwargs), *args, **kwargs)
    )


def ppo_trl_side(run):
    cfg = toolkit.our_config(run, "ppo_kl")
    clock, lengths = toolkit.Clock(), []
    trainer, tokenizer = build_ppo_trainer(cfg, run, run.steps)
    policy = trainer.accelerator.unwrap_model(trainer.model).policy

    def record_length(truncated, stop_token_id, pad_token_id, responses):
        lengths.append(float((truncated != pad_token_id).sum(1).float().mean()))  # EOS included
        return truncated

    max_new_tokens = cfg.module.sampling.max_new_tokens if run.fixed_length else None
    with toolkit.fixed_length(policy, max_new_tokens), watching("truncate_response", record_length):
        toolkit.train_trl(trainer, clock)  # TRL's PPO counts one step per iteration
    clock.metrics["response_length"] = lengths
    return clock.result(cfg.data.batch_size, run.warmup), policy, tokenizer


def trl_policy_loss(new_logprobs, logprobs, advantages, padding_mask, cliprange):
    """TRL 1.12 PPOTrainer's policy loss, transcribed from its inline code (trl/experimental/ppo/ppo_trainer.py)."""
    from trl.experimental.ppo.ppo_trainer import INVALID_LOGPROB, masked_mean

    new_logprobs = torch.masked_fill(new_logprobs, padding_mask, INVALID_LOGPROB)
    ratio = torch.exp(new_logprobs - logprobs)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return masked_mean(torch.max(pg_losses, pg_losses2), ~padding_mask)


def ppo_check(run) -> dict:
    """One identical rollout into both trainers; what each makes of it at the first update."""
    from lit_rlhf.losses.ppo import clipped_policy_loss
    from lit_rlhf.ops.forward import sequence_token_logprobs

    cfg = toolkit.our_config(run, "ppo_kl", iterations=1)
    ours, _ = toolkit.build_ours(cfg)
    captured = {}
    # One update on the whole batch, so that the logged losses are those at the rollout's own parameters.
    prompts = toolkit.embedded_prompts("train", cfg.seed, cfg.data.batch_size)
    trainer, _ = build_ppo_trainer(cfg, run, 1, prompts, num_ppo_epochs=1, num_mini_batches=1)
    rollout, experience, metrics = toolkit.our_rollout(ours, cfg, run.seed)

    def capture_advantages(whitened, values, mask, shift_mean=True):
        # TRL's only `masked_whiten` call when rewards are not whitened.
        captured["advantages"] = whitened.masked_fill(~mask, 0.0)
        return captured["advantages"]

    peer_policy = trainer.accelerator.unwrap_model(trainer.model).policy
    with (
        toolkit.scripted_generate(peer_policy, rollout, ours.tokenizer.pad_token_id) as served,
        watching("masked_whiten", capture_advantages),
    ):
        trainer.train()
    trl = trainer.state.log_history[-1]  # the metrics TRL logged at its one update
    # TRL's rows came in its data loader's order; put ours in the same order.
    mask, our_adv = experience.response_mask[served], experience.advantages[served]
    trl_adv = captured["advantages"][:, : mask.shape[1]]
    # Our advantages with the score one token later (TRL's placement) cannot be formed here: TRL's GAE also
    # bootstraps from the critic's value after EOS. So report how far apart the two are.
    adv_diff = (our_adv - trl_adv).masked_fill(~mask, 0.0)
    advantages = dict(mean_abs_diff=float(adv_diff.abs().sum() / mask.sum()))
    advantages |= dict(correlation=float(torch.corrcoef(torch.stack([our_adv[mask], trl_adv[mask]]))[0, 1]))
    policy_loss, _ = ours.actor_loss(experience, None)
    value_loss, _ = ours.critic_loss(experience)
    # The value losses differ: TRL also fits one position past EOS.
    pairs = {"score with missing-EOS penalty, mean": (experience.scores.mean(), "objective/scores")}
    pairs |= {"KL k1 per response, mean": (metrics["kl_k1"], "objective/kl")}
    pairs |= {"policy loss at the first update": (policy_loss.detach(), "loss/policy_avg")}
    pairs |= {"value loss at the first update": (value_loss.detach(), "loss/value_avg")}
    pairs |= {"ratio pi/pi_old at the first update": (1.0, "val/ratio")}
    checks = [toolkit.compare(what, float(value), trl[key]) for what, (value, key) in pairs.items()]
    checks += [toolkit.compare("whitened advantages, max over tokens", None, None, adv_diff, **advantages)]
    # PPO's clipped objective on identical inputs: our experience, with the policy moved by one signed
    # step so that ratios differ from 1 and the clip acts.
    ours.policy.zero_grad()
    policy_loss.backward()
    with torch.no_grad():
        for p in ours.policy.parameters():
            p -= 0.5 * p.grad.sign() * cfg.module.actor_optimizer.lr * 50
        start = experience.prompt_length - 1
        new, _ = sequence_token_logprobs(ours.policy, experience.sequences, experience.attention_mask, start)
    mask = experience.response_mask
    old = experience.old_logprobs.masked_fill(~mask, 1.0)
    ours_clipped = clipped_policy_loss(new, old, experience.advantages, mask, cfg.module.clip_eps)
    trl_clipped = trl_policy_loss(new, old, experience.advantages, ~mask, cfg.module.clip_eps)
    what = f"clipped policy loss on the same inputs, clipfrac {float(ours_clipped.clipfrac):.2f}"
    checks.append(toolkit.compare(what, float(ours_clipped.loss), float(trl_clipped)))
    return {"compared": checks, "tokens_per_response": float(mask.sum()) / len(mask)}


# The online comparisons: 9 iterations, the last 8 timed, 5 rounds of successive seeds; the gold score is
# the mean gold reward of 128 held-out responses sampled with seed 1234 from the final policy.
SHARED = dict(kind="causal-lm", unit="episodes", seed_per_round=True)
SHARED |= dict(defaults=dict(repeats=5, warmup=1, models="tiny", sizes={"tiny": (None, 9), "large": (None, 9)}))
SHARED |= dict(gold=functools.partial(toolkit.gold_reward_of_samples, seed=1234))


COMPARISONS = {
    algo: toolkit.Comparison(
        ours=functools.partial(toolkit.ours_online, algo),
        trl=functools.partial(group_trl_side, algo),
        check=functools.partial(group_check, algo),
        **SHARED,
    )
    for algo in ("rloo", "grpo")
}
COMPARISONS["ppo"] = toolkit.Comparison(
    ours=functools.partial(toolkit.ours_online, "ppo_kl"),
    trl=ppo_trl_side,
    check=ppo_check,
    trl_module="trl.experimental.ppo",
    venv="benchmarks/.venv-trl-ppo",
    **SHARED,
)
