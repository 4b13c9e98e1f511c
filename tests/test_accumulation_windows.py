"""SFT's accumulation windows: batches drawn N at a time carry their window's response-token total, so the
accumulated gradient is that of the token mean over the window (the last, shorter window included), and a
resumed run draws the same windows."""

from __future__ import annotations

import copy
import itertools

import lightning as L
import numpy as np
import pytest
import torch
from conftest import compose_config
from test_resume_and_export import KillAtBatch

from lit_rlhf.data.record_datamodule import train_loader
from lit_rlhf.data.windows import AccumulationWindows, response_token_counts
from lit_rlhf.modules.common import fit_optimizer_steps
from lit_rlhf.ops.forward import sequence_logprobs
from lit_rlhf.ops.masking import masked_sum
from lit_rlhf.train import build, fit


def _windows(accumulate: int, limit=None, n: int = 14, batch_size: int = 2) -> list[list[tuple[int, int]]]:
    # Example i has i + 1 response tokens; the order is 0, 1, 2, ...
    counts = np.arange(1, n + 1)
    sampler = AccumulationWindows(range(n), batch_size, True, counts, accumulate, limit_batches=limit)
    return [[tuple(key) for key in batch] for batch in sampler]


def test_every_batch_of_a_window_carries_the_window_total():
    # 7 batches of 2: (0,1) (2,3) (4,5) | (6,7) (8,9) (10,11) | (12,13); tokens = index + 1.
    # Windows of 3: 1+2+3+4+5+6 = 21, 7+...+12 = 57, and the last, shorter window 13+14 = 27.
    batches = _windows(accumulate=3)
    assert [[i for i, _ in b] for b in batches] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13]]
    assert [b[0][1] for b in batches] == [21, 21, 21, 57, 57, 57, 27]
    assert all(len({total for _, total in b}) == 1 for b in batches)


def test_the_last_window_ends_where_the_trainer_stops():
    # limit_train_batches=5: windows (0..5) and (6..9): 7+8+9+10 = 34, not the 57 of a whole window.
    assert [b[0][1] for b in _windows(accumulate=3, limit=5)] == [21, 21, 21, 34, 34]
    # A fraction, as Lightning reads it: int(7 * 0.5) = 3 batches, one window.
    assert [b[0][1] for b in _windows(accumulate=3, limit=0.5)] == [21, 21, 21]


def test_one_batch_windows_are_the_batches_themselves():
    assert [b[0][1] for b in _windows(accumulate=1)] == [1 + 2, 3 + 4, 5 + 6, 7 + 8, 9 + 10, 11 + 12, 13 + 14]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    run = build(compose_config("sft_tiny", tmp_path_factory.mktemp("sft"), ["data.batch_size=4"]))
    run.datamodule.setup("fit")
    return run


def _attach(datamodule, accumulate: int):
    """The datamodule as a trainer with `accumulate_grad_batches` would see it."""
    datamodule.trainer = L.Trainer(accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False)
    return datamodule


def test_token_counts_are_the_loss_mask_of_each_example(sft_run):
    datamodule = sft_run.datamodule
    counts = response_token_counts(datamodule.train_items)
    items = list(itertools.islice(datamodule.train_items, 50))
    batch = datamodule.collate(items)
    assert counts[:50].tolist() == batch.loss_mask.sum(1).tolist()
    assert len(set(counts.tolist())) > 1, "ragged responses, or the windows would test nothing"


def test_without_accumulation_the_loader_is_todays(sft_run):
    """N = 1: the same shuffled batches as the plain loader, each its own window."""
    datamodule = sft_run.datamodule
    datamodule.trainer = None
    plain = train_loader(datamodule.train_items, 4, datamodule.collate, datamodule.seed, 0, rank=0, world_size=1)
    for want, got in itertools.islice(zip(plain, datamodule.train_dataloader(), strict=True), 20):
        assert torch.equal(want.input_ids, got.input_ids)
        assert torch.equal(want.loss_mask, got.loss_mask)
        assert int(got.window_tokens) == int(got.loss_mask.sum())


def test_window_totals_sum_the_loss_masks_of_its_batches(sft_run):
    loader = _attach(sft_run.datamodule, 3).train_dataloader()
    batches = list(itertools.islice(loader, 9))
    for window in (batches[0:3], batches[3:6], batches[6:9]):
        total = sum(int(b.loss_mask.sum()) for b in window)
        assert [int(b.window_tokens) for b in window] == [total] * 3


@pytest.mark.parametrize("taken", [2, 3, 4])  # mid-window, at a window's end, one into the next
def test_loader_state_round_trips_mid_window(sft_run, taken):
    datamodule = _attach(sft_run.datamodule, 3)
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    for _ in range(taken):
        next(iterator)
    state = loader.state_dict()
    expected = [next(iterator) for _ in range(4)]

    fresh = datamodule.train_dataloader()
    fresh.load_state_dict(state)
    resumed = list(itertools.islice(iter(fresh), 4))
    for want, got in zip(expected, resumed, strict=True):
        assert torch.equal(want.input_ids, got.input_ids)
        assert int(want.window_tokens) == int(got.window_tokens)


