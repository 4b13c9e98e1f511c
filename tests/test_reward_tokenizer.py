"""A reward model with its own tokenizer scores the decoded texts re-tokenized; one that shares the policy's reads
the policy's ids."""

from __future__ import annotations

import torch
from conftest import compose_config, generation_of
from test_lora import _one_thread  # noqa: F401  (autouse)

from lit_rlhf.models.loading import build_reward_model, embedded_task_tokenizer
from lit_rlhf.ops.forward import last_token_rewards
from lit_rlhf.ops.generation import decode_responses
from lit_rlhf.train import build, fit

SIZE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
FAST_PPO = ["data.batch_size=4", "data.val_batch_size=8", "module.sampling.max_new_tokens=8"]


def reward_model_with_its_own_tokenizer(path):
    """A scalar-head Llama on a 400-token tokenizer (the policy's has 512), saved with that tokenizer."""
    tokenizer = embedded_task_tokenizer(seed=0, vocab_size=400)
    torch.manual_seed(0)
    model = build_reward_model(tokenizer, "llama", **SIZE)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model.eval(), tokenizer


def test_a_reward_model_with_another_tokenizer_scores_the_retokenized_texts(tmp_path):
    model, rm_tokenizer = reward_model_with_its_own_tokenizer(tmp_path / "rm")
    run = build(compose_config("ppo_kl", tmp_path / "run", [*FAST_PPO, f"model.reward.name_or_path={tmp_path / 'rm'}"]))
    module = run.module
    own = module.reward.components["model"].own_tokenizer
    assert own is not None and len(own) == 400 != len(module.tokenizer)

    policy_tokenizer = module.tokenizer
    prompts = ["review of x, about the plot:", "review of y:"]
    prompt = policy_tokenizer(prompts, padding=True, return_tensors="pt")
    # Left-padded prompts as rollouts have them; the second response stops (EOS), the first does not.
    prompt_ids = torch.stack([p.roll(int((m == 0).sum())) for p, m in zip(prompt.input_ids, prompt.attention_mask)])
    prompt_mask = torch.stack([m.roll(int((m == 0).sum())) for m in prompt.attention_mask])
    response = torch.tensor([[40, 41, 42, 43], [50, 51, policy_tokenizer.eos_token_id, 0]])
    generation = generation_of(prompt_ids, prompt_mask, response, [policy_tokenizer.eos_token_id])
    responses = decode_responses(policy_tokenizer, generation)
    scores = module.score(module.completions(generation, prompts, responses, {}), update=False).total

    # Each text scored alone (no padding) by the reward model on its own tokenizer's ids.
    expected = []
    for text_prompt, text_response, stop in zip(prompts, responses, [False, True]):
        ids = rm_tokenizer(text_prompt)["input_ids"]
        ids += rm_tokenizer(text_response, add_special_tokens=False)["input_ids"] + [rm_tokenizer.eos_token_id] * stop
        ids = torch.tensor([ids])
        expected.append(last_token_rewards(model, ids, torch.ones_like(ids)))
    torch.testing.assert_close(scores, torch.cat(expected), rtol=1e-5, atol=1e-6)

    fit(run)  # and PPO trains against it


def test_a_reward_model_sharing_the_policy_tokenizer_reads_its_ids(tmp_path):
    assert build(compose_config("ppo_kl", tmp_path, FAST_PPO)).module.reward.components["model"].own_tokenizer is None
