"""Log-probs and entropies through the LM head in chunks equal the full-logits path, values and gradients."""

from __future__ import annotations

import pytest
import torch
from test_lora import _one_thread  # noqa: F401  (autouse)

from lit_rlhf.models.adapters import LoRA
from lit_rlhf.models.loading import build_causal_lm, embedded_task_tokenizer
from lit_rlhf.ops.forward import sequence_logprobs, sequence_token_logprobs, transformers_model
from lit_rlhf.ops.logprobs import entropy_from_logits

SIZE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)


def tiny_lm(adapter: str):
    torch.manual_seed(0)
    model = build_causal_lm(embedded_task_tokenizer(0, 512), "llama", **SIZE)
    if adapter == "lora":
        model = LoRA(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]).causal_lm(model)
        for name, p in model.named_parameters():  # B starts at 0; move it so the adapters matter
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 13) ids, the first rows left-padded (a prompt) and right-padded (a response), as PPO's rollouts."""
    ids = torch.randint(4, 500, (3, 13), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[1, -4:] = 0
    return ids, mask


def full_path(model, ids, mask, first):
    logprobs, logits = sequence_token_logprobs(model, ids, mask, first)
    return logprobs, entropy_from_logits(logits)


@pytest.mark.parametrize("adapter", ["none", "lora"])
@pytest.mark.parametrize("first", [0, 5])
@pytest.mark.parametrize("chunk_tokens", [7, None])
def test_chunked_logprobs_and_entropy_equal_the_full_logits_path(adapter, first, chunk_tokens):
    model = tiny_lm(adapter)
    ids, mask = batch()
    outputs, grads = {}, {}
    for path in ("full", "chunked"):
        model.zero_grad(set_to_none=True)
        if path == "full":
            logprobs, entropy = full_path(model, ids, mask, first)
        else:
            logprobs, entropy = sequence_logprobs(model, ids, mask, first, with_entropy=True, chunk_tokens=chunk_tokens)
        assert logprobs.dtype == entropy.dtype == torch.float32
        (logprobs * mask[:, first + 1 :]).sum().add(entropy.sum()).backward()
        outputs[path] = (logprobs.detach(), entropy.detach())
        grads[path] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    for expected, actual in zip(outputs["full"], outputs["chunked"]):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    for name, grad in grads["full"].items():
        torch.testing.assert_close(grads["chunked"][name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_the_head_never_sees_more_than_one_chunk():
    model = tiny_lm("none")
    ids, mask = batch()
    rows = []
    head = transformers_model(model).get_output_embeddings()
    head.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[:-1].numel()))
    logprobs, entropy = sequence_logprobs(model, ids, mask, with_entropy=False, chunk_tokens=7)
    logprobs.sum().backward()
    assert entropy is None
    assert rows and max(rows) <= 7, rows
    assert sum(rows) == 2 * ids.shape[0] * (ids.shape[1] - 1), "each chunk once forward, once when backward remakes it"
