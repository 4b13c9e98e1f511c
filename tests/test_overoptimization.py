"""Over-optimization tools: the analytic best-of-n KL, choosing the best of n by the proxy, Gao et al.'s fits,
reward-model ensembles, and grouping a sweep's runs by everything but the seed."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_rlhf.analysis.overoptimization import gao_fits, seed_groups
from lit_rlhf.overoptimization.bon import best_of_first_n, bon_kl, expected_best_of_n
from lit_rlhf.overoptimization.fits import fit_gao, gao_curve
from lit_rlhf.rewards import Completions, RewardEnsemble, aggregate_rewards
from lit_rlhf.runs import RunHistory
from lit_rlhf.sweep import seed_group_table


# ----------------------------------------------------------------- best-of-n
def test_bon_kl_is_log_n_minus_n_minus_1_over_n():
    assert bon_kl(1) == 0.0
    assert bon_kl(2) == pytest.approx(math.log(2) - 0.5)  # 0.1931
    assert bon_kl(64) == pytest.approx(4.158883 - 63 / 64)  # 3.1745


@pytest.mark.parametrize("n", [2, 4, 16])
def test_bon_kl_matches_the_best_of_n_distribution_over_many_outcomes(n):
    """Over N equally likely outcomes with distinct rewards, best-of-n picks the i-th ranked with
    probability (i^n - (i-1)^n) / N^n; its KL to uniform tends to log n - (n-1)/n as N grows."""
    big = 200_000
    i = np.arange(1, big + 1, dtype=float)
    p = (i / big) ** n - ((i - 1) / big) ** n
    kl = float(np.sum(p[p > 0] * np.log(p[p > 0] * big)))
    assert kl == pytest.approx(bon_kl(n), abs=1e-3)


def test_best_of_n_is_chosen_by_the_proxy_not_the_gold():
    # Prompt 0: proxy ranks sample 1 above 0, sample 3 above all; sample 1's gold is the worst.
    proxy = torch.tensor([[0.1, 0.9, 0.5, 2.0], [3.0, 1.0, 2.0, 0.0]])
    gold = torch.tensor([[1.0, -5.0, 3.0, 4.0], [7.0, 8.0, 9.0, 10.0]])
    expected_gold = {1: [1.0, 7.0], 2: [-5.0, 7.0], 3: [-5.0, 7.0], 4: [4.0, 7.0]}
    expected_proxy = {1: [0.1, 3.0], 2: [0.9, 3.0], 3: [0.9, 3.0], 4: [2.0, 3.0]}
    for n in range(1, 5):
        best_proxy, best_gold = best_of_first_n(proxy, gold, n)
        assert best_gold.tolist() == expected_gold[n]
        assert best_proxy.tolist() == pytest.approx(expected_proxy[n])


def test_the_subset_estimator_is_the_mean_over_every_size_n_subset():
    generator = torch.Generator().manual_seed(0)
    proxy, gold = torch.randn(3, 6, generator=generator), torch.randn(3, 6, generator=generator)
    for n in range(1, 7):
        expected_proxy, expected_gold = [], []
        for row in range(3):
            picks = [max(subset, key=lambda j: proxy[row, j]) for subset in itertools.combinations(range(6), n)]
            expected_proxy.append(float(np.mean([proxy[row, j] for j in picks])))
            expected_gold.append(float(np.mean([gold[row, j] for j in picks])))
        got_proxy, got_gold = expected_best_of_n(proxy, gold, n)
        assert got_proxy.tolist() == pytest.approx(expected_proxy, abs=1e-6)
        assert got_gold.tolist() == pytest.approx(expected_gold, abs=1e-6)
    # n = 1 is the plain mean; n = N the single best by the proxy.
    assert expected_best_of_n(proxy, gold, 1)[1].tolist() == pytest.approx(gold.mean(1).tolist(), abs=1e-6)
    assert expected_best_of_n(proxy, gold, 6)[1].tolist() == pytest.approx(best_of_first_n(proxy, gold, 6)[1].tolist())


# ----------------------------------------------------------------------- fits
@pytest.mark.parametrize(("form", "alpha", "beta"), [("bon", 1.5, 0.4), ("rl", 2.0, 0.7)])
def test_gao_fits_recover_known_coefficients(form, alpha, beta):
    d = np.linspace(0.1, 4.0, 25)
    exact = fit_gao(form, d, gao_curve(form, d, alpha, beta))
    assert (exact.alpha, exact.beta) == (pytest.approx(alpha), pytest.approx(beta))
    assert exact.rmse == pytest.approx(0.0, abs=1e-9)
    noisy = fit_gao(form, d, gao_curve(form, d, alpha, beta) + np.random.default_rng(0).normal(0, 0.05, d.size))
    assert noisy.alpha == pytest.approx(alpha, abs=0.1) and noisy.beta == pytest.approx(beta, abs=0.05)
    # The other form does not describe the data: its residual is far from zero.
    other = fit_gao("rl" if form == "bon" else "bon", d, gao_curve(form, d, alpha, beta))
    assert other.rmse > 0.05


def test_bon_form_values_by_hand():
    # d (α − β d) at d = 2, α = 1, β = 0.25: 2 (1 − 0.5) = 1; RL: 2 (1 − 0.25 log 2) = 1.6534
    assert gao_curve("bon", np.array([2.0]), 1.0, 0.25)[0] == pytest.approx(1.0)
    assert gao_curve("rl", np.array([2.0]), 1.0, 0.25)[0] == pytest.approx(2 * (1 - 0.25 * math.log(2)))


# ------------------------------------------------------------------ ensembles
SCORES = torch.tensor([[1.0, 4.0], [2.0, 0.0], [3.0, 2.0]])  # (K=3 members, B=2 responses)


def test_mean_aggregation():
    assert aggregate_rewards(SCORES, "mean", 1.0).tolist() == [2.0, 2.0]  # (1+2+3)/3, (4+0+2)/3


def test_min_aggregation_is_the_worst_case():
    assert aggregate_rewards(SCORES, "min", 1.0).tolist() == [1.0, 0.0]


def test_uncertainty_weighted_aggregation():
    # Population std: column 0: sqrt(((1-2)^2 + 0 + (3-2)^2) / 3) = sqrt(2/3) = 0.8165;
    # column 1: sqrt((4 + 4 + 0) / 3) = sqrt(8/3) = 1.6330. With λ = 0.5: 2 − 0.4082, 2 − 0.8165.
    got = aggregate_rewards(SCORES, "uncertainty_weighted", 0.5)
    assert got.tolist() == pytest.approx([2 - 0.5 * math.sqrt(2 / 3), 2 - 0.5 * math.sqrt(8 / 3)])
    # λ scales the penalty: at 0 it is the mean.
    assert aggregate_rewards(SCORES, "uncertainty_weighted", 0.0).tolist() == [2.0, 2.0]


class _ConstantHead(torch.nn.Module):
    """A stand-in reward model: every position scores `value + token id / 100`."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return type("Out", (), {"logits": (self.value + input_ids.float() / 100).unsqueeze(-1)})()


