"""Checkpoints resume exactly where a killed run stopped; exports load in plain transformers."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import compose_config
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from lit_rlhf.callbacks.export import save_pretrained_atomically
from lit_rlhf.errors import OutputError
from lit_rlhf.train import build, fit

RESUME = [
    "data.batch_size=4",
    "module.sampling.max_new_tokens=8",
    "trainer.limit_train_batches=4",
    "callbacks.checkpoint.every_n_batches=1",
    # A visible controller state: the adaptive coefficient moves every step.
    "regularizer.kl.controller.horizon=50",
]


class KillAtBatch(L.Callback):
    """Simulate a killed process: fail at the start of training batch `index`."""

    def __init__(self, index: int):
        self.index = index

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.fit_loop.total_batch_idx == self.index:
            raise RuntimeError("simulated kill")


def test_killed_ppo_run_resumes_from_its_last_checkpoint(tmp_path):
    uninterrupted = build(compose_config("ppo_adaptive_kl", tmp_path / "full", RESUME))
    fit(uninterrupted)

    killed = build(compose_config("ppo_adaptive_kl", tmp_path / "killed", RESUME))
    killed.trainer.callbacks.append(KillAtBatch(2))
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit(killed)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert checkpoint.exists()
    assert not list(checkpoint.parent.glob(".last.ckpt.tmp*")), "a temp file was left behind"

    resumed = build(compose_config("ppo_adaptive_kl", tmp_path / "resumed", [*RESUME, f"ckpt_path={checkpoint}"]))
    fit(resumed)

    assert resumed.trainer.fit_loop.total_batch_idx == uninterrupted.trainer.fit_loop.total_batch_idx
    # Same data order, same samples, same optimizer moments, same controller: identical weights.
    for model in ("policy", "critic"):
        expected = dict(getattr(uninterrupted.module, model).named_parameters())
        for name, value in getattr(resumed.module, model).named_parameters():
            torch.testing.assert_close(value, expected[name], msg=f"{model}.{name} differs after resume")
    assert resumed.module.kl.coef == pytest.approx(uninterrupted.module.kl.coef)
    assert resumed.module.kl.coef != pytest.approx(0.05), "the controller never moved"


def test_exports_load_in_plain_transformers(tmp_path):
    rm = build(compose_config("rm_tiny", tmp_path / "rm", ["data.batch_size=4", "data.val_batch_size=8"]))
    fit(rm)
    export = tmp_path / "rm" / "export"
    tokenizer = AutoTokenizer.from_pretrained(export)
    plain = AutoModelForSequenceClassification.from_pretrained(export).eval()
    batch = next(iter(rm.datamodule.val_dataloader()))
    with torch.no_grad():
        ours = rm.module.eval()(batch.input_ids, batch.attention_mask)
        theirs = plain(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.squeeze(-1)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    assert tokenizer.pad_token_id == plain.config.pad_token_id

    sft = build(compose_config("sft_tiny", tmp_path / "sft", ["data.batch_size=8", "module.val_sample_batches=0"]))
    fit(sft)
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "export")
    ids = AutoTokenizer.from_pretrained(tmp_path / "sft" / "export")(
        "review of x, about the plot:", return_tensors="pt"
    )
    assert policy.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] > ids["input_ids"].shape[1]


def test_failed_export_leaves_the_previous_one_intact(tmp_path):
    class Broken:
        def save_pretrained(self, path):
            (path / "half.bin").parent.mkdir(parents=True, exist_ok=True)
            (path / "half.bin").write_bytes(b"partial")
            raise OSError("disk full")

    target = tmp_path / "export"
    target.mkdir()
    (target / "config.json").write_text("{}")
    (target / ".lit_rlhf").write_text('{"kind": "export"}')  # an earlier export of ours
    with pytest.raises(OutputError, match="disk full"):
        save_pretrained_atomically(Broken(), None, target)
    assert sorted(p.name for p in target.iterdir()) == [".lit_rlhf", "config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"], "the temporary folder was left behind"
