"""PPO: lit-rlhf's PPOModule (experiment `ppo_kl`) against TRL 1.12.0's PPOTrainer, the last TRL with one.

    bash benchmarks/setup_trl.sh          # once: benchmarks/.venv-trl-ppo (lit-rlhf + trl 1.12.0)
    benchmarks/.venv-trl-ppo/bin/python benchmarks/bench_trl_ppo.py [--repeats 5] [--iterations 9]
        [--warmup 1] [--threads 2] [--model tiny|large] [--fixed-length] [--name SUFFIX]

Episodes per second (generation plus update) and peak RSS, each side in its own subprocess, rounds
alternating which side goes first, medians reported. Both sides from the composed `ppo_kl` config: the
policy (its copy the reference), the critic and reward model (both the shipped tiny-rm, as ours), 32
prompts per iteration, 40 new tokens at temperature 1 with EOS as the stop token (--fixed-length: no EOS
before the 40th token on either side), the missing-EOS penalty,
k1 KL in the reward with its coefficient, GAE (gamma, lambda) with whitened advantages, 2 PPO epochs of 2
minibatches, the clip ranges, AdamW at the actor's and the critic's learning rates (one optimizer with two
parameter groups on TRL's side, which steps policy and value together), seed and torch threads.
Left as TRL does them: no gradient clipping, value loss weighted by vf_coef (Adam makes the weight moot),
the score placed one token after EOS, the value loss over one position past EOS.

The first-step check feeds one identical rollout batch (a scripted `policy.generate`) to both trainers and
compares the scores, KL, losses at the first update, and PPO's clipped objective on identical inputs.
Results: benchmarks/results/ppo[_large].json, and a markdown row on stdout.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _trl_online as common  # noqa: E402
import torch  # noqa: E402

SCRIPT = Path(__file__).resolve()
EXPERIMENT = "ppo_kl"


def build_trl(cfg, policy_path: str, iterations: int, seed: int, output_dir: str, prompts=None, callbacks=(), **over):
    """TRL 1.12 PPOTrainer on the same models and prompts as the composed `ppo_kl` config."""
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from lit_rlhf.data.tokenization import encode_prompts
    from lit_rlhf.models.loading import load_causal_lm, load_reward_model, load_tokenizer
    from lit_rlhf.task.sources import EmbeddedPrompts

    module, kl, advantage = cfg.module, cfg.regularizer.kl, cfg.advantage
    # ppo_kl: k1 per token in the reward, fixed coefficient, GAE with whitened advantages, one sample per prompt.
    assert kl._target_.endswith("KLInReward") and kl.estimator._target_.endswith("K1Estimator"), kl
    assert kl.controller._target_.endswith("FixedKLController") and advantage._target_.endswith(".GAE"), cfg
    assert advantage.whiten and module.entropy_coef == 0
    tokenizer = load_tokenizer(cfg.model.tokenizer.name_or_path)
    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"  # TRL's collator pads the queries it generates from
    max_prompt = cfg.data.max_prompt_length
    if prompts is None:
        prompts = [r.prompt for r in EmbeddedPrompts(seed=cfg.seed).load("train")]
    train = Dataset.from_dict({"input_ids": encode_prompts(tokenizer, prompts, max_prompt)[0]})
    held_out = [r.prompt for r in EmbeddedPrompts(seed=cfg.seed).load("validation")[:32]]
    evaluation = Dataset.from_dict({"input_ids": encode_prompts(tokenizer, held_out, max_prompt)[0]})
    batch = cfg.data.batch_size
    settings = dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_mini_batches=module.num_minibatches,
        num_ppo_epochs=module.ppo_epochs,
        total_episodes=iterations * batch,
        local_rollout_forward_batch_size=batch,
        response_length=module.sampling.max_new_tokens,
        temperature=module.sampling.temperature,
        stop_token="eos",
        missing_eos_penalty=module.missing_eos_penalty,
        kl_coef=kl.controller.coef,
        kl_estimator="k1",
        cliprange=module.clip_eps,
        cliprange_value=module.value_clip_eps,
        gamma=advantage.gamma,
        lam=advantage.lam,
        whiten_rewards=False,
        learning_rate=module.actor_optimizer.lr,
        lr_scheduler_type="constant",
        num_sample_generations=0,
        seed=seed,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        sft_model_path=policy_path,
        reward_model_path=cfg.model.reward.name_or_path,
    )
    args = PPOConfig(**(settings | over))
    policy = load_causal_lm(policy_path)
    value = load_reward_model(cfg.model.critic.name_or_path)
    optimizer = torch.optim.AdamW(
        [
            {"params": policy.parameters(), "lr": module.actor_optimizer.lr},
            {"params": value.parameters(), "lr": module.critic_optimizer.lr},
        ],
        weight_decay=module.actor_optimizer.weight_decay,
    )
    assert module.actor_optimizer.weight_decay == module.critic_optimizer.weight_decay
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    trainer = PPOTrainer(
        args=args,
        processing_class=left,
        model=policy,
        ref_model=load_causal_lm(policy_path),
        reward_model=load_reward_model(cfg.model.reward.name_or_path),
        train_dataset=train,
        value_model=value,
        eval_dataset=evaluation,
        optimizers=(optimizer, scheduler),
        callbacks=list(callbacks),
    )
    common.drop_console_callbacks(trainer)
    return trainer, tokenizer


class CaptureAdvantages:
    """Keep TRL PPO's whitened advantages (its only `masked_whiten` call when rewards are not whitened)."""

    def __init__(self):
        from trl.experimental.ppo import ppo_trainer

        self.module, self.original, self.advantages = ppo_trainer, ppo_trainer.masked_whiten, None

    def __enter__(self):
        def masked_whiten(values, mask, shift_mean=True):
            self.advantages = self.original(values, mask, shift_mean).masked_fill(~mask, 0.0)
            return self.advantages

        self.module.masked_whiten = masked_whiten
        return self

    def __exit__(self, *exc):
        self.module.masked_whiten = self.original


