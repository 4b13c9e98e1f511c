"""regularizer/nll on the reward model: α · NLL of the chosen response from an LM head on the same hidden states."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import changed, compose_config, logged_names, parameters_of
from hydra.utils import instantiate

from lit_rlhf.errors import ConfigError
from lit_rlhf.losses.reward import bradley_terry_loss
from lit_rlhf.modules.reward_model import RewardModel, rewards_and_hidden
from lit_rlhf.ops.forward import last_token_rewards
from lit_rlhf.regularizers.nll import ChosenNLL, NoNLL
from lit_rlhf.train import build, fit

SMALL = ["data.batch_size=4", "data.val_batch_size=8"]


def fixed_batch(run):
    run.datamodule.setup()
    return next(iter(run.datamodule.val_dataloader()))


def independent_chosen_nll(causal_lm, batch) -> torch.Tensor:
    """mean over pairs of (token-summed cross-entropy of the chosen response) / its length, by F.cross_entropy."""
    ids = batch.input_ids[batch.better_idx]
    logits = causal_lm(input_ids=ids, attention_mask=batch.attention_mask[batch.better_idx]).logits[:, :-1]
    labels = ids[:, 1:].masked_fill(~batch.response_mask[batch.better_idx].bool(), -100)
    per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")  # (B, T-1)
    return (per_token.sum(1) / (labels != -100).sum(1)).mean()


def test_nll_changes_the_loss_by_exactly_alpha_times_the_chosen_nll(tmp_path):
    run = build(compose_config("rm_nll", tmp_path, SMALL))
    module = run.module.eval()
    assert isinstance(module.nll, ChosenNLL)
    alpha = module.nll.coef
    batch = fixed_batch(run)
    with torch.no_grad():
        with_nll, chosen, rejected, metrics = module.step(batch)
        module.nll = NoNLL()
        without_nll, *_ = module.step(batch)
        # Before training, the reward model's backbone and tied LM head are the SFT policy's: an independent
        # causal LM from the same checkpoint, scored by cross-entropy, gives the NLL the term must add.
        nll = independent_chosen_nll(instantiate(run.cfg.model.policy).eval(), batch)
    assert float(nll) > 0.5
    torch.testing.assert_close(with_nll - without_nll, alpha * nll, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(metrics["nll"], nll, rtol=1e-4, atol=1e-5)
    # Without the term the loss is Bradley-Terry alone (rm_nll keeps rm_tiny's centering_coef = 0).
    torch.testing.assert_close(without_nll, bradley_terry_loss(chosen, rejected).mean())


def test_the_one_pass_rewards_equal_the_reward_heads(tmp_path):
    run = build(compose_config("rm_nll", tmp_path, SMALL))
    batch = fixed_batch(run)
    model = run.module.model.eval()
    with torch.no_grad():
        one_pass, hidden = rewards_and_hidden(model, batch.input_ids, batch.attention_mask)
        torch.testing.assert_close(one_pass, last_token_rewards(model, batch.input_ids, batch.attention_mask))
    assert hidden.shape == (*batch.input_ids.shape, model.config.hidden_size)


def test_default_is_off_and_an_untied_head_is_refused(tmp_path):
    run = build(compose_config("rm_tiny", tmp_path, SMALL))
    assert isinstance(run.module.nll, NoNLL)
    batch = fixed_batch(run)
    with torch.no_grad():
        loss, chosen, rejected, metrics = run.module.eval().step(batch)
    assert metrics == {}
    torch.testing.assert_close(loss, bradley_terry_loss(chosen, rejected).mean())
    model = run.module.model
    model.config.tie_word_embeddings = False
    with pytest.raises(ConfigError, match="regularizer/nll=none"):
        RewardModel(model, run.module.loss_fn, 0.0, None, False, ChosenNLL(coef=0.1), False, False, None)


def test_rm_nll_trains_and_logs_the_nll(tmp_path):
    run = build(compose_config("rm_nll", tmp_path, SMALL))
    before = parameters_of(run.module.model)
    fit(run)
    assert changed(before, run.module.model)
    assert {"train/nll", "val/nll", "val/gold_accuracy"} <= logged_names(tmp_path)
