"""Safe loading (every torch.load with weights_only=True, torch>=2.6, exports as safetensors) and the k3 KL
estimator's clamp (off by default; the non-finite stop suggests it)."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from lit_rlhf.command import find_user_error
from lit_rlhf.errors import NonFiniteError
from lit_rlhf.regularizers.kl.estimators import K3Estimator, kl_k3
from lit_rlhf.train import build, fit

ROOT = Path(__file__).resolve().parents[2]


def calls(name: str):
    """(file, call) for every call of `<something>.name(...)` in the repository's Python code."""
    for folder in ("src", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                    yield path.relative_to(ROOT), node


def weights_only(call: ast.Call) -> bool:
    return any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords
    )


def test_every_checkpoint_load_is_safe():
    loads = [(path, node) for path, node in calls("load") if ast.unparse(node.func) == "torch.load"]
    assert loads, "no torch.load found: the search is broken"
    assert [(str(path), node.lineno) for path, node in loads if not weights_only(node)] == []
    fits = [(path, node) for path, node in calls("fit") if str(path) == "src/lit_rlhf/train.py"]
    assert fits and all(weights_only(node) for _, node in fits), "trainer.fit must load with weights_only=True"
    requirement = re.search(r'"torch>=([\d.]+)', (ROOT / "pyproject.toml").read_text())
    assert tuple(map(int, requirement[1].split("."))) >= (2, 6)


def test_k3_is_exact_by_default_and_clamped_on_request():
    # x = log pi - log pi_ref. At x = -100, e^{100} overflows float32: exact k3 is inf.
    logprobs, ref = torch.tensor([-101.0, -1.5]), torch.tensor([-1.0, -1.0])
    exact = kl_k3(logprobs, ref)
    assert math.isinf(exact[0]) and exact[1] == pytest.approx(math.exp(0.5) - 1 - 0.5)
    # Clamped at 20: x = -20 gives e^{20} - 1 - 20 = 485165195.41 - 21; x = -0.5 is inside the bound.
    clamped = K3Estimator(clamp=20.0)(logprobs, ref)
    assert clamped[0].item() == pytest.approx(math.exp(20) - 21, rel=1e-6)
    assert clamped[1] == exact[1]
    assert K3Estimator(clamp=None)(logprobs, ref)[0] == exact[0]


def nan_reward(prompts, completions, **columns):
    """A reward function gone wrong: NaN for every response (a fault, unlike None, which means unscored)."""
    return [math.nan] * len(completions)


def test_a_nonfinite_ppo_stop_suggests_the_clamp(tmp_path):
    overrides = ["reward=function", "reward.fn=test_safe_loading_and_kl_clamp.nan_reward", "data.batch_size=4"]
    overrides += ["data.val_batch_size=4", "module.sampling.max_new_tokens=8"]
    run = build(compose_config("ppo_k3_loss", tmp_path, overrides))
    with pytest.raises(Exception) as stopped:
        fit(run)
    error = find_user_error(stopped.value)
    assert isinstance(error, NonFiniteError) and "regularizer.kl.estimator.clamp=20" in str(error)
