"""A tiny language of lowercase movie reviews: vocabulary, prompts, grammar and parser.

A prompt names a movie and the aspect the review should talk about:

    "review of the paper lantern, about the music:"

A response is 1-3 sentences, each following one small grammar

    SENTENCE := SUBJ VERB ADJP [CONJ ADJP] "."
    SUBJ     := "the" ASPECT | "this movie" | "it"
    VERB     := "was" | "is" | "felt" | "seemed"
    ADJP     := ["not"] ["very" | "really" | "so"] ADJ
    CONJ     := "and" | "but"

The response begins with a space and sentences are joined by single spaces, so
`prompt + response` is the full text:

    " the music was very good. it felt dull but fun."

Adjectives carry a sentiment value (`ADJECTIVE_SENTIMENT`), which the gold
reward in `gold_reward.py` reads through `parse_response`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ASPECTS: tuple[str, ...] = (
    "plot",
    "acting",
    "music",
    "ending",
    "cast",
    "visuals",
    "dialogue",
    "pacing",
)

# Sentiment of each adjective. Three per strength level, so that a review with
# six adjective slots cannot reach the maximum with the +2 words alone.
ADJECTIVE_SENTIMENT: dict[str, int] = {
    "great": 2,
    "wonderful": 2,
    "brilliant": 2,
    "good": 1,
    "fun": 1,
    "charming": 1,
    "long": 0,
    "quiet": 0,
    "simple": 0,
    "strange": 0,
    "bad": -1,
    "boring": -1,
    "dull": -1,
    "awful": -2,
    "terrible": -2,
    "dreadful": -2,
}
ADJECTIVES: tuple[str, ...] = tuple(ADJECTIVE_SENTIMENT)

INTENSIFIERS: tuple[str, ...] = ("very", "really", "so")
NEGATION = "not"
VERBS: tuple[str, ...] = ("was", "is", "felt", "seemed")
CONJUNCTIONS: tuple[str, ...] = ("and", "but")
GENERIC_SUBJECTS: tuple[str, ...] = ("this movie", "it")

# Invented titles; the validation split uses only the held-out ones, so a model
# that memorises titles gains nothing on validation prompts.
TRAIN_TITLES: tuple[str, ...] = (
    "the paper lantern",
    "midnight harbor",
    "the glass orchard",
    "a winter tide",
    "the copper key",
    "northern lights",
    "the last ferry",
    "salt and smoke",
    "the quiet valley",
    "iron meadow",
    "the red balloon",
    "a house of echoes",
    "the silver road",
    "distant thunder",
    "the velvet hour",
    "a city of kites",
    "the hollow crown",
    "summer static",
    "the blue umbrella",
    "the river sings",
    "a letter to june",
    "the clockmaker",
    "stone garden",
    "the night train",
    "a moth in amber",
    "the long shadow",
    "paper planets",
    "the lighthouse keeper",
    "seven bridges",
    "the orange grove",
    "a quiet storm",
    "the falling sky",
    "the tin drum club",
    "harvest moon",
    "the empty stage",
    "the wild orchid",
    "a map of rain",
    "the lost chord",
    "the fox and the bell",
    "golden static",
)
VALIDATION_TITLES: tuple[str, ...] = (
    "the marble sea",
    "a field of ash",
    "the crooked tower",
    "blue december",
    "the painted desert",
    "a song for maya",
    "the glass bird",
    "the far shore",
    "ember and frost",
    "the second spring",
)

_PROMPT_TEMPLATE = "review of {title}, about the {aspect}:"
# Found anywhere in a longer text (e.g. a prompt wrapped by a chat template).
_PROMPT_ASPECT = re.compile(r"about the ([a-z]+):")


def make_prompt(title: str, aspect: str) -> str:
    """The prompt asking for a review of `title` that talks about `aspect`."""
    return _PROMPT_TEMPLATE.format(title=title, aspect=aspect)


def prompt_aspect(prompt: str) -> str | None:
    """The aspect a prompt asks about (its last mention), or None if it names none."""
    found = [a for a in _PROMPT_ASPECT.findall(prompt) if a in ASPECTS]
    return found[-1] if found else None


@dataclass(frozen=True)
class AdjectivePhrase:
    """ADJP := ["not"] [intensifier] ADJ."""

    adjective: str
    intensified: bool = False
    negated: bool = False

    def render(self, intensifier: str = "very") -> str:
        words = [NEGATION] if self.negated else []
        words += [intensifier] if self.intensified else []
        return " ".join([*words, self.adjective])


@dataclass(frozen=True)
class Sentence:
    """One parsed sentence. `phrases` is empty unless `grammatical`."""

    text: str
    grammatical: bool
    terminated: bool
    aspect: str | None = None  # the aspect named by the subject, if any
    phrases: tuple[AdjectivePhrase, ...] = ()


def render_sentence(subject: str, verb: str, phrases: tuple[str, ...], conjunction: str = "and") -> str:
    """Join rendered parts into one terminated sentence, without leading space."""
    adjps = f" {conjunction} ".join(phrases)
    return f"{subject} {verb} {adjps}."


def _parse_adjp(tokens: list[str], i: int) -> tuple[AdjectivePhrase, int] | None:
    """Parse ADJP starting at tokens[i]; return the phrase and the next index."""
    negated = i < len(tokens) and tokens[i] == NEGATION
    i += negated
    intensified = i < len(tokens) and tokens[i] in INTENSIFIERS
    i += intensified
    if i < len(tokens) and tokens[i] in ADJECTIVE_SENTIMENT:
        return AdjectivePhrase(tokens[i], intensified, negated), i + 1
    return None


def _parse_subject(tokens: list[str]) -> tuple[str | None, int] | None:
    """Parse SUBJ; return (aspect or None, next index), or None if it is no subject."""
    if len(tokens) >= 2 and tokens[0] == "the" and tokens[1] in ASPECTS:
        return tokens[1], 2
    if tokens[:2] == ["this", "movie"]:
        return None, 2
    if tokens[:1] == ["it"]:
        return None, 1
    return None


def parse_sentence(text: str, terminated: bool = True) -> Sentence:
    """Parse one sentence (without its final "."), lenient only about whitespace."""
    broken = Sentence(text, grammatical=False, terminated=terminated)
    tokens = text.split()
    subject = _parse_subject(tokens)
    if subject is None:
        return broken
    aspect, i = subject
    if i >= len(tokens) or tokens[i] not in VERBS:
        return broken
    first = _parse_adjp(tokens, i + 1)
    if first is None:
        return broken
    phrases, i = [first[0]], first[1]
    if i < len(tokens) and tokens[i] in CONJUNCTIONS:
        second = _parse_adjp(tokens, i + 1)
        if second is None:
            return broken
        phrases.append(second[0])
        i = second[1]
    if i != len(tokens):
        return broken
    return Sentence(text, grammatical=True, terminated=terminated, aspect=aspect, phrases=tuple(phrases))


def parse_response(response: str) -> tuple[Sentence, ...]:
    """Split a response at every "." and parse each piece.

    Text after the last "." is an unterminated sentence (typically a generation
    cut off by the token limit). Empty pieces between dots ("good.. it") count
    as ungrammatical sentences, so stray punctuation cannot be free.
    """
    pieces = response.split(".")
    sentences = [parse_sentence(piece, terminated=True) for piece in pieces[:-1]]
    if pieces[-1].strip():
        sentences.append(parse_sentence(pieces[-1], terminated=False))
    return tuple(sentences)
