"""Data sources read local files through `datasets`, validate every row and name the bad line.

Every test writes its own small files under tmp_path; nothing touches the network
(the Hub is faked where a test needs it) and the datasets cache lives in a temp dir.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import datasets
import pytest
import tokenizers
import transformers

from lit_rlhf.data.preferences import HHRLHFSource, JsonlPreferenceSource
from lit_rlhf.data.records import PreferenceRecord
from lit_rlhf.errors import DataError

# <|role|>content</s> per message; the generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Opens generation with a tag that assistant turns never use, so the prefix check must fail.
MISMATCHED_TEMPLATE = CHAT_TEMPLATE.replace(
    "{% if add_generation_prompt %}<|assistant|>", "{% if add_generation_prompt %}<|bot|>"
)


@pytest.fixture(autouse=True)
def offline_datasets(monkeypatch, tmp_path_factory):
    """No network, and a throw-away datasets cache outside the test's data folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    cache = tmp_path_factory.mktemp("hf-cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", cache / "downloads" / "extracted")


def write_lines(path: Path, lines: list[str | dict]) -> Path:
    """Write one line per item: dicts as JSON, strings verbatim (blank or malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((json.dumps(line) if isinstance(line, dict) else line) + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as stream:
            stream.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def pair(prompt: str = "Q:", chosen: str = " yes", rejected: str = " no", **extra) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def hh(prompt: str = "\n\nHuman: Hi?\n\nAssistant:", chosen: str = " Hello!", rejected: str = " Go away.") -> dict:
    return {"chosen": prompt + chosen, "rejected": prompt + rejected}


def tiny_chat_tokenizer(template: str | None = CHAT_TEMPLATE) -> transformers.PreTrainedTokenizerFast:
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "</s>": 1}, unk_token="[UNK]"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=model, unk_token="[UNK]", eos_token="</s>", chat_template=template
    )


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# ----------------------------------------------------------------------------- good data


def test_jsonl_with_and_without_margin(tmp_path):
    path = write_lines(tmp_path / "prefs.jsonl", [pair(margin=1.5), pair("P:", " a", " b"), pair(margin=0)])
    records = JsonlPreferenceSource(str(path), skip_invalid=False).load("train")
    assert records == [
        PreferenceRecord("Q:", " yes", " no", 1.5),
        PreferenceRecord("P:", " a", " b", None),
        PreferenceRecord("Q:", " yes", " no", 0.0),
    ]


def test_hh_rlhf_splits_at_the_last_assistant_turn(tmp_path):
    history = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And times 3?\n\nAssistant:"
    path = write_lines(tmp_path / "hh.jsonl", [hh(history, " 12.", " 7, I think.")])
    [record] = HHRLHFSource(str(path), skip_invalid=False).load("train")
    assert record.prompt == history  # earlier turns stay in the prompt
    assert record.prompt.endswith("\n\nAssistant:")
    assert record.chosen == " 12." and record.rejected == " 7, I think."
    assert record.margin is None


def test_folder_with_train_and_test_files_gives_both_splits(tmp_path):
    write_lines(tmp_path / "data" / "train.jsonl", [pair(), pair()])
    write_lines(tmp_path / "data" / "test.jsonl", [pair("T:")])
    source = JsonlPreferenceSource(str(tmp_path / "data"), skip_invalid=False)
    assert sorted(source.splits()) == ["test", "train"]
    assert len(source.load("train")) == 2
    assert [record.prompt for record in source.load("test")] == ["T:"]


def test_jsonl_gz_file(tmp_path):
    path = write_lines(tmp_path / "hh.jsonl.gz", [hh(), hh(chosen=" Hey.")])
    source = HHRLHFSource(str(path), skip_invalid=False)
    assert source.splits() == ["train"]
    assert [record.chosen for record in source.load("train")] == [" Hello!", " Hey."]


def test_json_array_file(tmp_path):
    path = tmp_path / "prefs.json"
    path.write_text(json.dumps([pair(), pair("P:")]))
    assert [record.prompt for record in JsonlPreferenceSource(str(path), skip_invalid=False).load("train")] == [
        "Q:",
        "P:",
    ]


def test_chat_messages_with_explicit_prompt(tmp_path):
    row = {"prompt": [user("Hi")], "chosen": [assistant("Hello!")], "rejected": [assistant("Bye.")], "margin": 2}
    path = write_lines(tmp_path / "chat.jsonl", [row])
    [record] = JsonlPreferenceSource(str(path), skip_invalid=False, tokenizer=tiny_chat_tokenizer()).load("train")
    # prompt = render([user], add_generation_prompt=True); response = the rest of the full render, minus "</s>"
    assert record == PreferenceRecord("<|user|>Hi</s><|assistant|>", "Hello!", "Bye.", 2.0)


def test_chat_messages_with_implicit_prompt_keep_earlier_turns(tmp_path):
    history = [user("Hi"), assistant("Hello."), user("Joke?")]
    row = {"chosen": [*history, assistant("Knock knock.")], "rejected": [*history, assistant("No.")]}
    path = write_lines(tmp_path / "chat.jsonl", [row])
    [record] = JsonlPreferenceSource(str(path), skip_invalid=False, tokenizer=tiny_chat_tokenizer()).load("train")
    assert record.prompt == "<|user|>Hi</s><|assistant|>Hello.</s><|user|>Joke?</s><|assistant|>"
    assert (record.chosen, record.rejected) == ("Knock knock.", "No.")


def test_rows_datasets_cannot_read_are_recovered_quietly(tmp_path, capfd):
    # A field that is text in one row and messages in another, with a blank line
    # between them, makes datasets' JSON reader fail on valid data.
    chat = {"chosen": [user("Hi"), assistant("a")], "rejected": [user("Hi"), assistant("b")]}
    path = write_lines(tmp_path / "mixed.jsonl", [pair(), "", chat])
    records = JsonlPreferenceSource(str(path), skip_invalid=False, tokenizer=tiny_chat_tokenizer()).load("train")
    assert [record.chosen for record in records] == [" yes", "a"]
    assert "Failed to load JSON" not in capfd.readouterr().err


# ----------------------------------------------------------------------------- bad data names file and line

GOOD_PAIRS = [pair(), "", pair()]  # lines 1-3, with a blank line 2 that holds no row
BAD_PAIRS = {
    "malformed json": ('{"prompt": "Q:", "chosen": " a" "rejected": " b"}', "not valid JSON (Expecting ',' delimiter)"),
    "not an object": ("[1, 2]", "not a JSON object"),
    "missing field": (
        {"prompt": "Q:", "chosen": " a"},
        "record has no field 'rejected' (required: prompt, chosen, rejected; optional: margin)",
    ),
    "wrong type": (pair(chosen=7), "field 'chosen' must be a string"),
    "empty response": (pair(rejected="  \n"), "rejected response is empty"),
    "negative margin": (pair(margin=-1), "field 'margin' must be a finite number >= 0, got -1"),
    "non-numeric margin": (pair(margin="big"), "field 'margin' must be a finite number >= 0, got 'big'"),
}


@pytest.mark.parametrize("bad_line, message", BAD_PAIRS.values(), ids=BAD_PAIRS.keys())
def test_bad_jsonl_record_names_file_and_line(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "prefs.jsonl", [*GOOD_PAIRS, "   ", bad_line, pair()])
    with pytest.raises(DataError) as error:
        JsonlPreferenceSource(str(path), skip_invalid=False).load("train")
    assert str(error.value).startswith(f"{path}:5: ")
    assert message in str(error.value)


BAD_DIALOGUES = {
    "no assistant turn": ({"chosen": "\n\nHuman: Hi?", "rejected": "\n\nHuman: Hi?"}, "has no '\\n\\nAssistant:' turn"),
    "prompts differ": (
        {"chosen": "\n\nHuman: Hi?\n\nAssistant: Yo.", "rejected": "\n\nHuman: Hey?\n\nAssistant: Yo."},
        "chosen and rejected dialogues differ before the last Assistant turn",
    ),
    "empty response": (hh(rejected=""), "rejected response is empty"),
    "missing field": ({"chosen": hh()["chosen"]}, "record has no field 'rejected' (required: chosen, rejected)"),
}


@pytest.mark.parametrize("bad_line, message", BAD_DIALOGUES.values(), ids=BAD_DIALOGUES.keys())
def test_bad_hh_record_names_file_and_line(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "hh.jsonl", [hh(), "", bad_line])
    with pytest.raises(DataError) as error:
        HHRLHFSource(str(path), skip_invalid=False).load("train")
    assert str(error.value).startswith(f"{path}:3: ")
    assert message in str(error.value)


def test_bad_line_in_second_file_of_a_split_is_located_there(tmp_path):
    folder = tmp_path / "data"
    write_lines(folder / "train-00000-of-00002.jsonl", [pair(), "", pair()])
    second = write_lines(folder / "train-00001-of-00002.jsonl", ["", pair(), pair(chosen="")])
    write_lines(folder / "test.jsonl", [pair()])
    with pytest.raises(DataError, match="chosen response is empty") as error:
        JsonlPreferenceSource(str(folder), skip_invalid=False).load("train")
    assert str(error.value).startswith(f"{second}:3: ")


def test_malformed_json_in_test_file_of_a_folder(tmp_path):
    write_lines(tmp_path / "data" / "train.jsonl", [pair()])
    test = write_lines(tmp_path / "data" / "test.jsonl", [pair(), "{oops"])
    source = JsonlPreferenceSource(str(tmp_path / "data"), skip_invalid=False)
    assert len(source.load("train")) == 1
    with pytest.raises(DataError, match="not valid JSON") as error:
        source.load("test")
    assert str(error.value).startswith(f"{test}:2: ")


def test_bad_line_in_gz_file(tmp_path):
    path = write_lines(tmp_path / "hh.jsonl.gz", [hh(), "", "", hh(chosen=" ")])
    with pytest.raises(DataError, match="chosen response is empty") as error:
        HHRLHFSource(str(path), skip_invalid=False).load("train")
    assert str(error.value).startswith(f"{path}:4: ")


def test_empty_file_is_an_error(tmp_path):
    path = write_lines(tmp_path / "prefs.jsonl", ["", "  "])
    with pytest.raises(DataError, match="no records") as error:
        JsonlPreferenceSource(str(path), skip_invalid=False).load("train")
    assert str(path) in str(error.value)


# ----------------------------------------------------------------------------- chat data errors


def test_chat_rows_without_a_tokenizer_are_an_error(tmp_path):
    path = write_lines(
        tmp_path / "chat.jsonl",
        [pair(), {"chosen": [user("a"), assistant("b")], "rejected": [user("a"), assistant("c")]}],
    )
    for source in (
        JsonlPreferenceSource(str(path), skip_invalid=True),
        JsonlPreferenceSource(str(path), skip_invalid=False, tokenizer=tiny_chat_tokenizer(template=None)),
    ):
        with pytest.raises(DataError, match=r"chat.template") as error:
            source.load("train")
        assert str(error.value).startswith(f"{path}:2: ")


def test_template_whose_full_render_does_not_start_with_the_prompt(tmp_path):
    row = {"prompt": [user("Hi")], "chosen": [assistant("a")], "rejected": [assistant("b")]}
    path = write_lines(tmp_path / "chat.jsonl", [row])
    with pytest.raises(DataError, match="does not start with") as error:
        JsonlPreferenceSource(str(path), skip_invalid=False, tokenizer=tiny_chat_tokenizer(MISMATCHED_TEMPLATE)).load(
            "train"
        )
    assert str(error.value).startswith(f"{path}:1: ")


def test_implicit_prompts_must_agree(tmp_path):
    row = {"chosen": [user("Hi"), assistant("a")], "rejected": [user("Hey"), assistant("b")]}
    path = write_lines(tmp_path / "chat.jsonl", [row])
    with pytest.raises(DataError, match=f"{path}:1: chosen and rejected conversations differ"):
        JsonlPreferenceSource(str(path), skip_invalid=False, tokenizer=tiny_chat_tokenizer()).load("train")


# ----------------------------------------------------------------------------- skip_invalid


def test_skip_invalid_counts_and_warns_once(tmp_path, caplog):
    lines = [pair(), pair(), {"prompt": "Q:", "chosen": " a"}, pair(), "", pair(chosen=" ")]
    path = write_lines(tmp_path / "prefs.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="lit_rlhf"):
        records = JsonlPreferenceSource(str(path), skip_invalid=True).load("train")
    assert len(records) == 3
    warnings = [record for record in caplog.records if record.name == "lit_rlhf"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert f"skipped 2 of 5 records in {path}" in warnings[0].getMessage()
    assert "first at line 3: record has no field 'rejected'" in warnings[0].getMessage()


def test_skip_invalid_still_refuses_malformed_json_and_all_invalid_data(tmp_path):
    malformed = write_lines(tmp_path / "bad.jsonl", [pair(), "{"])
    with pytest.raises(DataError, match="not valid JSON"):
        JsonlPreferenceSource(str(malformed), skip_invalid=True).load("train")
    all_invalid = write_lines(tmp_path / "hh.jsonl", [{"chosen": "no turns", "rejected": "no turns"}])
    with pytest.raises(DataError, match=f"no valid records in {all_invalid}"):
        HHRLHFSource(str(all_invalid), skip_invalid=True).load("train")


# ----------------------------------------------------------------------------- paths and splits


@pytest.fixture
def no_load_dataset(monkeypatch):
    def fail(*args, **kwargs):
        pytest.fail(f"datasets was called with {args} {kwargs}")

    for name in ("load_dataset", "load_dataset_builder", "get_dataset_split_names"):
        monkeypatch.setattr(datasets, name, fail)


@pytest.mark.parametrize("path", ["missing.jsonl", "./org/name", "~/nowhere/x.jsonl", "/nowhere/x.jsonl"])
def test_missing_file_never_calls_datasets(tmp_path, monkeypatch, no_load_dataset, path):
    monkeypatch.chdir(tmp_path)
    source = JsonlPreferenceSource(path, skip_invalid=False)  # building a source does no I/O
    for read in (source.splits, lambda: source.load("train")):
        with pytest.raises(DataError, match=r"^data file not found: /"):
            read()


def test_hub_name_goes_to_load_dataset_and_failure_mentions_offline(tmp_path, monkeypatch):
    calls = []

    def unreachable_hub(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("no network")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", unreachable_hub)
    with pytest.raises(DataError, match=r"Hugging Face Hub.*offline runs need"):
        HHRLHFSource("Anthropic/hh-rlhf", skip_invalid=False).load("train")
    assert calls == [("Anthropic/hh-rlhf",)]


def test_unknown_split_lists_the_available_ones(tmp_path):
    path = write_lines(tmp_path / "prefs.jsonl", [pair()])
    with pytest.raises(DataError) as error:
        JsonlPreferenceSource(str(path), skip_invalid=False).load("test")
    assert str(error.value) == f"split 'test' not found in {path}; available: train"
