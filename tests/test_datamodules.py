"""The data pipeline on hand-checked examples: tokenization, masks, collation, splits, and real files end to end."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import changed, compose_config, parameters_of

from lit_rlhf.config import asset_path
from lit_rlhf.data.batches import PPOBatch
from lit_rlhf.data.collate import (
    PreferenceItem,
    PromptItem,
    SFTItem,
    collate_preferences,
    collate_prompts,
    collate_sft,
    response_target_mask,
)
from lit_rlhf.data.preferences import JsonlPreferenceSource, PreferenceDataModule
from lit_rlhf.data.prompts import PromptDataModule
from lit_rlhf.data.record_datamodule import load_train_val
from lit_rlhf.data.records import PromptRecord
from lit_rlhf.data.tokenization import EncodedExample, encode_prompt_responses, encode_prompts
from lit_rlhf.errors import ConfigError
from lit_rlhf.models.loading import load_tokenizer
from lit_rlhf.task.sources import EmbeddedPretrainCorpus, EmbeddedPrompts, EmbeddedRankings
from lit_rlhf.train import build, fit

EOS, PAD = 0, 1


class CharTokenizer:
    """One token per character (its code point), so every expected id can be written by hand. No BOS."""

    eos_token_id, pad_token_id = EOS, PAD

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[ord(c) for c in text] for text in texts]}


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


class ListSource:
    """A data source from lists of records per split."""

    def __init__(self, splits: dict[str, list]):
        self.data = splits

    def splits(self):
        return list(self.data)

    def load(self, split):
        return list(self.data[split])


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return load_tokenizer(asset_path("tiny-sft"))


# ----------------------------------------------------------------------------- encode_prompt_responses


def test_encode_marks_the_boundary_and_appends_eos():
    [example] = encode_prompt_responses(CharTokenizer(), ["ab"], ["cd"], max_length=8, max_prompt_length=4)
    assert example == EncodedExample(ids=[*ids("ab"), *ids("cd"), EOS], prompt_length=2, truncated=False)


def test_encode_exact_fit_is_not_truncated():
    # 2 prompt + 2 response + EOS = 5 = max_length.
    [example] = encode_prompt_responses(CharTokenizer(), ["ab"], ["cd"], max_length=5, max_prompt_length=2)
    assert example.ids == [*ids("abcd"), EOS] and not example.truncated


def test_encode_keeps_the_end_of_a_long_prompt():
    [example] = encode_prompt_responses(CharTokenizer(), ["abcdef"], ["x"], max_length=8, max_prompt_length=3)
    assert example == EncodedExample(ids=[*ids("def"), *ids("x"), EOS], prompt_length=3, truncated=True)


def test_encode_cuts_a_long_response_and_loses_its_eos():
    # Room for the response: 5 - 2 = 3 of its 5 + 1 (EOS) tokens.
    [example] = encode_prompt_responses(CharTokenizer(), ["ab"], ["cdefg"], max_length=5, max_prompt_length=2)
    assert example == EncodedExample(ids=ids("abcde"), prompt_length=2, truncated=True)
    assert EOS not in example.ids


def test_encode_tokenizes_prompt_and_response_separately(tiny_tokenizer):
    prompt, response = "review of the lighthouse keeper, about the plot:", " it was great."
    [example] = encode_prompt_responses(tiny_tokenizer, [prompt], [response], max_length=128, max_prompt_length=64)
    expected_prompt = tiny_tokenizer(prompt)["input_ids"]
    expected_response = tiny_tokenizer(response, add_special_tokens=False)["input_ids"]
    assert example.ids == expected_prompt + expected_response + [tiny_tokenizer.eos_token_id]
    assert example.prompt_length == len(expected_prompt)


@pytest.mark.parametrize("max_length, max_prompt_length", [(8, 0), (8, 8), (8, 9), (0, 0), (4, -1)])
def test_encode_refuses_bad_limits(max_length, max_prompt_length):
    with pytest.raises(ConfigError, match="max_prompt_length < max_length"):
        encode_prompt_responses(CharTokenizer(), ["a"], ["b"], max_length, max_prompt_length)


def test_encode_prompts_keeps_the_end_and_counts_the_cut():
    rows, truncated = encode_prompts(CharTokenizer(), ["abcdef", "xy", "pqr"], max_prompt_length=3)
    assert rows == [ids("def"), ids("xy"), ids("pqr")] and truncated == 1


@pytest.mark.parametrize("max_prompt_length", [0, -2])
def test_encode_prompts_refuses_a_limit_below_one(max_prompt_length):
    # ids[-0:] is the whole list: 0 must not quietly mean "no limit".
    with pytest.raises(ConfigError, match="max_prompt_length > 0"):
        encode_prompts(CharTokenizer(), ["abc"], max_prompt_length)


# The loader settings every datamodule takes, and a prompt datamodule without a pretraining corpus.
LOADING = {"num_workers": 0, "cache_dir": os.environ["LIT_RLHF_CACHE"], "num_proc": 1}
NO_CORPUS = {
    "pretrain_source": None,
    "mix_pretraining": False,
    "pretrain_batch_size": 16,
    "pretrain_max_length": 64,
    **LOADING,
}


@pytest.mark.parametrize("key, value", [("batch_size", 0), ("batch_size", -1), ("val_batch_size", 0)])
def test_datamodule_refuses_a_batch_size_below_one(key, value):
    sizes = {"batch_size": 2, "val_batch_size": 2, key: value}
    with pytest.raises(ConfigError, match=f"data.{key} must be a positive integer, got {value}"):
        PromptDataModule(
            ListSource({}),
            CharTokenizer(),
            max_prompt_length=3,
            train_split="train",
            val_split=None,
            val_fraction=0.1,
            seed=0,
            data_seed=0,
            **NO_CORPUS,
            **sizes,
        )


def test_long_ppo_prompts_are_cut_and_reported_once_per_split(caplog):
    source = ListSource(
        {
            "train": [PromptRecord("abcdef"), PromptRecord("xy"), PromptRecord("long prompt")],
            "validation": [PromptRecord("ab")],
        }
    )
    datamodule = PromptDataModule(
        source,
        CharTokenizer(),
        batch_size=2,
        val_batch_size=2,
        max_prompt_length=3,
        train_split="train",
        val_split="validation",
        val_fraction=0.05,
        seed=0,
        data_seed=0,
        **NO_CORPUS,
    )
    with caplog.at_level(logging.WARNING, logger="lit_rlhf"):
        datamodule.setup("validate")
        datamodule.setup("fit")
    reports = [r.getMessage() for r in caplog.records if r.getMessage().startswith("truncated")]
    assert len(reports) == 1 and reports[0].startswith("truncated 2 of 3 train prompts to fit 3 tokens"), reports
    assert [item.ids for item in datamodule.train_items] == [ids("def"), ids("xy"), ids("mpt")]


# ----------------------------------------------------------------------------- masks and collation


def test_response_target_mask_covers_response_and_eos_only():
    # ids: p p r r EOS | pad pad (width 7). Position t predicts token t+1; response tokens are at 2, 3, 4 (EOS),
    # so t = 1, 2, 3 are True; t = 0 predicts a prompt token, t = 4, 5 predict padding.
    example = EncodedExample(ids=[*ids("pqrs"), EOS], prompt_length=2, truncated=False)
    mask = response_target_mask([example], width=7)
    assert mask.tolist() == [[False, True, True, True, False, False]]


def test_collate_sft_masks_and_padding():
    tokenizer = CharTokenizer()
    examples = encode_prompt_responses(tokenizer, ["ab", "xyz"], ["c", "uv"], max_length=16, max_prompt_length=8)
    batch = collate_sft([SFTItem(e, p) for e, p in zip(examples, ["ab", "xyz"])], pad_id=PAD)
    # Right padding of the full sequences to the longest (xyz uv EOS = 6).
    assert batch.input_ids.tolist() == [[*ids("abc"), EOS, PAD, PAD], [*ids("xyzuv"), EOS]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
    # Targets t+1: row 0 response c, EOS at 2, 3 -> t = 1, 2; row 1 response u, v, EOS at 3, 4, 5 -> t = 2, 3, 4.
    assert batch.loss_mask.tolist() == [[False, True, True, False, False], [False, False, True, True, True]]
    # Never a padded target, and every response token plus EOS counted exactly once.
    assert not (batch.loss_mask & (batch.attention_mask[:, 1:] == 0)).any()
    assert batch.loss_mask.sum(1).tolist() == [1 + 1, 2 + 1]
    # Prompts alone, left-padded for generation.
    assert batch.prompt_input_ids.tolist() == [[PAD, *ids("ab")], ids("xyz")]
    assert batch.prompt_attention_mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert batch.prompts == ["ab", "xyz"]


def _preference_item(prompt, responses, pairs, margins, first_sequence_id) -> PreferenceItem:
    examples = encode_prompt_responses(CharTokenizer(), [prompt] * len(responses), list(responses), 16, 8)
    return PreferenceItem(prompt, tuple(responses), tuple(examples), pairs, margins, first_sequence_id)


def test_collate_preferences_flattens_groups_with_pairs_margins_and_ids():
    pair = _preference_item("ab", ("c", "de"), ((0, 1),), (None,), first_sequence_id=0)
    ranking = _preference_item("w", ("x", "yy", "zzz"), ((0, 1), (0, 2), (1, 2)), (1.0, 3.0, 2.0), first_sequence_id=2)
    batch = collate_preferences([pair, ranking], pad_id=PAD)
    # Completions: 0 = ab c, 1 = ab de, 2 = w x, 3 = w yy, 4 = w zzz (the ranking's offset is 2).
    assert batch.input_ids.tolist() == [
        [*ids("abc"), EOS, PAD],
        [*ids("abde"), EOS],
        [*ids("wx"), EOS, PAD, PAD],
        [*ids("wyy"), EOS, PAD],
        [*ids("wzzz"), EOS],
    ]
    assert batch.better_idx.tolist() == [0, 2, 2, 3]
    assert batch.worse_idx.tolist() == [1, 3, 4, 4]
    assert math.isnan(batch.margin[0]) and batch.margin[1:].tolist() == [1.0, 3.0, 2.0]
    assert batch.sequence_ids.tolist() == [0, 1, 2, 3, 4]
    # Response targets: prompt length 2 (rows 0, 1) or 1 (rows 2-4); each covers response + EOS, no padding.
    assert batch.response_mask.tolist() == [
        [False, True, True, False],
        [False, True, True, True],
        [True, True, False, False],
        [True, True, True, False],
        [True, True, True, True],
    ]
    assert batch.prompts == ["ab", "ab", "w", "w", "w"]
    assert batch.responses == ["c", "de", "x", "yy", "zzz"]
    assert batch.prompt_input_ids.tolist() == [ids("ab"), [PAD, *ids("w")]]
    assert batch.prompt_attention_mask.tolist() == [[1, 1], [0, 1]]
    assert batch.group_prompts == ["ab", "w"]


def test_collate_prompts_pads_on_the_left():
    batch = collate_prompts([PromptItem(ids("abc"), "abc"), PromptItem(ids("d"), "d")], pad_id=PAD)
    assert batch.input_ids.tolist() == [ids("abc"), [PAD, PAD, *ids("d")]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.prompts == ["abc", "d"]


# ----------------------------------------------------------------------------- K-wise rankings


def test_rankings_give_all_pairs_with_margins_from_scores(tiny_tokenizer):
    k = 4
    source = EmbeddedRankings(seed=0, k=k)
    datamodule = PreferenceDataModule(
        source,
        tiny_tokenizer,
        batch_size=3,
        val_batch_size=8,
        max_length=64,
        max_prompt_length=24,
        train_split="train",
        val_split="validation",
        val_fraction=0.05,
        seed=0,
        data_seed=0,
        **LOADING,
    )
    datamodule.setup("fit")
    records = source.load("train")
    for record, item in zip(records[:20], datamodule.train_items[:20]):
        assert item.pairs == tuple(itertools.combinations(range(k), 2)) and len(item.pairs) == k * (k - 1) // 2
        assert item.responses == record.responses
        expected = tuple(max(record.scores[i] - record.scores[j], 0.0) for i, j in item.pairs)
        assert item.margins == pytest.approx(expected)
    # Validation sequence ids continue after the training ones: each completion has one dataset-wide id.
    assert datamodule.val_items[0].first_sequence_id == k * len(datamodule.train_items)

    batch = next(iter(datamodule.train_dataloader()))
    assert batch.input_ids.shape[0] == 3 * k and len(batch.better_idx) == 3 * 6
    groups_better, groups_worse = batch.better_idx // k, batch.worse_idx // k
    assert torch.equal(groups_better, groups_worse), "pairs never cross prompts"
    assert torch.equal(groups_better, torch.arange(3).repeat_interleave(6))
    assert not batch.margin.isnan().any()
    assert len(set(batch.sequence_ids.tolist())) == 3 * k


# ----------------------------------------------------------------------------- train/validation splits


def test_hold_out_is_seeded_disjoint_and_sized():
    source = ListSource({"train": list(range(100))})
    train, val = load_train_val(source, "train", None, val_fraction=0.2, seed=3)
    assert (train, val) == load_train_val(source, "train", None, val_fraction=0.2, seed=3)
    assert len(val) == 20 and len(train) == 80
    assert not set(train) & set(val) and sorted(train + val) == list(range(100))
    assert val != load_train_val(source, "train", None, val_fraction=0.2, seed=4)[1]
    # At least one validation record, however small the fraction.
    assert len(load_train_val(source, "train", None, val_fraction=0.001, seed=3)[1]) == 1


def test_explicit_val_split_is_loaded_as_is():
    source = ListSource({"train": [1, 2, 3], "test": [9]})
    assert load_train_val(source, "train", "test", val_fraction=0.5, seed=0) == ([1, 2, 3], [9])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_hold_out_needs_a_fraction_in_0_1(fraction):
    with pytest.raises(ConfigError, match="val_fraction"):
        load_train_val(ListSource({"train": [1, 2]}), "train", None, fraction, seed=0)


def test_a_missing_validation_split_is_held_out_and_said_once(tmp_path, caplog):
    """One HH-RLHF-style file has only a train split: data.val_fraction of it becomes the validation set."""
    file = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"q{i}", "chosen": " a", "rejected": " b"} for i in range(20)]
    file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    source = JsonlPreferenceSource(str(file), skip_invalid=False)
    with caplog.at_level(logging.WARNING, logger="lit_rlhf"):
        train, val = load_train_val(source, "train", "test", val_fraction=0.2, seed=0)
    assert len(train) == 16 and len(val) == 4
    notices = [r.getMessage() for r in caplog.records if "split" in r.getMessage()]
    assert notices == [
        "the data has no 'test' split (it has: train); holding out data.val_fraction=0.2 of 'train' for validation"
    ]


# ----------------------------------------------------------------------------- real files end to end

E2E = [
    "data.batch_size=4",
    "data.val_batch_size=4",
    "data.max_length=96",
    "data.max_prompt_length=64",
    "data.val_fraction=0.2",
]
TOPICS = [
    "the weather",
    "a recipe",
    "my cat",
    "a book",
    "the train",
    "a song",
    "tea",
    "the garden",
    "a film",
    "my bike",
    "the sea",
    "a poem",
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def hh_rows() -> list[dict]:
    rows = []
    for i, topic in enumerate(TOPICS):
        shared = (
            f"\n\nHuman: Can you tell me about {topic}?\n\nAssistant: Sure, what about it?"
            f"\n\nHuman: Something short, please.\n\nAssistant:"
        )
        rows.append(
            {
                "chosen": shared + f" Here is a short note on {topic}.",
                "rejected": shared + (" No." if i % 2 else " I would rather not."),
            }
        )
    return rows


def test_reward_model_trains_on_hh_rlhf_dialogues(tmp_path):
    file = write_jsonl(tmp_path / "hh.jsonl", hh_rows())
    # One file, no `test` split: the configured split is missing, so data.val_fraction is held out.
    run = build(compose_config("rm_tiny", tmp_path, ["data=hh_rlhf", f"data.path={file}", *E2E]))
    before = parameters_of(run.module.model)
    fit(run)
    assert changed(before, run.module.model)
    item = run.datamodule.train_items[0]
    assert item.prompt.startswith("\n\nHuman: ") and item.prompt.endswith("\n\nAssistant:")
    assert item.prompt.count("\n\nHuman:") == 2, "earlier turns stay in the prompt"


def test_margin_reward_model_trains_on_jsonl_with_margins(tmp_path):
    rows = [
        {
            "prompt": f"Say something about {topic}.",
            "chosen": f" {topic} is lovely.",
            "rejected": " meh",
            "margin": float(i % 3),
        }
        for i, topic in enumerate(TOPICS)
    ]
    file = write_jsonl(tmp_path / "pairs.jsonl", rows)
    run = build(compose_config("rm_margin", tmp_path, ["data=jsonl", f"data.path={file}", *E2E]))
    assert run.module.loss_fn.uses_margin
    before = parameters_of(run.module.model)
    fit(run)
    assert changed(before, run.module.model)
    margins = sorted(m for item in run.datamodule.train_items + run.datamodule.val_items for m in item.margins)
    assert margins == sorted(row["margin"] for row in rows)


def test_dpo_trains_on_chat_messages(tmp_path):
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Tell me about {topic}."}],
            "chosen": [{"role": "assistant", "content": f"{topic} is worth a look."}],
            "rejected": [{"role": "assistant", "content": "No idea."}],
        }
        for topic in TOPICS
    ]
    file = write_jsonl(tmp_path / "chat.jsonl", rows)
    overrides = ["data=jsonl", f"data.path={file}", "module.sampling.max_new_tokens=8", *E2E]
    run = build(compose_config("dpo", tmp_path, overrides))
    before = parameters_of(run.module.policy)
    fit(run)
    assert changed(before, run.module.policy)
    item = run.datamodule.train_items[0]
    # The shipped chat template: "<|user|>\n...\n<|assistant|>\n" is the prompt; the response carries no EOS text.
    assert item.prompt.startswith("<|user|>\nTell me about ") and item.prompt.endswith("\n<|assistant|>\n")
    assert item.examples[0].ids[-1] == run.datamodule.tokenizer.eos_token_id
    assert all(run.datamodule.tokenizer.eos_token not in response for response in item.responses)


# ----------------------------------------------------------------------------- PPO prompts + pretraining corpus


def embedded_prompts_with_corpus(tokenizer) -> PromptDataModule:
    """The embedded prompts (batches of 8) with the pretraining corpus (batches of 4)."""
    return PromptDataModule(
        EmbeddedPrompts(seed=0),
        tokenizer,
        batch_size=8,
        val_batch_size=8,
        max_prompt_length=24,
        train_split="train",
        val_split="validation",
        val_fraction=0.05,
        seed=0,
        data_seed=0,
        pretrain_source=EmbeddedPretrainCorpus(seed=0),
        mix_pretraining=True,
        pretrain_batch_size=4,
        pretrain_max_length=32,
        **LOADING,
    )


@pytest.fixture(scope="module")
def prompt_datamodule(tiny_tokenizer) -> PromptDataModule:
    datamodule = embedded_prompts_with_corpus(tiny_tokenizer)
    datamodule.setup("fit")
    return datamodule


@pytest.mark.parametrize("ptx, expected_loaders", [("mix", {"prompts", "pretrain"}), ("none", {"prompts"})])
def test_pretraining_corpus_is_loaded_only_when_ptx_mixes_it(tmp_path, ptx, expected_loaders):
    """regularizer/ptx=none leaves the prompt data without a corpus, by config alone."""
    datamodule = build(compose_config("ppo_kl", tmp_path, [f"regularizer/ptx={ptx}"])).datamodule
    datamodule.setup("fit")
    assert set(datamodule.train_dataloader().iterables) == expected_loaders
    assert (datamodule.pretrain_items is not None) == (ptx == "mix")


def _batch_tensors(batch) -> list[torch.Tensor]:
    return [batch.input_ids, batch.attention_mask]


def test_one_pretraining_batch_per_prompt_batch(prompt_datamodule):
    datamodule = prompt_datamodule
    combined = datamodule.train_dataloader()
    prompts, pretrain = combined.iterables["prompts"], combined.iterables["pretrain"]
    assert len(prompts) == len(datamodule.train_items) // 8
    assert len(pretrain) == len(prompts)
    count = 0
    for raw, _, _ in itertools.islice(combined, 5):
        batch = datamodule.on_before_batch_transfer(raw, 0)
        assert isinstance(batch, PPOBatch)
        assert batch.prompts.input_ids.shape[0] == 8
        assert batch.pretrain.input_ids.shape[0] == 4
        # Prompt-less texts: every real token but the first is a target.
        assert torch.equal(batch.pretrain.loss_mask, batch.pretrain.attention_mask[:, 1:].bool())
        count += 1
    assert count == 5
    assert len(combined) == len(prompts)


@pytest.mark.parametrize("name", ["prompts", "pretrain"])
def test_loader_state_round_trips(prompt_datamodule, name):
    loader = prompt_datamodule.train_dataloader().iterables[name]
    iterator = iter(loader)
    for _ in range(2):
        next(iterator)
    state = loader.state_dict()
    expected = [_batch_tensors(next(iterator)) for _ in range(3)]

    # Each train_dataloader() call builds new loaders, samplers and generators.
    fresh = prompt_datamodule.train_dataloader().iterables[name]
    fresh.load_state_dict(state)
    resumed = [_batch_tensors(batch) for batch in itertools.islice(iter(fresh), 3)]
    for want, got in zip(expected, resumed, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(want, got))
    # And the resumed order is not simply the start of a new epoch.
    first = _batch_tensors(next(iter(prompt_datamodule.train_dataloader().iterables[name])))
    assert not torch.equal(first[0], resumed[0][0])
