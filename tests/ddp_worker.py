"""Train each stage a few steps, in one process or as one rank of a DDP run; rank 0 saves the weights.

    python tests/ddp_worker.py OUT 1                                      # one process, batch 8
    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py OUT 2    # 2 ranks x batch 4

`tests/test_ddp.py` compares OUT/world1 with OUT/world2. Plain SGD without schedule or clipping: a
wrongly scaled or weighted gradient shows in the weights (Adam's first steps are nearly sign(g)).
PPO trains on a fixed rollout computed before any process group exists; one process trains on all of
it, each rank on its half.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import torch.distributed as dist
from hydra import compose, initialize_config_dir
from test_resume_and_export import KillAtBatch

from lit_rlhf.config import CONFIG_DIR, register_resolvers
from lit_rlhf.ops import distributed
from lit_rlhf.ops.masking import masked_whiten
from lit_rlhf.train import build

GLOBAL_BATCH, STEPS = 8, 3


def sgd(lr: float) -> list[str]:
    return ["module.optimizer._target_=torch.optim.SGD", f"module.optimizer.lr={lr}", "module.scheduler=null"]


# Learning rates large enough to move the weights, small enough that float32 noise is not amplified.
PPO_SGD = [f"module.{m}_optimizer._target_=torch.optim.SGD" for m in ("actor", "critic")]
PPO_SGD += ["module.actor_optimizer.lr=0.2", "module.critic_optimizer.lr=0.01"]
# PPO first: its fixed rollout is made before the first fit starts the process group.
STAGES = {
    "ppo_kl": [*PPO_SGD, "module.max_grad_norm=1.0e6", "module.num_minibatches=1", "module.ppo_epochs=2"],
    "sft_tiny": [*sgd(0.5), "~module.optimizer.betas", "module.val_sample_batches=0"],
    "rm_tiny": sgd(0.1),
    "dpo": [*sgd(0.5), "module.val_sample_batches=0"],
}


def stage_config(experiment: str, overrides: list[str], out: Path, world: int, checkpoint: bool = False):
    parallel = ["trainer=ddp", "trainer.devices=2"] if world > 1 else ["trainer.devices=1"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"+experiment={experiment}",
                *parallel,
                "trainer.accelerator=cpu",
                f"data.batch_size={GLOBAL_BATCH // world}",
                f"trainer.limit_train_batches={STEPS if experiment != 'ppo_kl' else 1}",
                "trainer.max_epochs=1",
                "trainer.limit_val_batches=0",
                "validate_before_fit=false",
                "validate_after_fit=false",
                "logger=csv",
                *([] if checkpoint else ["~callbacks.checkpoint"]),
                "~callbacks.export",
                "~callbacks.progress_bar",
                "+trainer.enable_progress_bar=false",
                f"paths.output_dir={out / experiment}",
                *overrides,
            ],
        )


def fixed_rollout(run):
    """One rollout of GLOBAL_BATCH prompts, computed as a single process would (no process group yet)."""
    assert not dist.is_initialized()
    run.datamodule.setup("fit")
    loader = run.datamodule.train_dataloader()
    batch = run.datamodule.on_before_batch_transfer(next(iter(loader))[0], 0)  # (batch, index, loader)
    prompts = batch.prompts
    if len(prompts.prompts) < GLOBAL_BATCH:  # a rank's loader holds half a batch; take the whole one
        raise RuntimeError("the PPO rollout needs the whole batch")
    with torch.no_grad():
        return run.module.rollout(prompts)


def trained_weights(module) -> dict[str, torch.Tensor]:
    trained = {name: getattr(module, name, None) for name in ("policy", "critic", "model")}
    return {
        f"{name}.{key}": value.detach().clone()
        for name, model in trained.items()
        if model is not None
        for key, value in model.state_dict().items()
    }


def train(experiment: str, overrides: list[str], out: Path, world: int) -> tuple[dict[str, torch.Tensor], float]:
    """The trained weights after fit, and the largest change of any weight (so equality is not trivial)."""
    run = build(stage_config(experiment, overrides, out, world))
    if experiment == "ppo_kl":
        # The whole rollout, made by a one-process build with the global batch (same seed, same weights).
        whole = build(stage_config(experiment, overrides, out / "rollout", 1))
        experience, metrics, prompts, responses = fixed_rollout(whole)
        rank = int(os.environ.get("RANK", 0))
        rows = torch.arange(len(experience)).chunk(world)[rank]
        mine = experience.select(rows)
        run.module.rollout = lambda batch: (mine, dict(metrics), prompts, responses)
    before = trained_weights(run.module)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    after = trained_weights(run.module)
    return after, max(float((after[key] - before[key]).abs().max()) for key in after)


def killed_and_resumed_sft(out: Path, world: int) -> dict[str, torch.Tensor]:
    """SFT killed at its third step after a checkpoint at the second (rank 0's), then resumed by every rank."""
    every_two = [*STAGES["sft_tiny"], "callbacks.checkpoint.every_n_batches=2"]
    killed = build(stage_config("sft_tiny", every_two, out / "killed", world, checkpoint=True))
    killed.trainer.callbacks.append(KillAtBatch(2))
    try:
        killed.trainer.fit(killed.module, datamodule=killed.datamodule)
    except RuntimeError as error:
        assert "simulated kill" in str(error)
    checkpoint = out / "killed" / "sft_tiny" / "checkpoints" / "last.ckpt"
    resumed = build(stage_config("sft_tiny", every_two, out / "resumed", world, checkpoint=True))
    resumed.trainer.fit(resumed.module, datamodule=resumed.datamodule, ckpt_path=checkpoint)
    assert resumed.trainer.global_step == STEPS
    return trained_weights(resumed.module)


def collective_checks() -> dict:
    """The ops.distributed statistics on each rank's half against the whole, on rank 0's view."""
    torch.manual_seed(0)
    values, mask = torch.randn(6, 5), torch.rand(6, 5) > 0.3
    halves = torch.arange(6).chunk(distributed.world_size())[distributed.rank()]
    whitened = distributed.global_masked_whiten(values[halves], mask[halves])
    return {
        "whiten_error": float((whitened - masked_whiten(values, mask)[halves]).abs().max()),
        "gathered_equal": bool(torch.equal(distributed.gather_rows(values[halves]), values)),
        "every_rank_of_rank0_only": distributed.every_rank(distributed.rank() == 0),
        "rank_share_sum": distributed.total_over_ranks(distributed.rank_share(float(distributed.rank() + 1))),
        "global_mean_error": float((distributed.global_mean(values[halves]) - values.mean()).abs()),
    }


def main(out: Path, world: int, extra: list[str]) -> None:
    register_resolvers()
    torch.set_num_threads(1)
    weights, checks = {}, {"largest_change": {}}
    for experiment, overrides in STAGES.items():
        weights[experiment], change = train(experiment, [*overrides, *extra], out / f"world{world}", world)
        checks["largest_change"][experiment] = change
    if world > 1:
        weights["sft_tiny_resumed"] = killed_and_resumed_sft(out / "resume", world)
        checks |= collective_checks()
    if int(os.environ.get("RANK", 0)) == 0:
        torch.save(weights, out / f"world{world}.pt")
        (out / f"world{world}.json").write_text(json.dumps(checks))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
