"""The rollout engines' shared parts, without vLLM: the HF engine draws exactly what `generate` draws and records
the trainer's log-probs; LoRA weights merge as `merge_and_unload` does; the process state survives an engine."""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from engine_cases import left_padded_prompts, tiny_policy, tiny_tokenizer, trainer_logprobs
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lit_rlhf.config import CONFIG_DIR
from lit_rlhf.errors import ConfigError
from lit_rlhf.generation import HFEngine, VLLMEngine, checkpoint_weights, concatenate_rollouts
from lit_rlhf.generation.hf_engine import SampledTokenLogprobs
from lit_rlhf.generation.process_state import preserved_process_state
from lit_rlhf.generation.vllm_engine import padded_responses, prompt_token_lists
from lit_rlhf.models.adapters import LoRA
from lit_rlhf.modules.common import seeded_samples
from lit_rlhf.ops.generation import SamplingConfig, generate

SAMPLINGS = {
    "plain": SamplingConfig(max_new_tokens=24, temperature=1.0, top_k=0, top_p=1.0),
    "warped": SamplingConfig(max_new_tokens=24, temperature=0.7, top_k=5, top_p=0.9),
    "greedy": SamplingConfig(max_new_tokens=24, temperature=0.0, top_k=0, top_p=1.0),
}


@pytest.fixture(scope="module")
def tiny():
    tokenizer = tiny_tokenizer()
    prompt_ids, prompt_mask = left_padded_prompts(tokenizer)
    # Two samples per prompt, as a GRPO rollout repeats its rows.
    return tiny_policy(), tokenizer, prompt_ids.repeat_interleave(2, 0), prompt_mask.repeat_interleave(2, 0)


@pytest.mark.parametrize("name", sorted(SAMPLINGS))
def test_hf_engine_draws_exactly_what_generate_draws(tiny, name):
    policy, tokenizer, prompt_ids, prompt_mask = tiny
    stop, pad = [tokenizer.eos_token_id], tokenizer.pad_token_id
    torch.manual_seed(11)
    expected = generate(policy, prompt_ids, prompt_mask, SAMPLINGS[name], stop, pad)
    after_generate = torch.random.get_rng_state()
    torch.manual_seed(11)
    rollout = HFEngine(policy, stop, pad).generate(prompt_ids, prompt_mask, SAMPLINGS[name])
    for field in ("sequences", "attention_mask", "response_ids", "response_mask", "has_stop"):
        assert torch.equal(getattr(rollout.generation, field), getattr(expected, field)), field
    # The RNG stream goes on where generate leaves it, so everything drawn afterwards is the same too.
    assert torch.equal(torch.random.get_rng_state(), after_generate)


def test_hf_engine_with_a_seed_draws_the_validation_samples(tiny):
    policy, tokenizer, prompt_ids, prompt_mask = tiny
    sampling = SAMPLINGS["plain"]
    expected, _ = seeded_samples(policy, tokenizer, prompt_ids, prompt_mask, sampling, [tokenizer.eos_token_id], 5)
    before = torch.random.get_rng_state()
    rollout = HFEngine(policy, [tokenizer.eos_token_id], tokenizer.pad_token_id).generate(
        prompt_ids, prompt_mask, sampling, seed=5
    )
    assert torch.equal(rollout.generation.sequences, expected.sequences)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("name", ["plain", "warped"])
def test_hf_engine_logprobs_are_the_trainers_raw_logit_logprobs(tiny, name):
    """Temperature, top-k and top-p change what is sampled, not the recorded log-probs: the raw logits'
    log softmax, which is what the trainer scores (equal up to the KV cache's float rounding)."""
    policy, tokenizer, prompt_ids, prompt_mask = tiny
    torch.manual_seed(3)
    rollout = HFEngine(policy, [tokenizer.eos_token_id], tokenizer.pad_token_id).generate(
        prompt_ids, prompt_mask, SAMPLINGS[name]
    )
    mask = rollout.generation.response_mask
    assert mask.sum() > 20 and (rollout.logprobs[mask] < 0).all()
    assert torch.equal(rollout.logprobs[~mask], torch.zeros_like(rollout.logprobs[~mask]))
    torch.testing.assert_close(rollout.logprobs, trainer_logprobs(policy, rollout.generation), atol=1e-5, rtol=0)


def test_the_recorder_reads_each_token_at_the_step_that_sampled_it():
    """Step t's scores score the token that appears as the last input at step t + 1; the last step's token is
    read from the response; steps HF ran and undid (deferred stop checks) are dropped."""
    scores = [torch.log(torch.tensor([[0.5, 0.25, 0.25]])), torch.log(torch.tensor([[0.1, 0.8, 0.1]]))]
    scores.append(torch.log(torch.tensor([[0.2, 0.2, 0.6]])))
    recorder = SampledTokenLogprobs()
    prompt = torch.tensor([[2]])
    recorder(prompt, scores[0])  # samples token 0
    recorder(torch.tensor([[2, 0]]), scores[1])  # samples token 1
    recorder(torch.tensor([[2, 0, 1]]), scores[2])  # samples token 2
    expected = torch.log(torch.tensor([[0.5, 0.8, 0.6]]))
    torch.testing.assert_close(recorder.of(torch.tensor([[0, 1, 2]])), expected)
    torch.testing.assert_close(recorder.of(torch.tensor([[0, 1]])), expected[:, :2])  # the third step undone


