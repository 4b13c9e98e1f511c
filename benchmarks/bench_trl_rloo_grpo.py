"""RLOO and GRPO: lit-rlhf's PPOModule (experiments `rloo`, `grpo`) against TRL's RLOOTrainer and GRPOTrainer.

    bash benchmarks/setup_trl.sh          # once: benchmarks/.venv-trl (lit-rlhf + trl 1.16.0)
    benchmarks/.venv-trl/bin/python benchmarks/bench_trl_rloo_grpo.py [--algos rloo grpo] [--repeats 5]
        [--iterations 9] [--warmup 1] [--threads 2] [--model tiny|large] [--fixed-length] [--name SUFFIX]

Episodes (sampled responses) per second, generation plus update, of the shipped experiment config against
the TRL trainer set up from that same composed config: policy, reference (a copy of it), reward model,
prompts, 8 prompts x 4 samples = 32 rollouts per iteration, response length (max new tokens; EOS ends a
response on both sides and mean lengths are reported, or with --fixed-length no EOS before max new tokens on
either side, so every response is exactly that long), update epochs and minibatches, AdamW learning rate,
gradient clipping, clip range, KL placement/estimator/coefficient, seed, torch threads. Each run is its own
subprocess (peak RSS per side); rounds alternate which side goes first; medians are reported, with the
gold reward of each final policy on 128 held-out prompts.

The first-step check feeds one identical rollout batch to both trainers (a scripted `policy.generate`)
and compares advantages, old/reference log-probs, the loss and its gradient at the first update.
Results: benchmarks/results/{rloo,grpo}[_large].json, and a markdown row per algorithm on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _trl_online as common  # noqa: E402
import torch  # noqa: E402

SCRIPT = Path(__file__).resolve()


def trl_args(cfg, algo: str, iterations: int, seed: int, output_dir: str):
    """RLOOConfig / GRPOConfig mirroring the composed lit-rlhf config."""
    module, advantage, kl = cfg.module, cfg.advantage, cfg.regularizer.kl
    samples = advantage.samples_per_prompt
    rollouts = cfg.data.batch_size * samples
    steps_per_iteration = module.num_minibatches * module.ppo_epochs
    shared = dict(
        output_dir=output_dir,
        # One optimizer step per minibatch, `num_minibatches` of them per pass, `ppo_epochs` passes.
        per_device_train_batch_size=rollouts // module.num_minibatches,
        gradient_accumulation_steps=1,
        steps_per_generation=module.num_minibatches,
        num_iterations=module.ppo_epochs,
        num_generations=samples,
        max_completion_length=module.sampling.max_new_tokens,
        temperature=module.sampling.temperature,
        top_k=module.sampling.top_k,
        top_p=module.sampling.top_p,
        learning_rate=module.actor_optimizer.lr,
        weight_decay=module.actor_optimizer.weight_decay,
        lr_scheduler_type="constant",
        max_grad_norm=module.max_grad_norm,
        epsilon=module.clip_eps,
        beta=kl.controller.coef,
        max_steps=iterations * steps_per_iteration,
        seed=seed,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        disable_dropout=True,
        report_to="none",
        save_strategy="no",
        logging_steps=steps_per_iteration,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if algo == "rloo":
        from trl import RLOOConfig

        # lit-rlhf's rloo: k1 per token in the reward (summed over the response), which is TRL RLOO's KL.
        assert kl._target_.endswith("KLInReward") and kl.estimator._target_.endswith("K1Estimator"), kl
        return RLOOConfig(**shared, normalize_advantages=advantage.whiten), steps_per_iteration
    from trl import GRPOConfig

    # lit-rlhf's grpo: beta * masked token-mean of k3 in the loss, policy loss a token-mean over the minibatch
    # (TRL's "bnpo"); TRL's default bias-corrected KL multiplies k3 by the ratio, which ours does not.
    assert kl._target_.endswith("KLInLoss") and kl.estimator._target_.endswith("K3Estimator"), kl
    return (
        GRPOConfig(
            **shared,
            loss_type="bnpo",
            scale_rewards="group" if advantage.scale else "none",
            use_bias_correction_kl=False,
            entropy_coef=module.entropy_coef,
        ),
        steps_per_iteration,
    )


def build_trl(cfg, algo: str, policy_path: str, iterations: int, seed: int, output_dir: str, callbacks=()):
    """The TRL trainer on the same policy, reward model and prompts as the composed config."""
    from datasets import Dataset
    from trl import GRPOTrainer, RLOOTrainer

    from lit_rlhf.models.loading import load_causal_lm, load_reward_model, load_tokenizer
    from lit_rlhf.task.sources import EmbeddedPrompts

    args, steps_per_iteration = trl_args(cfg, algo, iterations, seed, output_dir)
    tokenizer = load_tokenizer(cfg.model.tokenizer.name_or_path)
    reward_model = load_reward_model(cfg.model.reward.name_or_path).eval().requires_grad_(False)
    reward = common.RewardModelScore(reward_model, tokenizer, cfg.module.missing_eos_penalty)
    prompts = Dataset.from_dict({"prompt": [r.prompt for r in EmbeddedPrompts(seed=cfg.seed).load("train")]})
    trainer_class = RLOOTrainer if algo == "rloo" else GRPOTrainer
    trainer = trainer_class(
        model=load_causal_lm(policy_path),
        reward_funcs=[reward],
        args=args,
        train_dataset=prompts,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    common.drop_console_callbacks(trainer)
    return trainer, reward, tokenizer, steps_per_iteration


# ------------------------------------------------------------------------------------------ workers
def worker_ours(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        policy = common.policy_path(args.model, Path(args.workdir))
        cfg = common.compose_ours(args.algo, common.our_overrides(policy, args.seed, args.iterations, tmp))
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
        cfg = common.compose_ours(args.algo, common.our_overrides(policy, args.seed, args.iterations, tmp))
        _, steps_per_iteration = trl_args(cfg, args.algo, args.iterations, args.seed, tmp)
        clock = common.trl_step_clock(steps_per_iteration)
        trainer, reward, tokenizer, _ = build_trl(cfg, args.algo, policy, args.iterations, args.seed, tmp, [clock])
        if args.fixed_length:
            common.fix_length(trainer.model, cfg.module.sampling.max_new_tokens)
        trainer.train()
        common.fix_length(trainer.model, None)
        rollouts = cfg.data.batch_size * cfg.advantage.samples_per_prompt
        result = common.throughput(clock.ends, rollouts, args.warmup)
        # One reward call per generation batch, i.e. per iteration.
        result["response_length"] = sum(reward.lengths[args.warmup :]) / len(reward.lengths[args.warmup :])
        result["gold_reward"] = common.gold_reward_of(
            trainer.accelerator.unwrap_model(trainer.model), tokenizer, cfg.module.sampling.max_new_tokens
        )
    return result


def worker_check(args) -> dict:
    """Identical rollouts into both trainers; compare what each makes of them at the first update."""
    from lit_rlhf.ops.masking import masked_sum
    from lit_rlhf.task.sources import EmbeddedPrompts

    with tempfile.TemporaryDirectory() as tmp:
        policy_path = common.policy_path(args.model, Path(args.workdir))
        cfg = common.compose_ours(args.algo, common.our_overrides(policy_path, args.seed, 1, tmp))
        ours = common.build_ours(cfg).module
        trainer, _, tokenizer, _ = build_trl(cfg, args.algo, policy_path, 1, args.seed, tmp)
        peer = trainer.model
        k = cfg.advantage.samples_per_prompt
        prompts = [r.prompt for r in EmbeddedPrompts(seed=cfg.seed).load("train")[: cfg.data.batch_size]]
        batch, prompt_ids, prompt_mask, generation = common.sample_rollout(
            ours.policy, tokenizer, prompts, k, cfg.module.sampling.max_new_tokens, args.seed
        )

        with common.ScriptedGenerate(
            ours.policy, prompt_ids, prompt_mask, generation.response_ids, tokenizer.pad_token_id
        ):
            experience, metrics, _, _ = ours.rollout(batch)
        with common.ScriptedGenerate(peer, prompt_ids, prompt_mask, generation.response_ids, tokenizer.pad_token_id):
            inputs = trainer._generate_and_score_completions([{"prompt": p} for p in prompts for _ in range(k)])

        mask = experience.response_mask
        our_adv = experience.advantages[:, 0]  # a sequence's advantage sits on all of its tokens
        width = inputs["completion_ids"].shape[1]
        assert torch.equal(inputs["completion_mask"].bool(), mask[:, :width]), "completion masks differ"
        checks = [
            common.max_diff("advantage (max |diff| over 32 responses)", our_adv - inputs["advantages"]),
            common.compare("advantage mean |A|", float(our_adv.abs().mean()), float(inputs["advantages"].abs().mean())),
        ]
        if args.algo == "rloo":
            trl_old = inputs["old_logps"]
            our_old = masked_sum(experience.old_logprobs, mask, dim=1)
            checks.append(common.max_diff("old log-prob summed per response (max |diff|)", our_old - trl_old))
        else:
            ref = inputs["ref_per_token_logps"]
            diff = (experience.ref_logprobs[:, :width] - ref).masked_fill(~mask[:, :width], 0)
            checks.append(common.max_diff("reference per-token log-prob (max |diff|)", diff))

        # The loss and its gradient on the whole batch as one minibatch, at the rollout's own parameters.
        ours.policy.zero_grad()
        our_loss, _ = ours.actor_loss(experience, None)
        our_loss.backward()
        our_grad = common.flat_grad(ours.policy)
        peer.zero_grad()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which is not running here
        peer_loss = trainer._compute_loss(peer, inputs)
        peer_loss.backward()
        peer_grad = common.flat_grad(peer)
        checks.append(
            common.compare("policy loss at the first update", float(our_loss.detach()), float(peer_loss.detach()))
        )
        tokens_per_response = float(mask.sum()) / len(mask)
        agreement = common.gradient_agreement(our_grad, peer_grad)
        if args.algo == "rloo":
            # TRL RLOO: sequence-level ratio, mean over responses; ours: token-level ratio, mean over tokens.
            # At ratio 1 the gradients differ exactly by the mean response length.
            agreement["scale"] = "TRL = ours x mean tokens per response"
            agreement["relative_diff"] = float((peer_grad - tokens_per_response * our_grad).norm() / peer_grad.norm())
        else:
            agreement["scale"] = "equal (both token means over the minibatch)"
            agreement["relative_diff"] = float((peer_grad - our_grad).norm() / peer_grad.norm())
        return {
            "compared": checks,
            "gradient": agreement,
            "tokens_per_response": tokens_per_response,
            "kl_k1_per_response": float(metrics["kl_k1"]),
        }


def check_summary(check: dict) -> str:
    adv = next(c for c in check["compared"] if c["what"].startswith("advantage (max"))
    loss = next(c for c in check["compared"] if c["what"].startswith("policy loss"))
    grad = check["gradient"]
    return (
        f"advantages max diff {adv['abs_diff']:.1e}; loss {loss['ours']:+.4f} vs {loss['trl']:+.4f}; "
        f"gradient cosine {grad['cosine']:.6f}, rel. diff {grad['relative_diff']:.1e} ({grad['scale']})"
    )


# ------------------------------------------------------------------------------------- orchestrator
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["rloo", "grpo"], choices=["rloo", "grpo"])
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
    parser.add_argument("--algo", choices=["rloo", "grpo"], help=argparse.SUPPRESS)
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
        import trl  # noqa: F401
    except ImportError:
        raise SystemExit(
            "TRL is not installed here: run `bash benchmarks/setup_trl.sh` and use benchmarks/.venv-trl/bin/python"
        )
    workdir = Path(tempfile.mkdtemp(prefix="lit-rlhf-bench-"))
    policy = common.policy_path(args.model, workdir)
    parameters = common.count_parameters(policy)
    rows, notes = [], []
    for algo in args.algos:
        print(
            f"{algo}: {args.repeats} rounds of {args.iterations} iterations "
            f"({args.warmup} warm-up), model {args.model}",
            flush=True,
        )
        shared = [
            "--algo",
            algo,
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
                algo,
                *([args.model] if args.model != "tiny" else []),
                *(["fixed"] if args.fixed_length else []),
                *([args.name] if args.name else []),
            ]
        )
        model = f"{args.model} ({parameters / 1e6:.2f}M)"
        payload = {
            "benchmark": name,
            "command": "benchmarks/.venv-trl/bin/python " + " ".join(sys.argv),
            "model": model,
            "versions": common.library_versions(),
            "settings": vars(args) | {"workdir": None},
            "summary": summary,
            "runs": runs,
            "first_step_check": check,
        }
        path = common.write_results(name, payload)
        rows.append(common.markdown_row(name, model, summary, check_summary(check) if check else "skipped"))
        notes.append(common.learning_line(name, summary, args.iterations))
        print(f"  wrote {path.relative_to(common.ROOT)}", flush=True)
    print(common.MARKDOWN_HEADER)
    print("\n".join(rows))
    print("\n".join(notes))


if __name__ == "__main__":
    main()
