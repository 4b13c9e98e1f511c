"""A user's own files: prompts (data=prompts) and demonstrations (data=sft) in every file format, their
columns reaching the rewards unchanged, the SFT loss on completions only, and the embedded-task guard."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pandas as pd
import pytest
from conftest import CLI_FAST, cli, compose_config

from lit_rlhf.config import USER_DATA, asset_path, check_embedded_task
from lit_rlhf.data.demonstrations import SFTDataModule, SFTFileSource
from lit_rlhf.data.prompts import PromptDataModule, PromptFileSource
from lit_rlhf.data.record_datamodule import eval_loader
from lit_rlhf.errors import ConfigError, DataError
from lit_rlhf.models.loading import load_tokenizer
from lit_rlhf.ops.forward import sequence_token_logprobs
from lit_rlhf.train import build, fit

LOADING = {"seed": 0, "data_seed": 0, "num_workers": 0, "num_proc": 1}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(asset_path("tiny-sft"))


def rows(count: int = 10) -> list[dict]:
    """Prompts with columns of every JSON kind: a number whose type varies (int, float), nested dicts whose
    keys differ between rows, lists, and a column only some rows have."""
    result = []
    for i in range(count):
        row = {"prompt": f"Review of Film {i}, the music:", "answer": i if i % 2 else i + 0.5, "tags": ["a", str(i)]}
        row["meta"] = {"source": "test", "depth": {"level": i}} if i % 3 else {"other": None}
        if i % 4 == 0:
            row["only_some"] = True
        result.append(row)
    return result


def write(path: Path, table: list[dict]) -> Path:
    """`table` in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in table)
    if path.name.endswith(".jsonl.gz"):
        with gzip.open(path, "wt") as stream:
            stream.write(text)
    elif path.suffix == ".jsonl":
        path.write_text(text)
    elif path.suffix == ".json":
        path.write_text(json.dumps(table))
    elif path.suffix == ".csv":
        pd.DataFrame(table).to_csv(path, index=False)
    elif path.suffix == ".parquet":
        pd.DataFrame(table).to_parquet(path)
    else:  # a folder saved by datasets
        datasets.Dataset.from_list(table).save_to_disk(str(path))
    return path


def prompt_datamodule(path: Path, tokenizer, tmp_path: Path, **overrides) -> PromptDataModule:
    source = PromptFileSource(str(path), "prompt", "messages", skip_invalid=False, tokenizer=tokenizer)
    settings = dict(
        batch_size=4,
        val_batch_size=4,
        max_prompt_length=64,
        train_split="train",
        val_split=None,
        val_fraction=0.2,
        cache_dir=str(tmp_path / "cache"),
        pretrain_source=None,
        mix_pretraining=False,
        pretrain_batch_size=4,
        pretrain_max_length=32,
        **LOADING,
    )
    datamodule = PromptDataModule(source, tokenizer, **{**settings, **overrides})
    datamodule.setup("fit")
    return datamodule


def batches_of(datamodule) -> dict[str, dict]:
    """Prompt text -> its columns, over every batch of both splits."""
    seen = {}
    for items in (datamodule.train_items, datamodule.val_items):
        for batch in eval_loader(items, 4, datamodule.collate, num_workers=0, rank=0, world_size=1):
            seen.update(zip(batch.prompts, batch.columns))
    return seen


def without_prompt(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "prompt"}


@pytest.mark.parametrize("name", ["p.jsonl", "p.json", "p.jsonl.gz"])
def test_json_prompt_files_keep_every_column_exactly(tmp_path, tokenizer, name):
    table = rows()
    seen = batches_of(prompt_datamodule(write(tmp_path / name, table), tokenizer, tmp_path))
    assert seen == {row["prompt"]: without_prompt(row) for row in table}
    assert type(seen["Review of Film 1, the music:"]["answer"]) is int  # not unified to float by Arrow


@pytest.mark.parametrize("name", ["p.csv", "p.parquet", "saved"])
def test_tabular_prompt_files_keep_what_their_format_holds(tmp_path, tokenizer, name):
    # Flat text and numbers (a CSV holds no types: "7" would come back as the number 7, as datasets infers).
    table = [{"prompt": f"Review of Film {i}, the music:", "answer": f"x{i}", "score": i / 2} for i in range(10)]
    seen = batches_of(prompt_datamodule(write(tmp_path / name, table), tokenizer, tmp_path))
    assert seen == {row["prompt"]: without_prompt(row) for row in table}