@pytest.mark.parametrize(("aggregation", "expected"), [("mean", 2.0), ("min", 1.0), ("uncertainty_weighted", 1.0)])
def test_an_ensemble_scores_each_member_and_aggregates(aggregation, expected, monkeypatch):
    import lit_rlhf.rewards.model as ensemble

    # The last real token of both rows is id 0, so the members score 1, 2, 3 (std sqrt(2/3)).
    monkeypatch.setattr(ensemble, "last_token_rewards", lambda model, ids, mask: model(ids).logits[:, -1, 0])
    members = [_ConstantHead(v) for v in (1.0, 2.0, 3.0)]
    lam = 1 / math.sqrt(2 / 3)  # so that uncertainty_weighted gives 2 - 1 = 1
    scores = RewardEnsemble(members, aggregation, lam).score(torch.zeros(2, 3, dtype=torch.long), None)
    assert scores.tolist() == pytest.approx([expected, expected])


def test_ppo_scores_with_an_ensemble_of_reward_models(tmp_path):
    """model=tiny_ensemble: PPO's reward source is the aggregate of its members (the shipped RM and a
    fresh head on the SFT model), not either alone."""
    from conftest import compose_config

    from lit_rlhf.ops.forward import last_token_rewards
    from lit_rlhf.train import build

    members = "model.reward.names_or_paths=[${asset:tiny-rm},${asset:tiny-sft}]"
    aggregation = "reward.components.model.aggregation=min"
    module = build(compose_config("ppo_kl", tmp_path, ["model=tiny_ensemble", members, aggregation])).module
    ensemble = module.reward.components["model"].model
    assert isinstance(ensemble, RewardEnsemble) and len(ensemble.members) == 2
    ids = torch.randint(5, 100, (4, 12))
    mask = torch.ones_like(ids)
    each = torch.stack([last_token_rewards(m, ids, mask) for m in ensemble.members])
    assert not torch.allclose(each[0], each[1])
    samples = Completions(["p"] * 4, ["r"] * 4, sequences=ids, attention_mask=mask)
    torch.testing.assert_close(module.score(samples, update=False).total, each.min(0).values)


# ----------------------------------------------------------- seeds and figure
def _run(path: str, overrides: list[str], gold: list[float], kl: list[float]) -> RunHistory:
    rows = [
        {"val/kl": k, "val/reward": g + 1, "val/gold_reward": g, "trainer/global_step": i}
        for i, (k, g) in enumerate(zip(kl, gold))
    ]
    return RunHistory(Path(path), overrides, rows, "csv")


