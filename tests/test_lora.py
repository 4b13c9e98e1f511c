"""adapter=lora: only adapters and scalar heads train, the reference is the adapter-free policy, exports load,
resume is exact."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from peft import PeftModel
from test_resume_and_export import KillAtBatch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from lit_rlhf.config import asset_path
from lit_rlhf.ops.forward import scalar_head_outputs, sequence_token_logprobs
from lit_rlhf.train import build, fit

LORA = ["adapter=lora", "data.batch_size=4", "data.val_batch_size=8"]
PPO = [*LORA, "module.sampling.max_new_tokens=8"]
DPO = [*LORA, "module.val_sample_batches=0", "module.optimizer.lr=1e-2", "module.scheduler.num_warmup_steps=0"]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from a second thread, and lose ~10x when other jobs share the 2 cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def moved(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}


def is_adapter_or_head(name: str) -> bool:
    # peft names: ...lora_A.default.weight / lora_B...; the trained head copy: score.modules_to_save.default.weight.
    return ".lora_" in name or ".modules_to_save." in name


def token_ids(n: int = 3, length: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 400, (n, length), generator=generator)
    return ids, torch.ones_like(ids)


def reference_logprobs(module, ids, mask) -> torch.Tensor:
    with module.reference.model() as reference:
        return sequence_token_logprobs(reference, ids, mask)[0]


@pytest.mark.parametrize("experiment", ["dpo", "ppo_kl"])
def test_lora_trains_only_adapters_and_heads_against_the_adapter_free_reference(tmp_path, experiment):
    run = build(compose_config(experiment, tmp_path, DPO if experiment == "dpo" else PPO))
    module = run.module
    assert isinstance(module.policy, PeftModel) and module.reference.shares_policy
    trained = {"policy": module.policy} | ({"critic": module.critic} if experiment == "ppo_kl" else {})
    before = {name: snapshot(model) for name, model in trained.items()}
    ids, mask = token_ids()
    with torch.no_grad():
        initial = sequence_token_logprobs(module.policy, ids, mask)[0]

    fit(run)

    for name, model in trained.items():
        changed = moved(before[name], model)
        assert changed, f"the {name} did not train"
        assert all(is_adapter_or_head(p) for p in changed), f"{name}: base weights moved: {sorted(changed)[:3]}"
        assert any(".lora_" in p for p in changed)
    if experiment == "ppo_kl":
        assert any(".modules_to_save." in p for p in moved(before["critic"], module.critic)), "the head is frozen"
    with torch.no_grad():
        after = sequence_token_logprobs(module.policy, ids, mask)[0]
        torch.testing.assert_close(reference_logprobs(module, ids, mask), initial, rtol=0, atol=1e-6)
    assert not torch.allclose(after, initial, atol=1e-4), "the adapters had no effect"

    # Export: the merged model in plain transformers, and the adapter on top of the base model, both give the
    # trained policy's log-probs.
    export = tmp_path / "export"
    merged = AutoModelForCausalLM.from_pretrained(export).eval()
    base = AutoModelForCausalLM.from_pretrained(asset_path("tiny-sft"))
    adapted = PeftModel.from_pretrained(base, export / "adapter").eval()
    with torch.no_grad():
        for loaded in (merged, adapted):
            torch.testing.assert_close(sequence_token_logprobs(loaded, ids, mask)[0], after, rtol=1e-4, atol=1e-4)


def test_lora_reward_model_exports_a_merged_model_with_its_trained_head(tmp_path):
    run = build(compose_config("rm_tiny", tmp_path, LORA))
    before = snapshot(run.module.model)
    fit(run)
    changed = moved(before, run.module.model)
    assert all(is_adapter_or_head(p) for p in changed) and any(".modules_to_save." in p for p in changed)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export").eval()
    ids, mask = token_ids()
    with torch.no_grad():
        expected = scalar_head_outputs(run.module.model.eval(), ids, mask)
        torch.testing.assert_close(scalar_head_outputs(merged, ids, mask), expected, rtol=1e-4, atol=1e-4)


def test_killed_lora_ppo_run_resumes_exactly(tmp_path):
    overrides = [*PPO, "trainer.limit_train_batches=3", "callbacks.checkpoint.every_n_batches=1"]
    uninterrupted = build(compose_config("ppo_kl", tmp_path / "full", overrides))
    fit(uninterrupted)
    killed = build(compose_config("ppo_kl", tmp_path / "killed", overrides))
    killed.trainer.callbacks.append(KillAtBatch(2))
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit(killed)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    resumed = build(compose_config("ppo_kl", tmp_path / "resumed", [*overrides, f"ckpt_path={checkpoint}"]))
    fit(resumed)
    for model in ("policy", "critic"):
        expected = dict(getattr(uninterrupted.module, model).named_parameters())
        for name, value in getattr(resumed.module, model).named_parameters():
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=f"{model}.{name} differs")
