"""DPOModule: one concatenated forward equals separate passes; cached reference log-probs equal online ones."""

from __future__ import annotations

import json

import torch
from conftest import compose_config

from lit_rlhf.data.collate import collate_preferences
from lit_rlhf.modules.dpo import DPOModule
from lit_rlhf.regularizers.nll import ChosenNLL, NoNLL
from lit_rlhf.train import build, fit

SMALL = ["data.batch_size=4", "data.val_batch_size=8", "module.val_sample_batches=0"]


def test_concatenated_forward_equals_separate_passes(tmp_path):
    run = build(compose_config("dpo", tmp_path, SMALL))
    run.datamodule.setup()
    items = run.datamodule.val_items[:6]
    pad = run.datamodule.tokenizer.pad_token_id
    policy = run.module.policy.eval()
    with torch.no_grad():
        together = collate_preferences(items, pad)
        logps, lengths = DPOModule.completion_logps(policy, together)
        chosen = DPOModule.completion_logps(policy, collate_preferences([item.only(0) for item in items], pad))
        rejected = DPOModule.completion_logps(policy, collate_preferences([item.only(1) for item in items], pad))
    # The batch interleaves chosen and rejected and pads to a different width; the log-probs must not care.
    torch.testing.assert_close(logps[together.better_idx], chosen[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logps[together.worse_idx], rejected[0], rtol=1e-5, atol=1e-4)
    assert torch.equal(lengths[together.better_idx], chosen[1])


def write_pairs(path, count: int) -> None:
    """A small JSONL of embedded-task pairs, so caching every completion takes a moment."""
    from lit_rlhf.task.sources import EmbeddedPreferencePairs

    records = EmbeddedPreferencePairs(seed=0).load("validation")[:count]
    path.write_text(
        "\n".join(json.dumps({"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected}) for r in records)
    )


def test_precomputed_reference_logprobs_equal_online_ones(tmp_path):
    data = tmp_path / "pairs.jsonl"
    write_pairs(data, 24)
    small_data = [*SMALL, "data=jsonl", f"data.path={data}", "data.max_length=64", "data.max_prompt_length=24"]
    online = build(compose_config("dpo", tmp_path / "online", small_data))
    online.datamodule.setup()
    batch = next(iter(online.datamodule.val_dataloader()))
    expected = online.module.reference_logps(batch, None)

    cached = build(compose_config("dpo", tmp_path / "cached", [*small_data, "module.precompute_ref_logprobs=true"]))
    fit(cached)
    assert cached.module.reference is None, "the cache should replace the reference model"
    assert not torch.isnan(cached.module.cached_ref_logps).any(), "every completion should be cached"
    torch.testing.assert_close(cached.module.reference_logps(batch, None), expected, rtol=1e-5, atol=1e-4)


def test_nll_term_is_length_normalised_chosen_nll():
    # Chosen log-probs -6 over 3 tokens and -2 over 1 token: NLL/len = 2 and 2; alpha = 0.5 -> 0.5 * 2 = 1.
    term = ChosenNLL(coef=0.5).loss_term(torch.tensor([-6.0, -2.0]), torch.tensor([3, 1]))
    assert float(term.loss) == 1.0
    assert float(NoNLL().loss_term(torch.tensor([-6.0]), torch.tensor([3])).loss) == 0.0
