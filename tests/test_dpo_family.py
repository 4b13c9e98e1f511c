"""The DPO loss family beyond sigmoid: hand-computed values, BCO's saved baseline, weighted mixes, end-to-end runs."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lit_rlhf.config import CONFIG_DIR
from lit_rlhf.errors import ConfigError
from lit_rlhf.losses.anchored import apo_down_loss, apo_zero_loss, bco_pair_loss, nca_pair_loss
from lit_rlhf.losses.aot import aot_loss, aot_pair_loss
from lit_rlhf.losses.dpo import BCOPairLoss, MixedLoss, PairLogps, SigmoidLoss, SimPOLoss
from lit_rlhf.losses.dpo_sigmoid import dpo_sigmoid_loss
from lit_rlhf.losses.ipo import sppo_hard_loss
from lit_rlhf.losses.margin_shapes import discopop_loss, exo_pair_loss
from lit_rlhf.losses.reference_free import sft_loss, simpo_loss
from lit_rlhf.modules.dpo import DPOModule
from lit_rlhf.train import build, fit

# π_c = -1, π_r = -3, ref_c = ref_r = -2  ->  Δ_w = 1, Δ_l = -1, h = 2
LOGPS = (torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))


def neg_logsigmoid(z: float) -> float:
    return math.log1p(math.exp(-z))


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ hand-computed losses
def test_exo_pair_by_hand():
    # β = 0.5, ε = 0.1: z = βh = 1; σ(1) = 0.731059, log σ(1) = -0.313262, σ(-1) = 0.268941, log σ(-1) = -1.313262
    # 0.731059 · (-0.313262 - log 0.9) + 0.268941 · (-1.313262 - log 0.1)
    #   = 0.731059 · (-0.207901) + 0.268941 · 0.989323 = -0.151988 + 0.266070 = 0.114082
    close(exo_pair_loss(*LOGPS, beta=0.5, label_smoothing=0.1), [0.1140821])
    with pytest.raises(ValueError, match=r"\(0, 0.5\]"):
        exo_pair_loss(*LOGPS, beta=0.5, label_smoothing=0.0)


def test_nca_pair_by_hand():
    # β = 0.5: r_w = 0.5, r_l = -0.5; -log σ(0.5) = 0.474077, -log σ(-0.5) = 0.974077
    # 0.474077 + ½ · 0.974077 + ½ · 0.474077 (-log σ(-r_l) = -log σ(0.5)) = 1.198154
    close(nca_pair_loss(*LOGPS, beta=0.5), [1.1981540])


def test_bco_pair_by_hand():
    # β = 0.5, δ = 0: -log σ(0.5) - log σ(0.5) = 2 · 0.474077 = 0.948154
    close(bco_pair_loss(*LOGPS, beta=0.5, baseline=0.0), [0.9481540])
    # δ = 0.5: -log σ(0.5 - 0.5) - log σ(-(-0.5 - 0.5)) = log 2 + 0.313262 = 1.006409
    close(bco_pair_loss(*LOGPS, beta=0.5, baseline=0.5), [1.0064089])


def test_sppo_hard_by_hand():
    # β = 0.5: target 1/(2β) = 1: (1 - 1)² + (-1 + 1)² = 0;  β = 0.25: target 2: (1 - 2)² + (-1 + 2)² = 2
    close(sppo_hard_loss(*LOGPS, beta=0.5), [0.0])
    close(sppo_hard_loss(*LOGPS, beta=0.25), [2.0])


def test_apo_by_hand():
    # β = 0.5: zero: (1 - σ(0.5)) + σ(-0.5) = 2 · 0.377541 = 0.755081
    close(apo_zero_loss(*LOGPS, beta=0.5), [0.7550813])
    # down: σ(βΔ_w) + 1 - σ(βh) = σ(0.5) + 1 - σ(1) = 0.622459 + 0.268941 = 0.891401
    close(apo_down_loss(*LOGPS, beta=0.5), [0.8914008])


def test_discopop_by_hand():
    # β = 0.5, τ = 1: z = 1, m = σ(1) = 0.731059: 0.268941 · 0.313262 + 0.731059 · e^-1 = 0.084250 + 0.268941 = 0.353190
    close(discopop_loss(*LOGPS, beta=0.5, tau=1.0), [0.3531905])
    # τ = 0.05: m = σ(20) ≈ 1, so the exponential part alone: e^-1 = 0.367879
    close(discopop_loss(*LOGPS, beta=0.5, tau=0.05), [math.exp(-1.0)])


# Two pairs whose sorted order differs from the batch order, for the AOT losses:
# π_c - π_r = [2, -1], ref_c - ref_r = [0, 3];  Δ_w = [0, -1], Δ_l = [-2, 3].
AOT_LOGPS = (torch.tensor([0.0, -1.0]), torch.tensor([-2.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.0, -3.0]))


def test_aot_sorts_margins_by_hand():
    # sort([2, -1]) - sort([0, 3]) = [-1, 2] - [0, 3] = [-1, -1]; β = 1: -log σ(-1) = 1.313262 each.
    # (Unsorted, DPO's h = [2, -4] would give [0.126928, 4.018150].)
    close(aot_loss(*AOT_LOGPS, beta=1.0, label_smoothing=0.0), [1.3132617, 1.3132617])


def test_aot_pair_sorts_each_side_by_hand():
    # sort(Δ_w) - sort(Δ_l) = [-1, 0] - [-2, 3] = [1, -3]; β = 1: [-log σ(1), -log σ(-3)] = [0.313262, 3.048587]
    close(aot_pair_loss(*AOT_LOGPS, beta=1.0, label_smoothing=0.0), [0.3132617, 3.0485874])


def test_sft_is_the_token_mean_nll():
    # -(-6 - 3) / (3 + 1) = 2.25 for both pairs (regularizer/nll's per-response mean would give (2 + 3)/2 = 2.5).
    close(sft_loss(torch.tensor([-6.0, -3.0]), torch.tensor([3, 1])), [2.25, 2.25])


def test_simpo_length_normalises_and_needs_no_reference():
    # π_c = -4 over 2 tokens -> -2, π_r = -9 over 3 tokens -> -3; β = 1, γ = 0.5: -log σ(1 · 1 - 0.5) = 0.474077
    pairs = PairLogps(torch.tensor([-4.0]), torch.tensor([-9.0]), None, None, torch.tensor([2]), torch.tensor([3]))
    loss_fn = SimPOLoss(beta=1.0, gamma=0.5)
    assert loss_fn.needs_reference is False
    close(loss_fn(pairs), [neg_logsigmoid(0.5)])
    close(simpo_loss(torch.tensor([-2.0]), torch.tensor([-3.0]), beta=1.0, gamma=0.5), [0.4740770])


# ------------------------------------------------------------------ BCO's running reward shift
def one_token_pairs(policy_chosen, policy_rejected, reference=-2.0) -> PairLogps:
    ones, ref = torch.tensor([1]), torch.tensor([reference])
    return PairLogps(torch.tensor([policy_chosen]), torch.tensor([policy_rejected]), ref, ref, ones, ones)


def test_bco_baseline_is_the_running_mean_of_batch_rewards():
    loss_fn = BCOPairLoss(beta=0.5, baseline="running_mean")
    # Batch 1: β·Δ = [0.5, -0.5], mean 0 -> δ = 0.
    loss_fn.update(one_token_pairs(-1.0, -3.0))
    assert loss_fn.reward_mean == 0.0
    # Batch 2: Δ = [2, 1], β·Δ = [1, 0.5], mean 0.75 -> δ = (0 + 0.75) / 2 = 0.375
    second = one_token_pairs(0.0, -1.0)
    loss_fn.update(second)
    assert loss_fn.reward_mean == pytest.approx(0.375)
    # -log σ(1 - 0.375) - log σ(-(0.5 - 0.375)) = 0.428701 + 0.757599 = 1.186300
    close(loss_fn(second), [1.1862997])
    # The state round-trips; `none` never moves δ off 0 (TRL 1.16's bco_pair).
    restored = BCOPairLoss(beta=0.5, baseline="running_mean")
    restored.load_state_dict(loss_fn.state_dict())
    close(restored(second), [1.1862997])
    fixed = BCOPairLoss(beta=0.5, baseline="none")
    fixed.update(second)
    assert fixed.reward_mean == 0.0
    with pytest.raises(ConfigError, match="running_mean, none"):
        BCOPairLoss(beta=0.5, baseline="ema")


def test_bco_baseline_is_saved_in_and_restored_from_the_checkpoint(tmp_path):
    overrides = [*FAST_DPO, "loss/dpo=bco_pair"]
    first = build(compose_config("dpo", tmp_path / "first", overrides))
    fit(first)
    state = first.module.loss_fn.state_dict()["bco_pair"]
    assert state["batches"] == 2 and state["reward_mean"] != 0.0
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["dpo_loss_state"] == {"bco_pair": state}
    # Resumed for a second epoch of 2 batches, δ keeps averaging over all 4 instead of restarting.
    resumed_overrides = [*overrides, f"ckpt_path={checkpoint}", "trainer.max_epochs=2"]
    resumed = build(compose_config("dpo", tmp_path / "resumed", resumed_overrides))
    fit(resumed)
    assert resumed.module.loss_fn.state_dict()["bco_pair"]["batches"] == 4


# ------------------------------------------------------------------ mixing losses
def composed_loss(choices: str, overrides: list[str] = ()):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=dpo", f"loss/dpo={choices}", *overrides])
    return instantiate(cfg.loss.dpo)


def test_a_mix_is_the_weighted_sum_of_its_parts():
    generator = torch.Generator().manual_seed(0)
    logps = -10.0 * torch.rand(4, 6, generator=generator)
    lengths = torch.randint(1, 9, (2, 6), generator=generator)
    pairs = PairLogps(*logps, *lengths)
    loss_fn = composed_loss("[sigmoid,bco_pair,sft]", ["loss.dpo.weights.sigmoid=0.8", "loss.dpo.weights.bco_pair=0.2"])
    assert loss_fn.weights == {"sigmoid": 0.8, "bco_pair": 0.2, "sft": 1.0}
    # Fresh BCO: δ = 0. Each part by its own function, with the shared β = 0.1:
    expected = (
        0.8 * dpo_sigmoid_loss(*logps, beta=0.1)
        + 0.2 * bco_pair_loss(*logps, beta=0.1, baseline=0.0)
        + 1.0 * sft_loss(logps[0], lengths[0])
    )
    torch.testing.assert_close(loss_fn(pairs), expected)
    # One β for every term, as TRL's: loss.dpo.beta (what dpo_optuna searches) reaches them all.
    loss_fn = composed_loss("[sigmoid,bco_pair]", ["loss.dpo.beta=0.3"])
    assert [term.beta for term in loss_fn.terms.values()] == [0.3, 0.3]


def test_a_single_choice_is_a_mix_of_one():
    loss_fn = composed_loss("sigmoid")
    assert list(loss_fn.terms) == ["sigmoid"] and loss_fn.needs_reference
    assert composed_loss("simpo").needs_reference is False
    assert composed_loss("[simpo,sft]").needs_reference is False
    assert composed_loss("[simpo,sigmoid]").needs_reference is True


def test_a_mix_needs_one_weight_per_term():
    with pytest.raises(ConfigError, match="one weight"):
        MixedLoss(beta=0.1, weights={"sigmoid": 1.0}, terms={"hinge": SigmoidLoss(beta=0.1, label_smoothing=0.0)})
    with pytest.raises(ConfigError, match=">= 0"):
        MixedLoss(beta=0.1, weights={"s": -1.0}, terms={"s": SigmoidLoss(beta=0.1, label_smoothing=0.0)})


# ------------------------------------------------------------------ end to end
# Two training steps at a learning rate that moves the policy off the reference, so that the sorted (AOT) and
# the anchored losses differ from DPO's on the fixed batch below.
FAST_DPO = [
    "data.batch_size=4",
    "data.val_batch_size=8",
    "module.val_sample_batches=0",
    "module.scheduler=null",
    "module.optimizer.lr=1.0e-2",
    "trainer.limit_val_batches=0",
    "validate_after_fit=false",
]


def expected_loss(name: str, term, beta: float, pairs: PairLogps, bco_baseline: float) -> torch.Tensor:
    """The (B,) loss of choice `name` by its pure function, with the hyperparameters of its config `term`."""
    four, averaged = pairs.four(), pairs.per_token()
    losses = {
        "sigmoid": lambda: dpo_sigmoid_loss(*four, beta=beta),
        "exo_pair": lambda: exo_pair_loss(*four, beta, term.label_smoothing),
        "nca_pair": lambda: nca_pair_loss(*four, beta),
        "bco_pair": lambda: bco_pair_loss(*four, beta, bco_baseline),
        "sppo_hard": lambda: sppo_hard_loss(*four, beta),
        "aot": lambda: aot_loss(*four, beta, term.label_smoothing),
        "aot_pair": lambda: aot_pair_loss(*four, beta, term.label_smoothing),
        "apo_zero": lambda: apo_zero_loss(*four, beta),
        "apo_down": lambda: apo_down_loss(*four, beta),
        "discopop": lambda: discopop_loss(*four, beta, term.tau),
        "sft": lambda: sft_loss(pairs.policy_chosen, pairs.chosen_lengths),
        "simpo": lambda: simpo_loss(averaged.policy_chosen, averaged.policy_rejected, beta, term.gamma),
    }
    return losses[name]()


NEW_CHOICES = [
    "exo_pair",
    "nca_pair",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_pair",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "simpo",
    "[sigmoid,bco_pair]",
]


@pytest.mark.parametrize("choice", NEW_CHOICES)
def test_every_new_choice_trains_and_is_the_loss_the_module_uses(tmp_path, choice):
    run = build(compose_config("dpo", tmp_path, [*FAST_DPO, f"loss/dpo={choice}"]))
    fit(run)
    module = run.module.eval()
    run.datamodule.setup()
    batch = next(iter(run.datamodule.val_dataloader()))
    with torch.no_grad():
        loss, _ = module.step(batch)  # the module's own path (eval: BCO's δ does not move)
        logps, lengths = DPOModule.completion_logps(module.policy, batch)
        # Reference-free choices run no reference; sigmoid's loss below still needs one: the SFT model.
        reference = module.reference_logps(batch, module.layout(batch))
        if reference is None:
            reference = DPOModule.completion_logps(instantiate(run.cfg.model.policy), batch)[0]
    chosen, rejected = batch.better_idx, batch.worse_idx
    pairs = PairLogps(
        logps[chosen], logps[rejected], reference[chosen], reference[rejected], lengths[chosen], lengths[rejected]
    )
    loss_cfg = run.cfg.loss.dpo
    assert list(loss_cfg.terms) == (["sigmoid", "bco_pair"] if choice.startswith("[") else [choice])
    bco = module.loss_fn.terms.get("bco_pair")
    if bco is not None:
        assert bco.batches == 2 and bco.reward_mean != 0.0, "BCO's δ learns from every training batch"
    baseline = bco.reward_mean if bco else 0.0
    expected = sum(
        weight * expected_loss(name, loss_cfg.terms[name], loss_cfg.beta, pairs, baseline).mean()
        for name, weight in loss_cfg.weights.items()
    )
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    # The choice changed the loss: DPO's sigmoid loss on the same batch is another number.
    sigmoid_loss = expected_loss("sigmoid", None, loss_cfg.beta, pairs, 0.0).mean()
    assert abs(float(loss) - float(sigmoid_loss)) > 1e-3