class ResponseLengths:
    """Record TRL PPO's response lengths (EOS included) by wrapping its `truncate_response`."""

    def __init__(self):
        from trl.experimental.ppo import ppo_trainer

        self.module, self.original, self.lengths = ppo_trainer, ppo_trainer.truncate_response, []

    def __enter__(self):
        def truncate_response(stop_token_id, pad_token_id, responses):
            truncated = self.original(stop_token_id, pad_token_id, responses)
            self.lengths.append(float((truncated != pad_token_id).sum(1).float().mean()))
            return truncated

        self.module.truncate_response = truncate_response
        return self

    def __exit__(self, *exc):
        self.module.truncate_response = self.original


# ------------------------------------------------------------------------------------------ workers
def worker_ours(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        policy = common.policy_path(args.model, Path(args.workdir))
        cfg = common.compose_ours(EXPERIMENT, common.our_overrides(policy, args.seed, args.iterations, tmp))
        built = common.build_ours(cfg)
        if args.fixed_length:
            common.fix_length(built.module.policy, cfg.module.sampling.max_new_tokens)
        result = common.fit_ours(built, args.warmup)
        common.fix_length(built.module.policy, None)
        result["gold_reward"] = common.gold_reward_of(
            built.module.policy, built.tokenizer, cfg.module.sampling.max_new_tokens
        )
    return result


def worker_trl(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        policy = common.policy_path(args.model, Path(args.workdir))
        cfg = common.compose_ours(EXPERIMENT, common.our_overrides(policy, args.seed, args.iterations, tmp))
        clock = common.trl_step_clock(1)  # one optimizer-step counter tick per PPO iteration
        trainer, tokenizer = build_trl(cfg, policy, args.iterations, args.seed, tmp, callbacks=[clock])
        if args.fixed_length:
            common.fix_length(
                trainer.accelerator.unwrap_model(trainer.model).policy, cfg.module.sampling.max_new_tokens
            )
        with ResponseLengths() as lengths:
            trainer.train()
        common.fix_length(trainer.accelerator.unwrap_model(trainer.model).policy, None)
        result = common.throughput(clock.ends, cfg.data.batch_size, args.warmup)
        result["response_length"] = sum(lengths.lengths[args.warmup :]) / len(lengths.lengths[args.warmup :])
        result["gold_reward"] = common.gold_reward_of(
            trainer.accelerator.unwrap_model(trainer.model).policy, tokenizer, cfg.module.sampling.max_new_tokens
        )
    return result


def trl_policy_loss(new_logprobs, logprobs, advantages, padding_mask, cliprange):
    """TRL 1.12 PPOTrainer's policy loss, transcribed from its inline code (trl/experimental/ppo/ppo_trainer.py)."""
    from trl.experimental.ppo.ppo_trainer import INVALID_LOGPROB, masked_mean

    new_logprobs = torch.masked_fill(new_logprobs, padding_mask, INVALID_LOGPROB)
    logprobs_diff = new_logprobs - logprobs
    ratio = torch.exp(logprobs_diff)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss_max = torch.max(pg_losses, pg_losses2)
    return masked_mean(pg_loss_max, ~padding_mask)


def worker_check(args) -> dict:
    """One identical rollout into both trainers; what each makes of it at the first update."""
    from transformers import TrainerCallback

    from lit_rlhf.losses.ppo import clipped_policy_loss
    from lit_rlhf.ops.forward import sequence_token_logprobs
    from lit_rlhf.task.sources import EmbeddedPrompts

    class Logs(TrainerCallback):
        logs: dict = {}

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs = dict(logs)

    with tempfile.TemporaryDirectory() as tmp:
        policy_path = common.policy_path(args.model, Path(args.workdir))
        cfg = common.compose_ours(EXPERIMENT, common.our_overrides(policy_path, args.seed, 1, tmp))
        ours = common.build_ours(cfg).module
        prompts = [r.prompt for r in EmbeddedPrompts(seed=cfg.seed).load("train")[: cfg.data.batch_size]]
        logs = Logs()
        # One update on the whole batch, so the logged losses are those at the rollout's own parameters.
        trainer, tokenizer = build_trl(
            cfg, policy_path, 1, args.seed, tmp, prompts, [logs], num_ppo_epochs=1, num_mini_batches=1
        )
        batch, prompt_ids, prompt_mask, generation = common.sample_rollout(
            ours.policy, tokenizer, prompts, 1, cfg.module.sampling.max_new_tokens, args.seed
        )
        pad = tokenizer.pad_token_id
        with common.ScriptedGenerate(ours.policy, prompt_ids, prompt_mask, generation.response_ids, pad):
            experience, metrics, _, _ = ours.rollout(batch)
        peer_policy = trainer.accelerator.unwrap_model(trainer.model).policy
        with (
            common.ScriptedGenerate(peer_policy, prompt_ids, prompt_mask, generation.response_ids, pad) as scripted,
            CaptureAdvantages() as captured,
        ):
            trainer.train()
        trl = logs.logs
        # TRL's rows came in its data loader's order; put ours in the same order.
        mask = experience.response_mask[scripted.served]
        our_adv = experience.advantages[scripted.served]
        trl_adv = captured.advantages[:, : mask.shape[1]]
        # Our advantages with the score moved one token later (TRL's placement) cannot be formed here: TRL's
        # GAE also bootstraps from the critic's value after EOS. So report how far apart the two are.
        adv_diff = (our_adv - trl_adv).masked_fill(~mask, 0.0)
        policy_loss, _ = ours.actor_loss(experience, None)
        value_loss, _ = ours.critic_loss(experience)
        checks = [
            common.compare(
                "score incl. missing-EOS penalty (mean)", float(experience.scores.mean()), trl["objective/scores"]
            ),
            common.compare("KL k1 per response (mean)", float(metrics["kl_k1"]), trl["objective/kl"]),
            common.compare("policy loss at the first update", float(policy_loss.detach()), trl["loss/policy_avg"]),
            common.compare("value loss at the first update", float(value_loss.detach()), trl["loss/value_avg"]),
            common.compare("ratio pi/pi_old at the first update", 1.0, trl["val/ratio"]),
            {
                **common.max_diff("whitened advantages, max |diff| over tokens", adv_diff),
                "mean_abs_diff": float(adv_diff.abs().sum() / mask.sum()),
                "correlation": float(torch.corrcoef(torch.stack([our_adv[mask], trl_adv[mask]]))[0, 1]),
            },
        ]
        # PPO's clipped objective on identical inputs: our experience, with the policy moved by one update
        # so that ratios differ from 1 and the clip acts.
        ours.policy.zero_grad()
        policy_loss.backward()
        with torch.no_grad():
            for p in ours.policy.parameters():
                p -= 0.5 * p.grad.sign() * cfg.module.actor_optimizer.lr * 50
            new, _ = sequence_token_logprobs(ours.policy, experience.sequences, experience.attention_mask)
            new = new[:, experience.prompt_length - 1 :]
        mask = experience.response_mask
        old = experience.old_logprobs.masked_fill(~mask, 1.0)
        ours_clipped = clipped_policy_loss(new, old, experience.advantages, mask, cfg.module.clip_eps)
        trl_clipped = trl_policy_loss(new, old, experience.advantages, ~mask, cfg.module.clip_eps)
        checks.append(
            {
                **common.compare(
                    "clipped policy loss, same inputs, ratio != 1", float(ours_clipped.loss), float(trl_clipped)
                ),
                "clipfrac": float(ours_clipped.clipfrac),
            }
        )
        return {"compared": checks, "tokens_per_response": float(mask.sum()) / len(mask)}


def check_summary(check: dict) -> str:
    by = {c["what"]: c for c in check["compared"]}
    same = by["clipped policy loss, same inputs, ratio != 1"]
    value = by["value loss at the first update"]
    return (
        f"same rollout: score diff {by['score incl. missing-EOS penalty (mean)']['abs_diff']:.1e}, "
        f"KL diff {by['KL k1 per response (mean)']['abs_diff']:.1e}, whitened advantages max diff "
        f"{by['whitened advantages, max |diff| over tokens']['abs_diff']:.1e}, value loss {value['ours']:.3f} vs "
        f"{value['trl']:.3f} (TRL also fits one position past EOS); same inputs: clipped policy loss diff "
        f"{same['abs_diff']:.1e} at clipfrac {same['clipfrac']:.2f}"
    )


# ------------------------------------------------------------------------------------- orchestrator
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=9, help="iterations per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="tiny", choices=["tiny", "large"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-check", action="store_true", help="skip the first-step check")
    parser.add_argument("--name", default="", help="suffix of the results file name (e.g. learning)")
    parser.add_argument(
        "--fixed-length", action="store_true", help="no EOS before max new tokens on either side (equal lengths)"
    )
    parser.add_argument("--worker", choices=["ours", "trl", "check"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        common.configure_process(args.threads)
        result = {"ours": worker_ours, "trl": worker_trl, "check": worker_check}[args.worker](args)
        result["peak_rss_mib"] = common.peak_rss_mib()
        Path(args.out).write_text(json.dumps(result))
        return

    try:
        from trl.experimental.ppo import PPOTrainer  # noqa: F401
    except ImportError as error:
        raise SystemExit(
            f"no TRL PPOTrainer here ({error}): run `bash benchmarks/setup_trl.sh` and use "
            "benchmarks/.venv-trl-ppo/bin/python"
        )
    workdir = Path(tempfile.mkdtemp(prefix="lit-rlhf-bench-"))
    policy = common.policy_path(args.model, workdir)
    parameters = common.count_parameters(policy)
    print(
        f"ppo: {args.repeats} rounds of {args.iterations} iterations ({args.warmup} warm-up), model {args.model}",
        flush=True,
    )
    shared = [
        "--iterations",
        str(args.iterations),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--model",
        args.model,
        "--workdir",
        str(workdir),
        *(["--fixed-length"] if args.fixed_length else []),
    ]
    runs = common.interleaved(SCRIPT, shared, args.repeats, args.threads, args.seed)
    summary = common.summarize(runs)
    check = None
    if not args.no_check:
        check = common.run_worker(SCRIPT, ["--worker", "check", *shared, "--seed", str(args.seed)], args.threads)
    name = "_".join(
        [
            "ppo",
            *([args.model] if args.model != "tiny" else []),
            *(["fixed"] if args.fixed_length else []),
            *([args.name] if args.name else []),
        ]
    )
    model = f"{args.model} ({parameters / 1e6:.2f}M)"
    payload = {
        "benchmark": name,
        "command": "benchmarks/.venv-trl-ppo/bin/python " + " ".join(sys.argv),
        "model": model,
        "versions": common.library_versions(),
        "settings": vars(args) | {"workdir": None},
        "summary": summary,
        "runs": runs,
        "first_step_check": check,
    }
    path = common.write_results(name, payload)
    print(f"  wrote {path.relative_to(common.ROOT)}", flush=True)
    print(common.MARKDOWN_HEADER)
    print(common.markdown_row(name, model, summary, check_summary(check) if check else "skipped"))
    print(common.learning_line(name, summary, args.iterations))


if __name__ == "__main__":
    main()