def _token_mean_sgd(policy, windows, lr: float) -> None:
    """The reference: one plain SGD step per window on its response tokens' mean NLL."""
    for window in windows:
        policy.zero_grad()
        nll = sum(-masked_sum(sequence_logprobs(policy, b.input_ids, b.attention_mask)[0], b.loss_mask) for b in window)
        (nll / sum(b.loss_mask.sum() for b in window)).backward()
        with torch.no_grad():
            for p in policy.parameters():
                if p.grad is not None:
                    p -= lr * p.grad


def test_a_shorter_last_window_steps_on_its_own_token_mean(tmp_path):
    """3 batches, N = 2: Lightning steps on batches (0, 1), then on batch 2 alone at the end; it divides each
    batch's loss by N = 2 in both, and each step must equal SGD on its own window's token mean."""
    overrides = [
        # Plain SGD at a constant rate, as the reference below.
        "module.optimizer._target_=torch.optim.SGD",
        "module.optimizer.lr=0.5",
        "module.optimizer.weight_decay=0",
        "~module.optimizer.betas",
        "module.scheduler=null",
        "trainer.gradient_clip_val=null",
        "module.val_sample_batches=0",
        "data.batch_size=2",
        "trainer.accumulate_grad_batches=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=0",
        "validate_after_fit=false",
    ]
    run = build(compose_config("sft_tiny", tmp_path, overrides))
    reference = copy.deepcopy(run.module.policy)
    run.datamodule.setup("fit")
    seen_by_fit = copy.copy(run.datamodule)
    seen_by_fit.trainer = run.trainer  # its accumulate_grad_batches and limit_train_batches
    batches = list(seen_by_fit.train_dataloader())
    assert len(batches) == 3
    first_window = int(batches[0].loss_mask.sum() + batches[1].loss_mask.sum())
    assert [int(b.window_tokens) for b in batches[:2]] == [first_window] * 2
    assert int(batches[2].window_tokens) == int(batches[2].loss_mask.sum()), "the last window is batch 2 alone"
    fit(run)
    assert run.trainer.global_step == 2
    _token_mean_sgd(reference, [batches[:2], batches[2:]], lr=0.5)
    got = torch.cat([p.detach().flatten() for p in run.module.policy.parameters()])
    want = torch.cat([p.detach().flatten() for p in reference.parameters()])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_killed_accumulating_sft_run_resumes_exactly(tmp_path):
    """N = 2, a checkpoint at each window's end: the resumed run draws the same windows and ends on the same weights.

    It failed while configure_optimizers read trainer.estimated_stepping_batches (Lightning #20550): the saved
    loader position was never loaded and the resumed epoch restarted (modules.common.fit_optimizer_steps)."""
    overrides = [
        "module.val_sample_batches=0",
        "data.batch_size=4",
        "trainer.accumulate_grad_batches=2",
        "trainer.limit_train_batches=6",
        "trainer.limit_val_batches=0",
        "validate_after_fit=false",
        "callbacks.checkpoint.every_n_batches=2",
    ]
    uninterrupted = build(compose_config("sft_tiny", tmp_path / "full", overrides))
    fit(uninterrupted)

    killed = build(compose_config("sft_tiny", tmp_path / "killed", overrides))
    killed.trainer.callbacks.append(KillAtBatch(3))
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit(killed)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    resumed = build(compose_config("sft_tiny", tmp_path / "resumed", [*overrides, f"ckpt_path={checkpoint}"]))
    fit(resumed)

    assert resumed.trainer.global_step == uninterrupted.trainer.global_step == 3
    expected = dict(uninterrupted.module.policy.named_parameters())
    for name, value in resumed.module.policy.named_parameters():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=f"{name} differs after resume")


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.accumulate_grad_batches=3", "trainer.limit_train_batches=null", "trainer.max_epochs=2"],
        ["trainer.limit_train_batches=0.5"],
        ["trainer.limit_train_batches=7", "trainer.max_steps=5"],
    ],
)
def test_our_step_count_is_lightnings(tmp_path, overrides):
    counts = []

    class CountSteps(L.Callback):
        def on_train_start(self, trainer, pl_module):
            counts.append((fit_optimizer_steps(trainer), trainer.estimated_stepping_batches))
            trainer.should_stop = True  # the count is all this test needs

    config = ["module.val_sample_batches=0", "trainer.limit_val_batches=0", "validate_after_fit=false", *overrides]
    run = build(compose_config("sft_tiny", tmp_path, config))
    run.trainer.callbacks.append(CountSteps())
    run.trainer.fit(run.module, datamodule=run.datamodule)
    ours, lightnings = counts[0]
    assert ours == lightnings > 0
