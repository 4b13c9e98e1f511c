"""Write long-prompt preference pairs in Anthropic HH-RLHF's format: `{"chosen": ..., "rejected": ...}` per line.

Multi-turn dialogues ("\\n\\nHuman: ...\\n\\nAssistant: ...") whose shared prompt, up to the last "\\n\\nAssistant:",
is 150-400 tokens and whose two last assistant turns are 20-80 tokens each, counted in the benchmark's
tokenizer (the shipped tiny one unless --tokenizer), each length drawn uniformly; the same seed writes the
same bytes. A folder gets `train.jsonl` and `test.jsonl`, the splits `data=hh_rlhf data.path=DIR` reads:

    python benchmarks/make_long_pairs.py /tmp/long-pairs                    # 1,000 + 100 pairs, seed 0
    python -m lit_rlhf.train +experiment=rm_tiny data=hh_rlhf data.path=/tmp/long-pairs \\
        data.max_length=512 data.max_prompt_length=448

It prints the token lengths it wrote and how many pairs tokenize to the same ids as prompt + response
text (TRL's way) and as prompt and response apart (ours): where they differ the two sides train on
different ids.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

PROMPT_TOKENS, RESPONSE_TOKENS = (150, 400), (20, 80)
TOPICS = ["the weather", "a recipe", "my cat", "a book", "the train", "a song", "tea", "the garden", "a film", "a bike"]
TOPICS += ["my budget", "a job interview", "the neighbours", "a long walk", "bread", "a birthday", "the move"]
ASKS = [
    "Can you tell me about {topic}?",
    "What do you think of {topic}?",
    "I need advice on {topic}, where should I start?",
    "Could you explain {topic} to a friend who has never heard of it?",
    "Why do people care so much about {topic}?",
    "I tried what you said about {topic} and it only half worked. What else could I do?",
    "My sister thinks {topic} is a waste of time. How would you answer her?",
]
REPLIES = [
    "Sure. {topic} is something many people enjoy, and there is a lot to say about it.",
    "Happy to help. The first thing to know about {topic} is that it rewards a little patience.",
    "Good question. Most people start with {topic} by asking a friend, then reading a short guide.",
    "It depends on what you want from {topic}; tell me a bit more and I can be more specific.",
    "There are two common ways to think about {topic}, and both have their fans.",
    "A useful habit with {topic} is to write down what you tried and what happened next.",
]
GOOD = [
    "Here is a careful answer about {topic}: start small, note what works, and ask again if anything is unclear.",
    "A short, honest summary: {topic} is easier than it looks, and the details above should get you going.",
    "If I were you I would try one change to {topic} this week and see how it feels before doing more.",
]
BAD = [
    "No.",
    "I would rather not talk about {topic}.",
    "Whatever, {topic} is boring and so is this question.",
    "Ask someone else about {topic}, I have nothing for you.",
]


def sentence_words(rng: random.Random, sentences: list[str], topic: str, count: int) -> list[str]:
    return " ".join(rng.choice(sentences).format(topic=topic) for _ in range(count)).split()


def long_prompt(rng: random.Random, count, topic: str, target: int) -> str:
    """Human/Assistant turns until `target` tokens are reached, the last Assistant turn then cut to fit."""
    final = f"\n\nHuman: {rng.choice(ASKS).format(topic=topic)}\n\nAssistant:"
    turns: list[tuple[str, list[str]]] = []

    def text() -> str:
        return "".join(f"\n\n{speaker}: {' '.join(words)}" for speaker, words in turns) + final

    while count(text()) < target:
        turns.append(("Human", sentence_words(rng, ASKS, topic, rng.randint(1, 2))))
        turns.append(("Assistant", sentence_words(rng, REPLIES, topic, rng.randint(1, 3))))
    while count(text()) > target and len(turns[-1][1]) > 1:
        turns[-1][1].pop()
    return text()


def response(rng: random.Random, count, sentences: list[str], topic: str, target: int) -> str:
    """Words of random `sentences` while the response stays within `target` tokens; starts with a space."""
    text = ""
    while True:
        for word in sentence_words(rng, sentences, topic, 1):
            if count(f"{text} {word}") > target:
                return text
            text = f"{text} {word}"


def long_pair(rng: random.Random, count) -> dict[str, str]:
    """One record: a shared dialogue prefix of 150-400 tokens, and two last turns of 20-80 tokens each."""
    while True:  # a draw whose words overshoot a range (rare) is drawn again: still a function of the seed
        topic = rng.choice(TOPICS)
        prompt = long_prompt(rng, count, topic, rng.randint(*PROMPT_TOKENS))
        chosen, rejected = (response(rng, count, s, topic, rng.randint(*RESPONSE_TOKENS)) for s in (GOOD, BAD))
        if in_range(count(prompt), PROMPT_TOKENS) and all(
            in_range(count(r), RESPONSE_TOKENS) for r in (chosen, rejected)
        ):
            return {"chosen": prompt + chosen, "rejected": prompt + rejected}


def in_range(value: int, bounds: tuple[int, int]) -> bool:
    return bounds[0] <= value <= bounds[1]


def write_split(path: Path, pairs: int, rng: random.Random, tokenizer) -> dict:
    """Write `pairs` records to `path`; return their token lengths and the tokenization check."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    lengths, same_ids = {"prompt": [], "chosen": [], "rejected": []}, 0
    with open(path, "w") as stream:
        for _ in range(pairs):
            pair = long_pair(rng, count)
            stream.write(json.dumps(pair) + "\n")
            prompt = pair["chosen"][: pair["chosen"].rfind("\n\nAssistant:") + len("\n\nAssistant:")]
            lengths["prompt"].append(count(prompt))
            same = True
            for field in ("chosen", "rejected"):
                response = pair[field][len(prompt) :]
                lengths[field].append(count(response))
                joint = tokenizer(pair[field], add_special_tokens=False)["input_ids"]
                apart = tokenizer(prompt, add_special_tokens=False)["input_ids"]
                same &= joint == apart + tokenizer(response, add_special_tokens=False)["input_ids"]
            same_ids += same
    summary = {k: (min(v), statistics.median(v), max(v)) for k, v in lengths.items()}
    return summary | {"pairs": pairs, "same_ids_joint_and_apart": same_ids}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where train.jsonl and test.jsonl go")
    parser.add_argument("--pairs", type=int, default=1000, help="training pairs")
    parser.add_argument("--test-pairs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: the shipped tiny-sft's)")
    args = parser.parse_args(argv)
    from lit_rlhf.config import asset_path
    from lit_rlhf.models.loading import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer or asset_path("tiny-sft"))
    rng = random.Random(args.seed)
    args.folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in (("train", args.pairs), ("test", args.test_pairs)):
        summary = write_split(args.folder / f"{split}.jsonl", pairs, rng, tokenizer)
        print(f"{args.folder / f'{split}.jsonl'}: {json.dumps(summary)} (tokens: min, median, max)")


if __name__ == "__main__":
    main()