def test_runs_that_differ_only_in_seed_are_averaged():
    runs = [
        _run("0", ["coef=0.1", "seed=0"], [0.0, 1.0, 2.0], [0.0, 1.0, 4.0]),
        _run("1", ["coef=0.1", "seed=1"], [0.0, 3.0, 4.0], [0.0, 1.0, 4.0]),
        _run("2", ["coef=0.2", "seed=0"], [0.0, 0.5], [0.0, 0.25]),
    ]
    groups = seed_groups(runs)
    assert [(g.label, g.seeds) for g in groups] == [("coef=0.1", 2), ("coef=0.2", 1)]
    assert groups[0].gold.mean(0).tolist() == [0.0, 2.0, 3.0]
    assert groups[0].gold.std(0, ddof=1).tolist() == pytest.approx([0.0, math.sqrt(2), math.sqrt(2)])
    assert groups[0].d[0].tolist() == [0.0, 1.0, 2.0]  # sqrt(KL)
    names = {name for name, _ in gao_fits([], groups)}
    assert names == {"ppo coef=0.1", "ppo coef=0.2", "ppo all"} - {"ppo coef=0.2"}  # one KL > 0: no fit


def test_the_sweep_summary_groups_by_every_override_except_the_seed():
    records = [
        {"job": j, "status": "COMPLETED", "metric": "val/gold_reward", "value": v, "error": None, "overrides": o}
        for j, (v, o) in enumerate(
            [(1.0, ["c=1", "seed=0"]), (3.0, ["c=1", "seed=1"]), (5.0, ["c=2", "seed=0"]), (7.0, ["c=2", "seed=1"])]
        )
    ]
    table = seed_group_table(records)
    assert "| c=1 | 0,1 | val/gold_reward | 2 | 1.41 |" in table  # mean 2, sd sqrt(2)
    assert "| c=2 | 2,3 | val/gold_reward | 6 | 1.41 |" in table
    assert seed_group_table(records[::2]) == ""  # one seed each: nothing to aggregate


def test_the_plot_command_draws_best_of_n_ppo_and_the_fits(tmp_path):
    from lit_rlhf.overoptimization.bon import BonRow, write_bon_csv
    from lit_rlhf.plot import main

    alpha, beta = 1.2, 0.3
    ns = [1, 2, 4, 8, 16, 32, 64]
    rows = [
        BonRow(n, bon_kl(n), 0.5 * n, 0.1 + math.sqrt(bon_kl(n)) * (alpha - beta * math.sqrt(bon_kl(n)))) for n in ns
    ]
    (tmp_path / "bon").mkdir()
    write_bon_csv(rows, tmp_path / "bon" / "bon.csv")
    for seed in (0, 1):
        run = tmp_path / "ppo" / str(seed)
        (run / "csv").mkdir(parents=True)
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(f"- regularizer.kl.coef=0.05\n- seed={seed}\n")
        lines = ["step,val/kl,val/reward,val/gold_reward,train/kl,train/reward"]
        lines += [f"{s},{s * 2.0},{s * 0.5},{s * (1 - 0.1 * s) + seed},{s},{s}" for s in range(5)]
        (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    assert main([str(tmp_path), "--source", "csv"]) == 0
    assert (tmp_path / "overoptimization.png").stat().st_size > 0
    with open(tmp_path / "gao_fits.csv", newline="") as handle:
        fits = {(r["data"], r["form"]): r for r in csv.DictReader(handle)}
    bon = fits[("bon bon", "bon")]
    assert (float(bon["alpha"]), float(bon["beta"])) == (pytest.approx(alpha, abs=1e-4), pytest.approx(beta, abs=1e-4))
    # The two seeds are one group, named by its overrides but the seed.
    assert sorted(key for key in fits if key[0].startswith("ppo")) == [
        ("ppo coef=0.05", "bon"),
        ("ppo coef=0.05", "rl"),
    ]


@pytest.mark.slow
def test_a_seed_multirun_is_summarised_over_seeds(tmp_path):
    from conftest import CLI_FAST, cli

    result = cli(["-m", "+experiment=ppo_kl", "seed=0,1", *CLI_FAST], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = tmp_path.glob("outputs/ppo_kl/multiruns/*/sweep_summary.md")
    text = summary.read_text()
    assert "Over seeds" in text and "| 0,1 | val/gold_reward |" in text


@pytest.mark.slow
def test_ppo_trains_against_an_uncertainty_weighted_ensemble(tmp_path):
    from conftest import CLI_FAST, cli

    members = "model.reward.names_or_paths=[${asset:tiny-rm},${asset:tiny-rm}]"
    aggregation = "reward.components.model.aggregation=uncertainty_weighted"
    args = ["+experiment=ppo_nokl", "model=tiny_ensemble", members, aggregation]
    result = cli([*args, *CLI_FAST], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.glob("outputs/ppo_nokl/runs/*/export/config.json"))
