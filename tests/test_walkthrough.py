"""docs/tutorials/your-model-your-data.md, run as written: its commands, on files this test writes.

The commands are read from the page's code blocks, so the page cannot drift from the code. They run
in-process (compose + build + fit, or the evaluate/generate functions), with short-run settings appended.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from conftest import FAST
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lit_rlhf.config import CONFIG_DIR, asset_path, check_embedded_task

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "tutorials" / "your-model-your-data.md"
SHORT = {
    "train": [*FAST, "data.batch_size=2", "data.val_batch_size=4", "data.max_new_tokens=6"],
    "evaluate": ["num_prompts=4", "samples_per_prompt=2", "ks=[1,2]", "data.max_new_tokens=6"],
    "generate": ["data.max_new_tokens=6"],
}
REWARDS = '''
def mentions_answer(prompts, completions, answer, **columns):
    """1.0 if the completion contains the row's answer."""
    return [None if a is None else float(str(a) in c) for c, a in zip(completions, answer)]
'''
TOPICS = ["the music", "the plot", "the acting", "the ending", "the visuals", "the pacing"]


def commands() -> list[tuple[str, list[str]]]:
    """(command, arguments) of every `python -m lit_rlhf.<command>` line of the page, in order."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", PAGE.read_text(), flags=re.DOTALL):
        for line in block.splitlines():
            if line.startswith("python -m lit_rlhf."):
                words = shlex.split(line)
                found.append((words[2].removeprefix("lit_rlhf."), words[3:]))
    return found


def write_project(folder: Path) -> None:
    """What the page says a user brings: a model, three data files, a reward module and conf/."""
    shutil.copytree(asset_path("tiny-sft"), folder / "my_model")
    data = folder / "data"
    data.mkdir()
    rows = [(i, topic) for i in range(4) for topic in TOPICS]
    lines = {
        "sft.jsonl": [{"prompt": f"Review of Film {i}, {t}:", "completion": f" {t} was fine."} for i, t in rows],
        "pairs.jsonl": [
            {"prompt": f"Review of Film {i}, {t}:", "chosen": f" {t} was great.", "rejected": " bad."} for i, t in rows
        ],
        "prompts.jsonl": [
            {"prompt": f"Review of Film {i}, {t}:", "answer": "great", "film": {"id": i}} for i, t in rows
        ],
    }
    for name, table in lines.items():
        (data / name).write_text("".join(json.dumps(row) + "\n" for row in table))
    (folder / "my_rewards.py").write_text(REWARDS)
    experiment = re.search(r"```yaml\n# conf/experiment/my_grpo.yaml\n(.*?)```", PAGE.read_text(), re.DOTALL)
    (folder / "conf" / "experiment").mkdir(parents=True)
    (folder / "conf" / "experiment" / "my_grpo.yaml").write_text(experiment.group(1))


def composed(config_name: str, arguments: list[str], output_dir: Path):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=[*arguments, f"paths.output_dir={output_dir}"])


def run(command: str, arguments: list[str], output_dir: Path):
    if command == "train":
        from lit_rlhf.train import build, fit

        cfg = composed("train", [*arguments, *SHORT["train"]], output_dir)
        check_embedded_task(cfg, arguments, {})
        run = build(cfg)
        fit(run)
        return run
    if command == "evaluate":
        from lit_rlhf.evaluate import evaluate

        return evaluate(composed("evaluate", [*arguments, *SHORT["evaluate"]], output_dir))
    from lit_rlhf.generate import generate

    return generate(composed("generate", [*arguments, *SHORT["generate"]], output_dir))


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path, monkeypatch):
    project = tmp_path / "my_project"
    project.mkdir()
    write_project(project)
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    sys.modules.pop("my_rewards", None)
    *steps, (_, from_file_arguments) = commands()
    assert [command for command, _ in steps] == ["train", "train", "train", "evaluate", "generate", "train"]
    results = [run(command, arguments, tmp_path / f"run{number}") for number, (command, arguments) in enumerate(steps)]

    for model in ("sft", "rm", "grpo", "dpo"):
        assert (project / "models" / model / "config.json").exists(), model
    logged = set(results[2].trainer.logged_metrics) | set(results[2].trainer.callback_metrics)
    assert {"train/reward/model", "train/reward/function", "train/reward"} <= logged
    metrics = json.loads((tmp_path / "run3" / "metrics.json").read_text())
    assert {"eval/kl_k1", "eval/win_rate", "eval/reward/function"} <= set(metrics)
    completions = [json.loads(line) for line in (project / "completions.jsonl").read_text().splitlines()]
    assert len(completions) == 2 * 24 and completions[0]["film"] == {"id": 0} and completions[0]["answer"] == "great"

    # The page's experiment file, from conf/ of the working directory, composes to the command line's run.
    assert from_file_arguments == ["+experiment=my_grpo"]
    from_file = composed("train", from_file_arguments, tmp_path / "file")
    from_line = composed("train", steps[2][1], tmp_path / "line")
    for key in ("reward", "model.name_or_path", "model.reward.name_or_path", "data.path", "paths.export_dir"):
        assert repr(_select(from_file, key)) == repr(_select(from_line, key)), key


def _select(cfg, key: str):
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value