def test_chunked_rollouts_concatenate_to_the_whole_batch(tiny):
    policy, tokenizer, prompt_ids, prompt_mask = tiny
    engine = HFEngine(policy, [tokenizer.eos_token_id], tokenizer.pad_token_id)
    whole = engine.generate(prompt_ids, prompt_mask, SAMPLINGS["greedy"])
    parts = [
        engine.generate(prompt_ids[rows], prompt_mask[rows], SAMPLINGS["greedy"]) for rows in (slice(0, 3), slice(3, 8))
    ]
    joined = concatenate_rollouts(parts, tokenizer.pad_token_id)
    width = whole.logprobs.shape[1]
    assert torch.equal(
        joined.generation.sequences[:, : whole.generation.sequences.shape[1]], whole.generation.sequences
    )
    torch.testing.assert_close(joined.logprobs[:, :width], whole.logprobs, atol=1e-5, rtol=0)
    assert torch.equal(joined.select(slice(3, 8)).logprobs[:, : parts[1].logprobs.shape[1]], parts[1].logprobs)


def test_lora_weights_merge_as_merge_and_unload_does_and_leave_the_policy_alone():
    policy = LoRA(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]).causal_lm(tiny_policy())
    with torch.no_grad():  # B starts at 0: make the adapters do something
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    before = {name: tensor.clone() for name, tensor in policy.state_dict().items()}
    merged = checkpoint_weights(policy)
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()
    assert merged.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(merged[name], expected[name], atol=1e-6, rtol=0, msg=name)
    q_name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged[q_name], before[f"base_model.model.{q_name[:-7]}.base_layer.weight"])
    assert all(torch.equal(before[name], tensor) for name, tensor in policy.state_dict().items())


def test_full_weights_are_the_state_dict():
    policy = tiny_policy()
    weights = checkpoint_weights(policy)
    assert weights.keys() == policy.state_dict().keys()
    assert all(torch.equal(weights[name], tensor) for name, tensor in policy.state_dict().items())


def test_the_process_state_survives_what_vllm_does_to_it():
    """vLLM's worker reseeds torch, Python and NumPy and replaces torch.set_num_threads with a no-op."""
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
    states = torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    with preserved_process_state():
        torch.manual_seed(0), random.seed(0), np.random.seed(0)
        torch.set_num_threads(1)
        torch.set_num_threads = lambda n: None
    assert torch.set_num_threads is set_num_threads and torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])


def test_prompt_rows_lose_their_left_padding_and_responses_pad_on_the_right():
    ids = torch.tensor([[1, 1, 7, 8], [5, 6, 7, 8]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert prompt_token_lists(ids, mask) == [[7, 8], [5, 6, 7, 8]]
    response_ids, logprobs = padded_responses([[4, 0], [9, 9, 9]], [[-0.5, -1.0], [-2.0, -3.0, -4.0]], pad_token_id=1)
    assert torch.equal(response_ids, torch.tensor([[4, 0, 1], [9, 9, 9]]))
    assert torch.equal(logprobs, torch.tensor([[-0.5, -1.0, 0.0], [-2.0, -3.0, -4.0]]))


def test_the_package_imports_without_importing_vllm():
    code = "import sys, lit_rlhf.generation; assert 'vllm' not in sys.modules, 'vllm imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_vllm_engine_without_vllm_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` sees where it is not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[vllm\]'"):
        VLLMEngine(tiny_policy(), [0], 1, "float32", 1 << 20, 0.3, True, None)


def test_bad_vllm_settings_are_one_clear_error():
    with pytest.raises(ConfigError, match="float32, bfloat16, float16"):
        VLLMEngine(tiny_policy(), [0], 1, "fp8", 1 << 20, 0.3, True, None)
    with pytest.raises(ConfigError, match="kv_cache_memory_bytes must be > 0 or null"):
        VLLMEngine(tiny_policy(), [0], 1, "float32", 0, 0.3, True, None)


@pytest.mark.parametrize("choice", ["hf", "vllm"])
def test_every_generation_choice_composes_to_an_engine_factory(choice):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"generation={choice}"])
    factory = instantiate(cfg.generation)
    assert factory.func is {"hf": HFEngine, "vllm": VLLMEngine}[choice]
    if choice == "hf":
        assert isinstance(factory(policy=tiny_policy(), stop_token_ids=[0], pad_token_id=1), HFEngine)
