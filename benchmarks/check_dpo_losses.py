"""One-off check: every `loss/dpo` choice against TRL 1.16's own loss code on the same random log-probs.

    benchmarks/.venv-trl/bin/python benchmarks/check_dpo_losses.py [--batches 50]

TRL computes its losses inside `DPOTrainer._compute_loss` (and SimPO in the experimental
`CPOTrainer.cpo_loss`), so the check calls those methods on a stand-in trainer whose
"model" returns given per-token log-probs and whose reference log-probs are precomputed.
It prints the max |ours - TRL| of the batch-mean loss per choice. Not a test: tests never import trl.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lit_rlhf.config import CONFIG_DIR
from lit_rlhf.losses.dpo import PairLogps

# Our choice -> (TRL loss_type, TRL hyperparameters, overrides of our YAML). Hyperparameters of both come from here.
CHOICES = {
    "sigmoid": ("sigmoid", {}, {}),
    "hinge": ("hinge", {}, {}),
    "ipo": ("ipo", {}, {"terms.ipo.average_log_probs": True}),  # TRL averages IPO's log-probs over tokens
    "robust": ("robust", {"label_smoothing": 0.1}, {}),
    "exo_pair": ("exo_pair", {"label_smoothing": 1e-3}, {}),
    "nca_pair": ("nca_pair", {}, {}),
    "bco_pair": ("bco_pair", {}, {"terms.bco_pair.baseline": "none"}),  # TRL 1.16 dropped BCO's reward shift
    "sppo_hard": ("sppo_hard", {}, {}),
    "aot": ("aot", {"label_smoothing": 0.0}, {}),
    "aot_pair": ("aot_unpaired", {"label_smoothing": 0.0}, {}),
    "apo_zero": ("apo_zero", {}, {}),
    "apo_down": ("apo_down", {}, {}),
    "discopop": ("discopop", {"discopop_tau": 0.05}, {}),
    "sft": ("sft", {}, {}),
}
MPO = (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0])


def random_batch(generator: torch.Generator, pairs: int, length: int, dtype: torch.dtype):
    """Per-token policy and reference log-probs (2B, T) of chosen-then-rejected rows, zero outside ragged masks."""
    lengths = torch.randint(1, length + 1, (2 * pairs,), generator=generator)
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)  # (2B, T)
    reference = -3.0 * torch.rand(2 * pairs, length, generator=generator, dtype=dtype)
    policy = reference + torch.randn(2 * pairs, length, generator=generator, dtype=dtype)
    return policy * mask, reference * mask, mask


def trl_trainer(loss_types, loss_weights, beta, hyper):
    """A DPOTrainer with only what `_compute_loss` reads, reference log-probs precomputed."""
    from trl import DPOTrainer

    trainer = DPOTrainer.__new__(DPOTrainer)
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x)
    trainer.__dict__.update(
        model=SimpleNamespace(training=True),
        accelerator=accelerator,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=loss_weights or [1.0] * len(loss_types),  # as DPOTrainer.__init__ fills them
        beta=beta,
        label_smoothing=hyper.get("label_smoothing", 0.0),
        use_weighting=False,
        args=SimpleNamespace(discopop_tau=hyper.get("discopop_tau", 0.05)),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    return trainer


def trl_loss(trainer, policy, reference, mask) -> float:
    """TRL's loss on rows whose per-token log-probs are given: the "model" returns them (shifted by one)."""
    rows, length = policy.shape
    # TRL scores positions 1..T of T+1 tokens (the first is the prompt); our (2B, T) are those positions.
    completion_mask = torch.cat([torch.zeros(rows, 1, dtype=torch.long), mask.long()], dim=1)

    def model(**kwargs):
        zeros = torch.zeros(rows, length)
        return SimpleNamespace(log_probs=policy, entropy=zeros, mean_logits=zeros, is_top1=mask)

    sums = reference.sum(1)
    inputs = {
        "input_ids": torch.zeros(rows, length + 1, dtype=torch.long),
        "attention_mask": torch.ones(rows, length + 1, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": sums[: rows // 2],
        "ref_rejected_logps": sums[rows // 2 :],
    }
    return float(trainer._compute_loss(model, inputs, return_outputs=False))


def trl_simpo(beta: float, gamma: float, chosen_avg, rejected_avg) -> float:
    from trl.experimental.cpo import CPOTrainer

    trainer = SimpleNamespace(
        alpha=0.0,
        loss_type="simpo",
        simpo_gamma=gamma,
        beta=beta,
        label_smoothing=0.0,
        accelerator=SimpleNamespace(device=torch.device("cpu")),
    )
    losses, _, _ = CPOTrainer.cpo_loss(trainer, chosen_avg, rejected_avg)
    return float(losses.mean())


def our_loss(choices: list[str], weights: list[float] | None, overrides: dict, pairs: PairLogps, beta=None):
    """Our `loss/dpo=[...]` as Hydra merges the files, with `weights`, β (None: the YAML's) and overrides applied."""
    config = OmegaConf.merge(*(OmegaConf.load(Path(CONFIG_DIR) / "loss" / "dpo" / f"{c}.yaml") for c in choices))
    if beta is not None:
        config.beta = beta
    for key, value in overrides.items():
        OmegaConf.update(config, key, value)
    for choice, weight in zip(choices, weights or [1.0] * len(choices)):
        config.weights[choice] = weight
    loss_fn = instantiate(config)
    return loss_fn, float(loss_fn(pairs).mean())


def pairs_of(policy, reference, mask) -> PairLogps:
    half = policy.shape[0] // 2
    sums, ref_sums, lengths = policy.sum(1), reference.sum(1), mask.sum(1)
    return PairLogps(sums[:half], sums[half:], ref_sums[:half], ref_sums[half:], lengths[:half], lengths[half:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--length", type=int, default=24)
    args = parser.parse_args()
    worst: dict[str, float] = defaultdict(float)
    for dtype, beta in [(dtype, beta) for dtype in (torch.float32, torch.float64) for beta in (None, 0.5)]:
        generator = torch.Generator().manual_seed(0)
        for _ in range(args.batches):
            policy, reference, mask = random_batch(generator, args.pairs, args.length, dtype)
            pairs = pairs_of(policy, reference, mask)
            key = lambda name, dtype=dtype: f"{name} ({str(dtype).removeprefix('torch.')})"  # noqa: E731

            for choice, (trl_name, hyper, overrides) in CHOICES.items():
                loss_fn, ours = our_loss([choice], None, overrides, pairs, beta)
                theirs = trl_loss(trl_trainer([trl_name], None, loss_fn.beta, hyper), policy, reference, mask)
                worst[key(choice)] = max(worst[key(choice)], abs(ours - theirs))
            loss_fn, ours = our_loss(["simpo"], None, {}, pairs, beta)
            simpo = loss_fn.terms["simpo"]
            averaged = pairs.per_token()
            theirs = trl_simpo(simpo.beta, simpo.gamma, averaged.policy_chosen, averaged.policy_rejected)
            worst[key("simpo")] = max(worst[key("simpo")], abs(ours - theirs))
            names, weights = MPO
            loss_fn, ours = our_loss(names, weights, {"terms.bco_pair.baseline": "none"}, pairs, beta)
            theirs = trl_loss(trl_trainer(names, weights, loss_fn.beta, {}), policy, reference, mask)
            mpo = "[sigmoid,bco_pair,sft] 0.8/0.2/1.0"
            worst[key(mpo)] = max(worst[key(mpo)], abs(ours - theirs))
    batches = f"{args.batches} random batches of {args.pairs} pairs, float32 and float64"
    print(f"max |ours - TRL 1.16| of the batch-mean loss over {batches}, at each YAML's beta and at beta = 0.5:")
    print("| choice | max abs diff |\n|---|---|")
    for name, diff in worst.items():
        print(f"| {name} | {diff:.2e} |")


if __name__ == "__main__":
    main()
