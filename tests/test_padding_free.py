"""Padding-free rows: several sequences (or shared-prompt pairs) per row under a block-diagonal mask give the
padded rows' log-probs, rewards and losses.

Each equality runs on a layout that really packs (fewer rows than the padded batch), so it fails with the
feature switched off; with the block-diagonal mask dropped (units seeing each other) the equalities fail too
(by hand once: summed SFT log-probs off by up to 0.11 nats on the random Llama, 0.011 on the GPT-2).
"""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from packing_cases import ragged_batch, random_model
from test_prefix_sharing import TOLERANCE, small_pairs

from lit_rlhf.data.batches import SFTBatch
from lit_rlhf.modules.dpo import DPOModule
from lit_rlhf.modules.reward_model import packed_rewards_and_hidden
from lit_rlhf.modules.sft import SFTModule
from lit_rlhf.ops.forward import last_token_rewards, position_ids_from_mask, sequence_logprobs
from lit_rlhf.ops.masking import masked_sum
from lit_rlhf.ops.packed_forward import packed_sequence_logprobs
from lit_rlhf.ops.packing import attention_allowed, first_fit_rows, pack_layout, pack_values
from lit_rlhf.train import build, fit

# Single sequences (SFT-like): lengths 9, 3, 12, 5, 23 fit in 3 rows of 23.
SINGLES = [(5, [4]), (2, [1]), (9, [3]), (3, [2]), (17, [6])]
# Pairs: units of 16, 15, 28 and 11 shared tokens fit in 3 rows of 28.
PAIRS = [(5, [4, 7]), (9, [1, 3, 2]), (17, [6, 5]), (2, [8, 1])]


def test_first_fit_rows_by_hand():
    # Longest first: 5 -> row 0; 4 -> row 1 (1 left); 3 -> row 2 (2 left); 2 -> row 2; 1 -> row 1.
    assert first_fit_rows([5, 3, 4, 2, 1], capacity=5) == [[0], [2, 4], [1, 3]]


def test_two_sequences_in_one_row_by_hand():
    # a (3 tokens), b (2), c (5): rows as long as the longest, c alone in row 0, row 1 = [a0 a1 a2 b0 b1].
    batch = ragged_batch([(1, [2]), (1, [1]), (1, [4])])
    layout = pack_layout(batch.input_ids, batch.attention_mask, batch.response_mask, False, True)
    assert layout.shape == (2, 5)
    assert layout.place.tolist() == [[5, 6, 7, -1, -1], [8, 9, -1, -1, -1], [0, 1, 2, 3, 4]]
    # a and b never see each other; positions restart at b0.
    assert attention_allowed(layout)[1, 0].int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 1, 1],
    ]
    assert pack_values(position_ids_from_mask(batch.attention_mask), layout, 0)[1].tolist() == [0, 1, 2, 0, 1]


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_sft_logprobs_and_gradients_equal_the_padded_ones(kind, attention):
    model = random_model(kind, attention)
    batch = ragged_batch(SINGLES)
    ids, mask, loss_mask = batch.input_ids, batch.attention_mask, batch.response_mask
    layout = pack_layout(ids, mask, loss_mask, False, True)
    assert layout.shape[0] < len(ids)

    def nll_and_grads(packed: bool):
        model.zero_grad()
        if packed:
            logprobs = packed_sequence_logprobs(model, layout, ids, mask, loss_mask)
        else:
            logprobs = sequence_logprobs(model, ids, mask)[0]
        per_sequence = -masked_sum(logprobs, loss_mask, dim=1)
        per_sequence.sum().backward()
        return per_sequence.detach(), [p.grad.clone() for p in model.parameters()]

    padded, padded_grads = nll_and_grads(False)
    packed, packed_grads = nll_and_grads(True)
    torch.testing.assert_close(packed, padded, **TOLERANCE)
    for packed_grad, padded_grad in zip(packed_grads, padded_grads):
        torch.testing.assert_close(packed_grad, padded_grad, **TOLERANCE)


@pytest.mark.parametrize("share_prefixes", [True, False], ids=["shared-pairs", "sequences"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_preference_logprobs_and_rewards_equal_the_padded_ones(share_prefixes, attention):
    batch = ragged_batch(PAIRS)
    layout = pack_layout(batch.input_ids, batch.attention_mask, batch.response_mask, share_prefixes, True)
    assert layout.shape[0] < (len(PAIRS) if share_prefixes else len(batch.input_ids))
    policy, reward_model = random_model("llama", attention), random_model("llama", attention, scalar_head=True)
    with torch.no_grad():
        torch.testing.assert_close(
            DPOModule.completion_logps(policy, batch, layout)[0],
            DPOModule.completion_logps(policy, batch)[0],
            **TOLERANCE,
        )
        torch.testing.assert_close(
            packed_rewards_and_hidden(reward_model, layout, batch.input_ids, batch.attention_mask)[0],
            last_token_rewards(reward_model, batch.input_ids, batch.attention_mask),
            **TOLERANCE,
        )


def test_padding_free_sft_module_loss_is_the_padded_one():
    model = random_model("llama", "sdpa")
    module = SFTModule(model, None, None, None, 0, False, 0, padding_free=True, padding_free_row_length=None)
    pairs = ragged_batch(SINGLES)
    batch = SFTBatch(
        pairs.input_ids, pairs.attention_mask, pairs.response_mask, None, None, [""] * 5, pairs.response_mask.sum()
    )
    with torch.no_grad():
        packed = module.response_nll(batch)
        module.padding_free = False
        padded = module.response_nll(batch)
    torch.testing.assert_close(packed, padded, **TOLERANCE)


def test_packed_reward_model_with_nll_trains_end_to_end(tmp_path):
    options = ["module.prefix_sharing=true", "module.padding_free=true", "module.padding_free_row_length=100"]
    run = build(compose_config("rm_nll", tmp_path, ["data.batch_size=4", *options, *small_pairs(tmp_path)]))
    before = {name: p.detach().clone() for name, p in run.module.model.named_parameters()}
    fit(run)
    assert any(not torch.equal(before[name], p.detach()) for name, p in run.module.model.named_parameters())
    assert torch.isfinite(torch.tensor(float(run.trainer.callback_metrics["train/loss"])))
