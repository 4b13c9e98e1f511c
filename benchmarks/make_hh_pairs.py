"""Write a synthetic preference file in Anthropic HH-RLHF's format: `{"chosen": ..., "rejected": ...}` per line.

Each pair is a multi-turn dialogue ("\\n\\nHuman: ...\\n\\nAssistant: ...") whose last assistant turn differs.
The default, 160,000 pairs of 1-5 turns, is about the size of HH-RLHF's training split (~150 MB):

    python benchmarks/make_hh_pairs.py /tmp/hh/train.jsonl
    python -m lit_rlhf.train +experiment=rm_tiny data=hh_rlhf data.path=/tmp/hh/train.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TOPICS = ["the weather", "a recipe", "my cat", "a book", "the train", "a song", "tea", "the garden", "a film", "a bike"]
ASKS = [
    "Can you tell me about {topic}?",
    "What do you think of {topic}?",
    "I need advice on {topic}, where should I start?",
    "Could you explain {topic} to a friend who has never heard of it?",
    "Why do people care so much about {topic}?",
]
REPLIES = [
    "Sure. {topic} is something many people enjoy, and there is a lot to say about it.",
    "Happy to help. The first thing to know about {topic} is that it rewards a little patience.",
    "Good question. Most people start with {topic} by asking a friend, then reading a short guide.",
    "It depends on what you want from {topic}; tell me a bit more and I can be more specific.",
]
GOOD = [
    " Here is a careful answer about {topic}: start small, note what works, and ask again if anything is unclear.",
    " A short, honest summary: {topic} is easier than it looks, and the details above should get you going.",
]
BAD = [" No.", " I would rather not talk about {topic}.", " Whatever, {topic} is boring and so is this question."]


def dialogue(rng: random.Random) -> tuple[str, str]:
    """A shared multi-turn prefix ending in "Assistant:", and the topic of its last turn."""
    topic = rng.choice(TOPICS)
    turns = []
    for _ in range(rng.randint(0, 4)):
        turns.append(f"\n\nHuman: {rng.choice(ASKS).format(topic=topic)}")
        turns.append(f"\n\nAssistant: {rng.choice(REPLIES).format(topic=topic)}")
    turns.append(f"\n\nHuman: {rng.choice(ASKS).format(topic=topic)}\n\nAssistant:")
    return "".join(turns), topic


def write_pairs(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as stream:
        for _ in range(count):
            prefix, topic = dialogue(rng)
            chosen = prefix + rng.choice(GOOD).format(topic=topic)
            rejected = prefix + rng.choice(BAD).format(topic=topic)
            stream.write(json.dumps({"chosen": chosen, "rejected": rejected}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="the .jsonl file to write")
    parser.add_argument("--pairs", type=int, default=160_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_pairs(args.path, args.pairs, args.seed)
    print(f"wrote {args.pairs} pairs to {args.path} ({args.path.stat().st_size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
