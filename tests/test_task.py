"""Tests of the embedded offline task: language, gold reward, datasets, tokenizer."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_rlhf.errors import ConfigError
from lit_rlhf.task import EmbeddedTask, GoldReward, build_task_tokenizer, max_gold_reward
from lit_rlhf.task.dataset import MIN_PAIR_GAP, SPLITS
from lit_rlhf.task.gold_reward import EMPTY_RESPONSE_REWARD, gold_reward, phrase_sentiment
from lit_rlhf.task.language import (
    ADJECTIVES,
    ASPECTS,
    TRAIN_TITLES,
    VALIDATION_TITLES,
    make_prompt,
    parse_response,
    prompt_aspect,
)

MUSIC = make_prompt("the paper lantern", "music")
PLOT = make_prompt("the paper lantern", "plot")


@pytest.fixture(scope="module")
def task() -> EmbeddedTask:
    return EmbeddedTask(seed=0)


@pytest.fixture(scope="module")
def tokenizer(task):
    return build_task_tokenizer(task)


# --- language and gold reward ------------------------------------------------------


def _is_clean(response: str) -> bool:
    sentences = parse_response(response)
    return 1 <= len(sentences) <= 3 and all(s.grammatical and s.terminated for s in sentences)


def test_writer_reviews_parse_and_follow_the_format(task):
    records = task.demonstrations("validation")
    responses = [r.response for r in records]
    responses += [r for p in task.preference_pairs("validation") for r in (p.chosen, p.rejected)]
    responses += [r for rec in task.rankings("validation") for r in rec.responses]
    assert all(_is_clean(r) for r in responses)
    # The response continues the prompt: one leading space, single spaces between sentences.
    assert all(r.startswith(" ") and not r.startswith("  ") and "  " not in r for r in responses)
    assert all(prompt_aspect(r.prompt) in ASPECTS for r in records)


@pytest.mark.parametrize(
    ("prompt", "response", "expected"),
    [
        # very good 1.0*1.5 + dull -1 + fun +1 + on-topic (the music) +1 = 2.5
        (MUSIC, " the music was very good. it felt dull but fun.", 2.5),
        # not great: -(2) = -2; subject "this movie" earns no aspect bonus
        (PLOT, " this movie was not great.", -2.0),
        # really awful -2*1.5 = -3, boring -1, on-topic +1 = -3
        (PLOT, " the plot seemed really awful and boring.", -3.0),
        # not so terrible: -(-2*1.5) = +3, neutral long 0, on-topic +1 = 4
        (MUSIC, " the music is not so terrible and long.", 4.0),
        # talks about the acting, not the music: no bonus; charming +1
        (MUSIC, " the acting felt charming.", 1.0),
    ],
)
def test_gold_reward_of_hand_written_examples(prompt, response, expected):
    assert gold_reward(prompt, response) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("clean", "flawed", "expected_drop"),
    [
        # repetition: great 2 + good 1 + bonus 1 = 4  vs  great 2 + (repeat -1) + 1 = 2
        (" the music was great and good.", " the music was great and great.", 2.0),
        # broken grammar: 2 + 1 + 1 = 4  vs  2 + 1 + (broken -2, its "good" unread) = 1
        (" the music was great. it was good.", " the music was great. it good was.", 3.0),
        # unterminated last sentence: 4  vs  2 + 1 - 2 = 1
        (" the music was great. it was good.", " the music was great. it was good", 3.0),
        # stray dots are empty sentences: 4  vs  4 - 2 = 2
        (" the music was great. it was good.", " the music was great.. it was good.", 2.0),
        # rambling: 2 + 1 + 1 + 1 = 5  vs  5 - 1, the 4th sentence is not read
        (
            " the music was great. it was good. it was fun.",
            " the music was great. it was good. it was fun. it was very wonderful.",
            1.0,
        ),
        # capitalised and other words are outside the language
        (" the music was great.", " The music was great!", 5.0),
    ],
)
def test_each_flaw_lowers_the_gold_reward(clean, flawed, expected_drop):
    assert gold_reward(MUSIC, clean) - gold_reward(MUSIC, flawed) == pytest.approx(expected_drop)


def test_empty_response_is_worse_than_almost_every_writer_review(task):
    assert gold_reward(MUSIC, "") == gold_reward(MUSIC, "  \n") == EMPTY_RESPONSE_REWARD
    golds = [gold_reward(r.prompt, r.response) for r in task.demonstrations("validation")]
    assert sum(g <= EMPTY_RESPONSE_REWARD for g in golds) / len(golds) < 0.05


def test_aspect_bonus_is_one_and_found_inside_a_chat_prompt():
    response = " the music was good. it was fun."
    assert gold_reward(MUSIC, response) - gold_reward(PLOT, response) == pytest.approx(1.0)
    wrapped = f"<|user|>\n{MUSIC}\n<|assistant|>\n"
    assert prompt_aspect(wrapped) == "music"
    assert gold_reward(wrapped, response) == gold_reward(MUSIC, response)
    assert prompt_aspect("write something nice") is None


def _random_response(rng: random.Random) -> str:
    """Any grammatical response, repeats and extra sentences allowed."""
    sentences = []
    for _ in range(rng.randint(1, 5)):
        phrases = [
            " ".join(
                ["not"] * (rng.random() < 0.5)
                + [rng.choice(["very", "so"])] * (rng.random() < 0.5)
                + [rng.choice(ADJECTIVES)]
            )
            for _ in range(rng.randint(1, 2))
        ]
        subject = rng.choice(["it", "this movie", f"the {rng.choice(ASPECTS)}"])
        sentences.append(f"{subject} was {' and '.join(phrases)}.")
    return " " + " ".join(sentences)


def test_max_gold_reward_is_reached_and_never_exceeded():
    # Six distinct phrases worth 1.5 * 2 = 3 each, plus the aspect bonus: 6 * 3 + 1 = 19.
    best = (
        " the music was very great and really wonderful. it was so brilliant and not very awful."
        " it was not very terrible and not very dreadful."
    )
    assert gold_reward(MUSIC, best) == max_gold_reward() == 19.0
    rng = random.Random(0)
    assert max(gold_reward(MUSIC, _random_response(rng)) for _ in range(3000)) <= max_gold_reward()


def test_gold_reward_tracks_naive_adjective_count_on_distribution(task):
    """On writer text, "sum of adjective sentiments" (what an RM can learn) orders pairs like gold."""

    def naive(response: str) -> float:
        return sum(phrase_sentiment(p) for s in parse_response(response) for p in s.phrases)

    pairs = task.preference_pairs("validation")
    agree = [
        (naive(p.chosen) > naive(p.rejected)) == (gold_reward(p.prompt, p.chosen) > gold_reward(p.prompt, p.rejected))
        for p in pairs
    ]
    assert sum(agree) / len(agree) >= 0.9


def test_gold_reward_callable_is_batched_float32_and_hydra_instantiable():
    from hydra.utils import instantiate

    reward = instantiate({"_target_": "lit_rlhf.task.GoldReward"})
    assert isinstance(reward, GoldReward)
    out = reward([MUSIC, PLOT], [" the music was good.", ""])
    assert out.shape == (2,) and out.dtype == torch.float32
    assert out.tolist() == [2.0, EMPTY_RESPONSE_REWARD]
    with pytest.raises(ValueError):
        reward([MUSIC], [])


# --- datasets ----------------------------------------------------------------------


def test_default_sizes(task):
    sizes = {
        "prompts": (2000, 256),
        "demonstrations": (20000, 1000),
        "preference_pairs": (10000, 1000),
        "rankings": (2000, 200),
        "pretraining_corpus": (10000, 500),
    }
    for name, expected in sizes.items():
        assert tuple(len(getattr(task, name)(split)) for split in SPLITS) == expected


def test_demonstrations_leave_room_to_improve(task):
    golds = [gold_reward(r.prompt, r.response) for r in task.demonstrations("validation")]
    assert abs(statistics.mean(golds)) < 2.0
    assert statistics.pstdev(golds) > 2.0
    assert max(golds) < max_gold_reward() - 3
    # A few careless repeats, so the reward model sees the penalty only rarely.
    adjectives = [
        [p.adjective for s in parse_response(r.response) for p in s.phrases] for r in task.demonstrations("train")
    ]
    repeats = [len(set(words)) < len(words) for words in adjectives]
    assert 0.005 < sum(repeats) / len(repeats) < 0.05


def test_train_and_validation_titles_are_disjoint(task):
    assert not set(TRAIN_TITLES) & set(VALIDATION_TITLES)
    for split, titles in (("train", TRAIN_TITLES), ("validation", VALIDATION_TITLES)):
        prompts = {r.prompt for r in task.prompts(split)} | {r.prompt for r in task.demonstrations(split)}
        allowed = {make_prompt(t, a) for t in titles for a in ASPECTS}
        assert prompts <= allowed


def _fingerprint(task: EmbeddedTask) -> str:
    data = [
        [repr(r) for r in task.prompts(s) + task.demonstrations(s) + task.preference_pairs(s) + task.rankings(s)]
        + task.pretraining_corpus(s)
        for s in SPLITS
    ]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


SMALL = dict(
    num_prompts=(20, 5), num_demonstrations=(50, 10), num_pairs=(30, 10), num_rankings=(10, 5), num_corpus_lines=(40, 8)
)


@pytest.mark.slow
def test_datasets_and_tokenizer_are_deterministic_across_processes():
    # Another process has another hash seed: catches any dependence on set/dict order or hash().
    code = (
        "from tests.test_task import SMALL, _fingerprint, _tokenizer_fingerprint;"
        "from lit_rlhf.task import EmbeddedTask;"
        "t = EmbeddedTask(seed=7, **SMALL); print(_fingerprint(t), _tokenizer_fingerprint(t))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=root
    ).stdout.split()
    task = EmbeddedTask(seed=7, **SMALL)
    assert out == [_fingerprint(task), _tokenizer_fingerprint(task)]
    assert _fingerprint(EmbeddedTask(seed=8, **SMALL)) != out[0]


def test_artefacts_do_not_depend_on_each_others_sizes():
    small = EmbeddedTask(seed=1, **SMALL)
    other = EmbeddedTask(seed=1, **{**SMALL, "num_pairs": (5, 5), "num_prompts": (1, 1)})
    assert small.demonstrations("train") == other.demonstrations("train")
    assert small.preference_pairs("train")[:5] == other.preference_pairs("train")


def test_likert_scores_and_margins_are_in_range(task):
    scores = [s for rec in task.rankings("validation") for s in rec.scores]
    assert set(scores) <= {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0} and len(set(scores)) >= 5
    margins = [p.margin for p in task.preference_pairs("validation")]
    assert min(margins) >= 0.0 and max(margins) <= 2.0  # (7 - 1) / 3
    assert 0.3 < sum(m > 0 for m in margins) / len(margins) < 1.0


def test_preference_labels_follow_bradley_terry(task):
    pairs = task.preference_pairs("train")
    gaps = [gold_reward(p.prompt, p.chosen) - gold_reward(p.prompt, p.rejected) for p in pairs]
    # Gold ordering is well defined: pairs are drawn at least MIN_PAIR_GAP apart.
    assert sum(abs(g) >= MIN_PAIR_GAP for g in gaps) / len(gaps) > 0.999
    # Given the gaps, "chosen has higher gold" is Bernoulli(sigmoid(|gap| / tau)) per pair, so
    # the fraction has mean E[sigmoid(|gap|)] and std <= sqrt(0.25 / n) = 0.005 for n = 10000;
    # 0.02 is 4 std. Noise must be present (< 1) yet labels mostly right.
    expected = statistics.mean(1 / (1 + math.exp(-abs(g))) for g in gaps)
    observed = sum(g > 0 for g in gaps) / len(gaps)
    assert observed == pytest.approx(expected, abs=0.02)
    assert 0.85 < observed < 0.995
    # Close pairs are mislabelled much more often than clear ones.
    close = [g > 0 for g in gaps if abs(g) <= 1.5]
    assert len(close) > 100 and sum(close) / len(close) < 0.9


@pytest.mark.parametrize("k", [2, 4])
def test_rankings_are_best_first_on_average(task, k):
    records = task.rankings("train", k=k)
    assert all(len(r.responses) == len(r.scores) == k for r in records)
    golds = [[gold_reward(r.prompt, x) for x in r.responses] for r in records]
    means = [statistics.mean(g[i] for g in golds) for i in range(k)]
    assert means == sorted(means, reverse=True) and means[0] - means[-1] > 3.0
    concordant = [g[i] > g[j] for g in golds for i in range(k) for j in range(i + 1, k) if g[i] != g[j]]
    assert sum(concordant) / len(concordant) > 0.85


def test_pretraining_corpus_is_plain_grammatical_text(task):
    lines = task.pretraining_corpus("validation")
    assert all("review of" not in line and line == line.strip() for line in lines)
    assert all(all(s.grammatical and s.terminated for s in parse_response(line)) for line in lines)
    assert len(set(lines)) > 0.8 * len(lines)


@pytest.mark.parametrize("method", ["prompts", "demonstrations", "preference_pairs", "rankings", "pretraining_corpus"])
def test_unknown_split_raises_config_error_naming_valid_splits(task, method):
    with pytest.raises(ConfigError, match="train, validation"):
        getattr(task, method)("test")


def test_bad_arguments_raise_config_error(task):
    with pytest.raises(ConfigError):
        task.rankings("train", k=1)
    with pytest.raises(ConfigError):
        EmbeddedTask(num_pairs=(10,))
    with pytest.raises(ConfigError):
        EmbeddedTask(label_temperature=0.0)


# --- tokenizer ---------------------------------------------------------------------


def _tokenizer_fingerprint(task: EmbeddedTask) -> str:
    return hashlib.sha256(build_task_tokenizer(task, vocab_size=300).backend_tokenizer.to_str().encode()).hexdigest()


@pytest.mark.parametrize(
    "text",
    [
        "héllo wörld",
        "日本語のテキスト 🎉🚀",
        "  leading spaces\tand\ttabs\r\n",
        "e\u0301 combining",
        "\x00\x7f bytes",
        "Human: hi\n\nAssistant: hello",
        "<|user|>\nmarkers <|assistant|>\n",
    ],
)
def test_tokenizer_round_trips_arbitrary_text(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=True)
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids


def test_tokenizer_specials_and_size(tokenizer):
    assert len(tokenizer) == 512
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.bos_token_id == tokenizer.eos_token_id
    assert tokenizer.padding_side == "right"
    batch = tokenizer(["it", " the music was good."], padding=True)
    assert batch["input_ids"][0][-1] == tokenizer.pad_token_id and batch["attention_mask"][0][-1] == 0


def test_tokenizer_compresses_the_task_language(tokenizer):
    response = " the music was very good. it felt dull but fun. the ending seemed not really wonderful."
    ids = tokenizer.encode(response)
    assert len(ids) * 3 < len(response.encode())  # about one token per word, ~5 bytes each
    assert tokenizer.decode(ids) == response


def test_tokenizer_save_and_load_with_auto_tokenizer(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = f"{MUSIC} the music was good. 🎉"
    assert loaded.encode(text) == tokenizer.encode(text)
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.padding_side) == (
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        "right",
    )
    messages = [{"role": "user", "content": MUSIC}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert loaded.apply_chat_template(messages, tokenize=False) == rendered


def test_chat_template_renders_and_prompt_is_a_prefix(tokenizer):
    messages = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": MUSIC},
        {"role": "assistant", "content": " the music was good."},
    ]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert full == f"<|system|>\nbe kind\n<|user|>\n{MUSIC}\n<|assistant|>\n the music was good."
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert prompt + messages[-1]["content"] == full
    assert tokenizer.eos_token not in full  # the pipeline appends EOS itself
    with pytest.raises(Exception, match="unknown chat role"):
        tokenizer.apply_chat_template([{"role": "robot", "content": "x"}], tokenize=False)
