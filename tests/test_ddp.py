"""Data parallelism changes the speed, not the update: 2 DDP ranks × batch 4 train the weights 1 process ×
batch 8 trains (SFT, RM, DPO; PPO on a fixed rollout), with 2 gloo processes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CLI_FAST, cli, read_metrics

import lit_rlhf.modules.ppo as ppo_module
from lit_rlhf.data.sharding import ShardedShuffle, shard_of_permutation

WORKER = Path(__file__).with_name("ddp_worker.py")
STAGES = ("sft_tiny", "rm_tiny", "dpo", "ppo_kl")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both sides of tests/ddp_worker.py, run at once: (weights, checks) per world size."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for command in ([sys.executable, str(WORKER), str(out), "1"], [*launch, str(WORKER), str(out), "2"])
    ]
    for run in runs:
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, output[-3000:]
    return {
        world: (
            torch.load(out / f"world{world}.pt", weights_only=True),
            json.loads((out / f"world{world}.json").read_text()),
        )
        for world in (1, 2)
    }


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_two_ranks_of_batch_4_train_the_weights_of_one_process_of_batch_8(trained, stage):
    (single, single_checks), (parallel, _) = trained[1], trained[2]
    # The steps moved the weights, so equal weights are not the untrained ones.
    assert single_checks["largest_change"][stage] > 1e-2
    assert single[stage].keys() == parallel[stage].keys()
    for name, weight in single[stage].items():
        torch.testing.assert_close(parallel[stage][name], weight, rtol=0, atol=1e-5, msg=f"{stage}: {name}")


@pytest.mark.slow
def test_a_ddp_run_stopped_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_one(trained):
    (single, _), (parallel, _) = trained[1], trained[2]
    for name, weight in single["sft_tiny"].items():
        torch.testing.assert_close(parallel["sft_tiny_resumed"][name], weight, rtol=0, atol=1e-5, msg=name)


@pytest.mark.slow
def test_statistics_over_ranks_equal_those_of_the_whole_batch(trained):
    _, checks = trained[2]
    assert checks["whiten_error"] < 1e-6, "advantage whitening over both ranks' halves = over the whole"
    assert checks["global_mean_error"] < 1e-6
    assert checks["gathered_equal"]
    assert checks["every_rank_of_rank0_only"] is False, "a decision true on one rank only is false for all"
    assert checks["rank_share_sum"] == pytest.approx(2.0), "rank weights average to 1"


@pytest.mark.slow
def test_ppo_under_ddp_from_the_command_line_leaves_one_checkpoint_and_one_export(tmp_path):
    result = cli(
        [
            "+experiment=ppo_kl",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            *CLI_FAST,
            "trainer.val_check_interval=2",
            f"paths.output_dir={tmp_path / 'run'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [".lit_rlhf", "last.ckpt"]  # + our marker
    assert (run / "export" / "model.safetensors").is_file()
    assert any("val/gold_reward" in row for row in read_metrics(run))
    assert (result.stdout + result.stderr).count("checkpoint: ") == 1, "only rank 0 reports"
    assert not list(tmp_path.glob("outputs")), "rank 1 wrote no run folder of its own"


# ------------------------------------------------------------------ in one process
def test_ranks_read_disjoint_shares_that_batch_like_one_process():
    size, seed, world, batch = 21, 3, 2, 4
    shares = [list(ShardedShuffle(size, seed, rank, world)) for rank in range(world)]
    whole = list(ShardedShuffle(size, seed, 0, 1))
    assert not set(shares[0]) & set(shares[1]) and len(shares[0]) == len(shares[1]) == size // world
    for step in range(len(shares[0]) // batch):
        rank_batches = [share[step * batch : (step + 1) * batch] for share in shares]
        assert sorted(rank_batches[0] + rank_batches[1]) == sorted(whole[step * 2 * batch : (step + 1) * 2 * batch])
    assert shard_of_permutation(list(range(7)), 1, 3) == [1, 4]


def test_a_sampler_resumes_mid_pass_and_draws_a_new_permutation_each_pass():
    sampler = ShardedShuffle(10, seed=0, rank=1, world_size=2)
    first_pass = iter(sampler)
    drawn = [next(first_pass) for _ in range(2)]
    state = sampler.state_dict()
    resumed = ShardedShuffle(10, seed=0, rank=1, world_size=2)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert drawn + rest == sampler.indices(0)
    assert list(resumed) == resumed.indices(1) != resumed.indices(0)


def test_pretraining_draws_continue_into_further_permutations():
    sampler = ShardedShuffle(4, seed=0, rank=0, world_size=2, num_samples=5)
    indices = list(sampler)
    assert len(indices) == 5 and set(indices) <= {0, 1, 2, 3}


def test_each_rank_and_iteration_samples_with_its_own_seed(monkeypatch):
    class FakeModule:
        seed = 7

        class trainer:
            class fit_loop:
                total_batch_idx = 3

    seeds = set()
    for rank in (0, 1):
        monkeypatch.setattr(ppo_module, "rank", lambda rank=rank: rank)
        seeds.add(ppo_module.PPOModule.iteration_seed(FakeModule()))
    FakeModule.trainer.fit_loop.total_batch_idx = 4
    seeds.add(ppo_module.PPOModule.iteration_seed(FakeModule()))
    assert len(seeds) == 3
