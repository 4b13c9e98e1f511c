"""PPO's reward source: never a silently random head."""

from __future__ import annotations

import pytest
from conftest import compose_config
from test_bad_input import run_cli

from lit_rlhf.config import asset_path
from lit_rlhf.errors import ConfigError
from lit_rlhf.train import build, find_user_error

HF_POLICY = ["model=hf", f"model.name_or_path={asset_path('tiny-sft')}"]


@pytest.mark.slow
def test_cli_ppo_on_a_causal_lm_without_a_reward_model_stops_with_one_line(tmp_path):
    # data= chosen on the command line: the embedded task's prompts, on purpose.
    result = run_cli(tmp_path, ["+experiment=ppo_kl", *HF_POLICY, "data=task_prompts"])
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.reward.name_or_path is not set" in errors[0], result.stderr[-3000:]
    assert "random reward" in errors[0] and "reward=function" in errors[0]
    assert "Traceback" not in result.stderr


def test_the_missing_reward_model_is_refused_before_any_model_loads(tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr("lit_rlhf.models.loading.load_causal_lm", no_loading)
    with pytest.raises(ConfigError, match=r"model\.reward\.name_or_path is not set"):
        build(compose_config("ppo_kl", tmp_path, [*HF_POLICY, "data=task_prompts"]))


def test_a_reward_model_with_a_new_head_is_refused(tmp_path):
    overrides = [*HF_POLICY, "data=task_prompts", f"model.reward.name_or_path={asset_path('tiny-sft')}"]
    with pytest.raises(Exception) as info:  # Hydra wraps what a target raises
        build(compose_config("ppo_kl", tmp_path, overrides))
    error = find_user_error(info.value)
    assert isinstance(error, ConfigError) and "no trained scalar head (score.weight newly initialised)" in str(error)


def test_critic_free_ppo_with_a_programmatic_reward_needs_no_reward_model(tmp_path):
    overrides = [*HF_POLICY, "data=task_prompts", "reward=function", "reward.fn=lit_rlhf.task.gold_reward.GoldReward"]
    assert build(compose_config("grpo", tmp_path, overrides)).module.reward.names == ["function"]
