"""Best-of-n sampling, the reference frontier of Gao et al. 2023 ("Scaling Laws for Reward Model
Overoptimization"): for each n, keep the response the proxy reward model scores highest and measure its
gold reward. `python -m lit_rlhf.train +experiment=bon_frontier` trains nothing and writes `bon.csv`.

The estimator: N = max(ns) responses are sampled once per prompt, and every n ≤ N reuses them. By default
(`estimator: subsets`) the value at n is the exact mean over all C(N, n) size-n subsets of those N
responses (Nakano et al. 2021's unbiased best-of-n estimator, used by Gao et al.); `first_n` instead
takes the best of the first n samples, which is also unbiased but noisier.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lit_rlhf.config import loggable_config
from lit_rlhf.errors import ConfigError
from lit_rlhf.generation import GenerationEngine
from lit_rlhf.loggers import close_loggers
from lit_rlhf.modules.common import freeze
from lit_rlhf.ops.generation import SamplingConfig, decode_responses
from lit_rlhf.rewards import Completions, Reward, as_reward, columns_of_rows, repeat_columns

log = logging.getLogger("lit_rlhf")

ESTIMATORS = ("subsets", "first_n")
BON_CSV = "bon.csv"
COLUMNS = ("n", "kl", "proxy", "gold")


def bon_kl(n: int) -> float:
    """KL(best-of-n || policy) = log n − (n − 1)/n nats, the analytic value (an upper bound; Beirami et al. 2024)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_first_n(proxy: torch.Tensor, gold: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The proxy and gold reward of the proxy's best among each prompt's first n samples.

    Args:
        proxy, gold: (P, N) the proxy (reward model) and gold reward of sample j of prompt i.
    Returns:
        (P,) proxy and (P,) gold reward of the chosen sample.
    """
    best = proxy[:, :n].argmax(1, keepdim=True)  # (P, 1)
    return proxy.gather(1, best).squeeze(1), gold.gather(1, best).squeeze(1)


def expected_best_of_n(proxy: torch.Tensor, gold: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean, over all C(N, n) size-n subsets of each prompt's N samples, of the proxy-best sample's rewards.

    With the samples sorted by proxy, the k-th smallest (1-based) is a subset's best in C(k−1, n−1) of the
    C(N, n) subsets, so the mean is a weighted sum: no subset is enumerated.

    Args:
        proxy, gold: (P, N) as in `best_of_first_n`.
    Returns:
        (P,) expected proxy and (P,) expected gold reward of best-of-n.
    """
    total = proxy.shape[1]
    if not 1 <= n <= total:
        raise ValueError(f"need 1 <= n <= {total} samples per prompt, got n={n}")
    order = proxy.argsort(1)  # ascending
    weights = torch.tensor(
        [math.comb(k - 1, n - 1) / math.comb(total, n) for k in range(1, total + 1)], dtype=torch.float64
    )  # (N,), sums to 1
    sorted_proxy, sorted_gold = proxy.gather(1, order).double(), gold.gather(1, order).double()
    return (sorted_proxy @ weights).float(), (sorted_gold @ weights).float()


@dataclass(frozen=True)
class BonRow:
    n: int
    kl: float
    proxy: float
    gold: float


class BestOfN:
    """Samples `max(ns)` responses per validation prompt and reports best-of-n for every n.

    Args:
        policy: the policy sampled from (e.g. the shipped SFT model).
        reward: the proxy (the `reward` group: a reward model, functions, verifiers or a mix); a sample no
            component scores is never picked.
        sampling: how responses are sampled (PPO's validation settings by default).
        generation: the `generation` group's engine factory (hf or vllm), given the policy, stop and pad tokens.
        ns: the n to report, each ≤ max(ns).
        samples_per_pass: samples per prompt generated in one batched call (memory: rows = prompts × this).
        estimator: `subsets` (mean over all size-n subsets) or `first_n` (best of the first n samples).
        num_prompts: how many validation prompts (null = all).
        seed: seed of the sampling.
    """

    def __init__(
        self,
        policy,
        reward: Reward,
        sampling: SamplingConfig,
        generation: Callable[..., GenerationEngine],
        ns: list[int],
        samples_per_pass: int,
        estimator: str,
        num_prompts: int | None,
        seed: int,
    ):
        if estimator not in ESTIMATORS:
            raise ConfigError(f"unknown best-of-n estimator '{estimator}'; choose one of: {', '.join(ESTIMATORS)}")
        if not ns or min(ns) < 1:
            raise ConfigError(f"bon.ns must be positive integers, got {list(ns)}")
        if max(ns) % samples_per_pass:
            raise ConfigError(f"max(bon.ns)={max(ns)} must be a multiple of bon.samples_per_pass={samples_per_pass}")
        self.policy = freeze(policy)
        self.reward = freeze(reward)
        self.sampling, self.ns, self.samples_per_pass = sampling, sorted(ns), samples_per_pass
        self.engine_factory = generation
        self.estimator, self.num_prompts, self.seed = estimator, num_prompts, seed

    @torch.no_grad()
    def proxy_score(self, samples: Completions) -> torch.Tensor:
        """(B,) the proxy's total; -inf where no component scored a sample, so that it is never the pick."""
        total = self.reward(samples).total
        return torch.where(torch.isnan(total), torch.full_like(total, -math.inf), total)

    @torch.no_grad()
    def sample_rewards(self, tokenizer, datamodule, gold_reward) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, N) proxy and gold reward of N = max(ns) seeded samples for each of P validation prompts (the gold
        reward: a `Reward` or a plain function of prompts and completions)."""
        gold_reward = as_reward(gold_reward)
        datamodule.setup("validate")
        engine = self.engine_factory(
            policy=self.policy, stop_token_ids=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id
        )
        total, proxies, golds, seen = max(self.ns), [], [], 0
        for batch_idx, batch in enumerate(datamodule.val_dataloader()):
            if self.num_prompts is not None:
                keep = self.num_prompts - seen
                if keep <= 0:
                    break
                batch = type(batch)(
                    batch.input_ids[:keep], batch.attention_mask[:keep], batch.prompts[:keep], batch.columns[:keep]
                )
            size, repeats = len(batch.prompts), self.samples_per_pass
            prompts = [p for p in batch.prompts for _ in range(repeats)]
            columns = repeat_columns(columns_of_rows(batch.columns), repeats)
            proxy, gold = [], []
            for chunk in range(total // repeats):
                generation = engine.generate(
                    batch.input_ids.repeat_interleave(repeats, 0),  # rows: prompt 0 × repeats, prompt 1 × ...
                    batch.attention_mask.repeat_interleave(repeats, 0),
                    self.sampling,
                    # Distinct draws for every batch and pass, the same for every run with this seed.
                    seed=self.seed + 1000 * batch_idx + chunk,
                ).generation
                responses = decode_responses(tokenizer, generation)
                samples = Completions(
                    prompts,
                    responses,
                    columns,
                    sequences=generation.sequences,
                    attention_mask=generation.attention_mask,
                    has_stop=generation.has_stop,
                    lengths=generation.response_mask.sum(1),
                )
                proxy.append(self.proxy_score(samples).view(size, repeats))
                gold.append(gold_reward(samples).total.float().view(size, repeats))
            proxies.append(torch.cat(proxy, 1))
            golds.append(torch.cat(gold, 1))
            seen += size
            log.info("best-of-n: %d prompts x %d samples scored", seen, total)
        if not proxies:
            raise ConfigError("best-of-n needs validation prompts; the data has none")
        return torch.cat(proxies), torch.cat(golds)

    def frontier(self, proxy: torch.Tensor, gold: torch.Tensor) -> list[BonRow]:
        """One row per n: the analytic KL and the mean proxy and gold reward of best-of-n over the prompts."""
        pick = expected_best_of_n if self.estimator == "subsets" else best_of_first_n
        rows = []
        for n in self.ns:
            best_proxy, best_gold = pick(proxy, gold, n)
            rows.append(BonRow(n, bon_kl(n), float(best_proxy.mean()), float(best_gold.nanmean())))
        return rows


def write_bon_csv(rows: list[BonRow], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([row.n, f"{row.kl:.6f}", f"{row.proxy:.6f}", f"{row.gold:.6f}"])


def read_bon_csv(path: Path) -> list[BonRow]:
    with open(path, newline="") as handle:
        return [
            BonRow(int(r["n"]), float(r["kl"]), float(r["proxy"]), float(r["gold"])) for r in csv.DictReader(handle)
        ]


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run `cfg.evaluate` (a BestOfN): log `bon/*` for each n (step = n) and write `bon.csv` in the output dir."""
    if cfg.gold_reward is None:
        raise ConfigError(
            "best-of-n measures the gold reward of the proxy's pick, and this run has none: the data has no gold "
            "reward of its own; set one with gold_reward=function gold_reward.fn=<my_pkg.my_module.my_fn> "
            "(or gold_reward=model, math, exact)"
        )
    tokenizer = instantiate(cfg.model.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    gold_reward = instantiate(cfg.gold_reward)
    evaluator: BestOfN = instantiate(cfg.evaluate)
    loggers = [instantiate(node) for node in (cfg.logger or {}).values()]
    for logger in loggers:
        logger.log_hyperparams(loggable_config(cfg))
    try:
        proxy, gold = evaluator.sample_rewards(tokenizer, datamodule, gold_reward)
        rows = evaluator.frontier(proxy, gold)
        for row in rows:
            metrics = {"bon/n": row.n, "bon/kl": row.kl, "bon/reward": row.proxy, "bon/gold_reward": row.gold}
            for logger in loggers:
                logger.log_metrics(metrics, step=row.n)
    except BaseException:
        close_loggers(loggers, "failed")
        raise
    close_loggers(loggers, "success")
    path = Path(cfg.paths.output_dir) / BON_CSV
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bon_csv(rows, path)
    print(f"best-of-n over {proxy.shape[0]} prompts x {proxy.shape[1]} samples ({evaluator.estimator}):")
    for row in rows:
        print(f"  n={row.n:3d}  kl {row.kl:.3f}  proxy {row.proxy:.3f}  gold {row.gold:.3f}")
    print(f"wrote {path}")
    last = rows[-1]
    return {"bon/kl": last.kl, "bon/reward": last.proxy, "bon/gold_reward": last.gold}