def test_chat_prompts_are_rendered_with_the_generation_prompt_and_keep_their_messages(tmp_path, tokenizer):
    chat = [{"messages": [{"role": "user", "content": f"Review Film {i}."}], "id": i} for i in range(10)]
    seen = batches_of(prompt_datamodule(write(tmp_path / "chat.jsonl", chat), tokenizer, tmp_path))
    prompt = "<|user|>\nReview Film 3.\n<|assistant|>\n"
    assert seen[prompt] == chat[3]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"question": "2+2?"}, "record has neither 'prompt' nor 'messages' (its columns: question)"),
        ({"prompt": 3}, "'prompt' must be text or a list of chat messages, got int"),
        ({"prompt": "  "}, "'prompt' is empty"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "'messages' ends with an assistant message"),
    ],
)
def test_a_bad_prompt_row_names_the_file_line_and_the_problem(tmp_path, tokenizer, row, message):
    file = write(tmp_path / "bad.jsonl", [{"prompt": "fine"}, row])
    with pytest.raises(DataError, match=f"{file}:2: {message}".replace("(", r"\(").replace(")", r"\)")):
        PromptFileSource(str(file), "prompt", "messages", skip_invalid=False, tokenizer=tokenizer).load("train")


def test_prompt_key_renames_the_prompt_column(tmp_path, tokenizer):
    file = write(tmp_path / "q.jsonl", [{"question": "2+2?", "answer": "4"}])
    records = PromptFileSource(str(file), "question", "messages", skip_invalid=False).load("train")
    assert records[0].prompt == "2+2?" and records[0].columns == {"answer": "4"}


def record_columns(prompts, completions, **columns) -> list[float]:
    """A reward function that keeps what it was given (the test reads it back)."""
    RECEIVED.append((list(prompts), {name: list(values) for name, values in columns.items()}))
    return [float(len(c)) for c in completions]


RECEIVED: list = []


def test_columns_ride_through_grpo_rollouts_to_the_reward_function_unchanged(tmp_path):
    table = rows(12)
    file = write(tmp_path / "prompts.jsonl", table)
    overrides = [
        "data=prompts",
        f"data.path={file}",
        "data.batch_size=2",
        "data.val_batch_size=4",
        "data.max_new_tokens=6",
        "reward=function",
        "reward.fn=test_user_data.record_columns",
    ]
    RECEIVED.clear()
    run = build(compose_config("grpo", tmp_path, overrides))
    fit(run)
    by_prompt = {row["prompt"]: without_prompt(row) for row in table}
    assert RECEIVED, "the reward function was never called"
    for prompts, columns in RECEIVED:
        for index, prompt in enumerate(prompts):
            given = {name: values[index] for name, values in columns.items() if values[index] is not None}
            expected = {name: value for name, value in by_prompt[prompt].items() if value is not None}
            assert given == expected, prompt
    # GRPO samples each prompt 4 times: the function saw each training prompt's columns 4 times over.
    first_prompts = RECEIVED[0][0]
    assert len(first_prompts) == 8 and first_prompts[0] == first_prompts[3]


# ----------------------------------------------------------------------------- SFT from a file


def sft_datamodule(path: Path, tokenizer, tmp_path: Path) -> SFTDataModule:
    source = SFTFileSource(str(path), "prompt", "completion", "messages", skip_invalid=False, tokenizer=tokenizer)
    datamodule = SFTDataModule(
        source,
        tokenizer,
        max_length=64,
        max_prompt_length=32,
        batch_size=4,
        val_batch_size=4,
        train_split="train",
        val_split=None,
        val_fraction=0.2,
        cache_dir=str(tmp_path / "cache"),
        **LOADING,
    )
    datamodule.setup("fit")
    return datamodule


SFT_ROWS = [{"prompt": f"Review of Film {i}, the plot:", "completion": f" the plot was {i}."} for i in range(10)]
CHAT_ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Review Film {i}."},
            {"role": "assistant", "content": f"the plot was {i}."},
        ]
    }
    for i in range(10)
]
CONVERSATIONAL_ROWS = [
    {
        "prompt": [{"role": "user", "content": f"Review Film {i}."}],
        "completion": [{"role": "assistant", "content": f"the plot was {i}."}],
    }
    for i in range(10)
]


@pytest.mark.parametrize("name", ["d.jsonl", "d.csv", "d.parquet", "saved"])
def test_sft_reads_prompt_completion_rows_from_each_format(tmp_path, tokenizer, name):
    datamodule = sft_datamodule(write(tmp_path / name, SFT_ROWS), tokenizer, tmp_path)
    items = list(datamodule.train_items) + list(datamodule.val_items)
    assert sorted(item.prompt for item in items) == sorted(row["prompt"] for row in SFT_ROWS)


