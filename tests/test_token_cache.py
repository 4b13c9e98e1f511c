"""Tokenized tables: cached under a fingerprint, reused without reading records, equal across num_proc."""

from __future__ import annotations

import json

import pytest
from conftest import compose_config
from hydra.utils import instantiate

from lit_rlhf.data.tokenization import encode_prompt_responses

ROWS = [{"prompt": f"Question {i}?", "chosen": f" A fine answer {i}.", "rejected": " No."} for i in range(40)]


def jsonl_datamodule(tmp_path, cache_dir, overrides=()):
    data = tmp_path / "pairs.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    cfg = compose_config(
        "rm_tiny",
        tmp_path,
        ["data=jsonl", f"data.path={data}", "data.val_split=null", f"data.cache_dir={cache_dir}", *overrides],
    )
    tokenizer = instantiate(cfg.model.tokenizer)
    return instantiate(cfg.data, tokenizer=tokenizer), data


def as_tuples(items) -> list:
    return [(item.prompt, item.responses, item.examples, item.pairs, item.margins) for item in items]


def test_a_second_setup_reads_no_records(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first, _ = jsonl_datamodule(tmp_path, cache)
    first.setup("fit")
    second, _ = jsonl_datamodule(tmp_path, cache)
    monkeypatch.setattr(type(second.source), "load", lambda *args: pytest.fail("records were read again"))
    second.setup("fit")
    assert as_tuples(second.train_items) == as_tuples(first.train_items)
    assert as_tuples(second.val_items) == as_tuples(first.val_items)


@pytest.mark.parametrize("change", ["data.max_length=300", "data.val_fraction=0.5", "edit the file"])
def test_a_change_to_data_or_lengths_tokenizes_afresh(tmp_path, monkeypatch, change):
    cache = tmp_path / "cache"
    first, data = jsonl_datamodule(tmp_path, cache)
    first.setup("fit")
    if change == "edit the file":
        data.write_text(data.read_text().replace("A fine answer", "Another answer"))
        overrides = []
    else:
        overrides = [change]
    loads = []
    second, _ = jsonl_datamodule(tmp_path, cache, overrides)
    original = type(second.source).load
    monkeypatch.setattr(type(second.source), "load", lambda self, split: loads.append(split) or original(self, split))
    second.setup("fit")
    assert loads == ["train"], "a changed fingerprint must read the records again"


def test_tables_hold_what_the_encoder_gives(tmp_path):
    datamodule, _ = jsonl_datamodule(tmp_path, tmp_path / "cache")
    datamodule.setup("fit")
    for item in list(datamodule.train_items) + list(datamodule.val_items):
        expected = encode_prompt_responses(
            datamodule.tokenizer,
            [item.prompt] * 2,
            list(item.responses),
            datamodule.max_length,
            datamodule.max_prompt_length,
        )
        assert list(item.examples) == expected
    assert datamodule.val_items[0].first_sequence_id == 2 * len(datamodule.train_items)


def test_two_tokenizing_processes_give_the_same_tables(tmp_path):
    one, _ = jsonl_datamodule(tmp_path, tmp_path / "one")
    two, _ = jsonl_datamodule(tmp_path, tmp_path / "two", ["data.num_proc=2"])
    one.setup("fit")
    two.setup("fit")
    assert as_tuples(one.train_items) == as_tuples(two.train_items)
    assert as_tuples(one.val_items) == as_tuples(two.val_items)