@pytest.mark.parametrize("table", [CHAT_ROWS, CONVERSATIONAL_ROWS], ids=["messages", "conversational"])
def test_sft_chat_rows_learn_the_assistant_turn(tmp_path, tokenizer, table):
    datamodule = sft_datamodule(write(tmp_path / "chat.jsonl", table), tokenizer, tmp_path)
    item = next(i for i in list(datamodule.train_items) + list(datamodule.val_items) if "Film 3." in i.prompt)
    assert item.prompt == "<|user|>\nReview Film 3.\n<|assistant|>\n"
    completion = item.example.ids[item.example.prompt_length :]
    assert tokenizer.decode(completion, skip_special_tokens=True) == "the plot was 3."


def test_the_sft_loss_covers_completion_tokens_only(tmp_path):
    """The module's loss equals the mean NLL of the completion tokens (and EOS), computed here from the full
    logits; the prompt tokens' NLL, which a loss over every token would add, is not part of it."""
    file = write(tmp_path / "d.jsonl", SFT_ROWS)
    run = build(compose_config("sft", tmp_path, ["data=sft", f"data.path={file}", "model=tiny"]))
    run.datamodule.setup("fit")
    batch = next(iter(run.datamodule.val_dataloader()))
    module = run.module.eval()
    logprobs, _ = sequence_token_logprobs(module.policy, batch.input_ids, batch.attention_mask)
    completion_nll, prompt_nll = [], []
    for row in range(len(batch.prompts)):
        prompt_length = len(run.datamodule.tokenizer(batch.prompts[row])["input_ids"])
        length = int(batch.attention_mask[row].sum())
        completion_nll += (-logprobs[row, prompt_length - 1 : length - 1]).tolist()
        prompt_nll += (-logprobs[row, : prompt_length - 1]).tolist()
    expected = sum(completion_nll) / len(completion_nll)
    loss = float(module.response_nll(batch))
    assert loss == pytest.approx(expected, rel=1e-5)
    everything = (sum(completion_nll) + sum(prompt_nll)) / (len(completion_nll) + len(prompt_nll))
    assert abs(loss - everything) > 1e-3


def test_an_sft_row_without_usable_fields_names_the_line(tmp_path, tokenizer):
    file = write(tmp_path / "d.jsonl", [SFT_ROWS[0], {"prompt": "only a prompt"}])
    source = SFTFileSource(str(file), "prompt", "completion", "messages", skip_invalid=False, tokenizer=tokenizer)
    with pytest.raises(DataError, match=rf"{file}:2: record has neither 'prompt' \+ 'completion' nor 'messages'"):
        source.load("train")


# ----------------------------------------------------------------------------- no silent embedded task


def test_a_users_model_with_the_embedded_tasks_data_is_refused_unless_chosen(tmp_path):
    users_model = ["model=hf", f"model.name_or_path={asset_path('tiny-sft')}"]
    with pytest.raises(ConfigError, match=r"data=prompts data\.path=FILE"):  # lit_rlhf.compose checks it too
        compose_config("grpo", tmp_path, users_model)
    cfg = compose_config("grpo", tmp_path, [*users_model, "data=task_prompts"])
    choices = {"model": "hf", "data": "task_prompts"}
    with pytest.raises(ConfigError, match=r"data=prompts data\.path=FILE"):
        check_embedded_task(cfg, ["+experiment=grpo", "model=hf"], choices)
    check_embedded_task(cfg, ["+experiment=grpo", "model=hf", "data=task_prompts"], choices)  # chosen: allowed
    tiny = compose_config("grpo", tmp_path)
    check_embedded_task(tiny, ["+experiment=grpo"], {"model": "tiny", "data": "task_prompts"})  # its own model


@pytest.mark.slow
def test_cli_refuses_a_users_model_on_the_embedded_task_in_one_line(tmp_path):
    result = cli(["+experiment=grpo", "model=hf", f"model.name_or_path={asset_path('tiny-sft')}", *CLI_FAST], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and USER_DATA in errors[0] and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("outputs/**/checkpoints/*"))


def test_a_verifier_needing_a_column_the_prompts_lack_stops_before_training(tmp_path):
    file = write(tmp_path / "p.jsonl", [{"prompt": f"Review of Film {i}:", "solution": "1"} for i in range(10)])
    cfg = compose_config("grpo", tmp_path, ["data=prompts", f"data.path={file}", "reward=math"])
    with pytest.raises(ConfigError, match=r"reward 'math' needs the data column 'answer'.*\(columns: solution\)"):
        build(cfg)
    assert not list(tmp_path.glob("**/*.ckpt"))
