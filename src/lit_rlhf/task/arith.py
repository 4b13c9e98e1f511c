"""The embedded verifiable-reward task: sums and differences of two or three numbers.

A prompt is the problem and the response is its answer, a plain number, with no
space between them (the tokenizer is character-level, so nothing merges across
the boundary):

    prompt "37+5-12="    response "30"    columns {"answer": "30"}

Operands are 0-99 and answers are never negative (problems with a negative
answer are redrawn), so an answer is always a string of digits that both a
normalised exact match and math-verify read as the same number.

Which split a problem belongs to is a fixed function of its text (a SHA-256
hash, about 10% validation), independent of the seed: validation problems are
never in any seed's training data, so the shipped model's held-out problems stay
held out when a run uses another seed. Each artefact and split has its own
random stream, seeded by a string, as in the review task (`dataset.py`).

The SFT demonstrations come from a simulated labeller who sometimes forgets a
carry (`careless_answer`), as the review task's labellers are noisy: a model that
imitates them is wrong where a verifier can tell, and RL on the true `answer`
column has something to correct. Prompts always carry the true answer.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from lit_rlhf.data.records import PromptRecord, SFTRecord
from lit_rlhf.errors import ConfigError

SPLITS: tuple[str, ...] = ("train", "validation")
MAX_OPERAND = 99
VALIDATION_PERCENT = 10  # of all problems, chosen by the hash of their text
# The operator patterns, grouped by how many numbers a problem has.
TWO_NUMBER_KINDS: tuple[str, ...] = ("a+b", "a-b")
THREE_NUMBER_KINDS: tuple[str, ...] = ("a+b+c", "a+b-c", "a-b+c", "a-b-c")
KINDS: tuple[str, ...] = TWO_NUMBER_KINDS + THREE_NUMBER_KINDS
_MAX_DRAWS = 1000  # per problem: far more than needed (rarest: a-b-c >= 0 in a validation problem, ~1 in 60)
_INTEGER = re.compile(r"-?[0-9]+")
_MAX_REPEATS = 10_000  # distinct problems: consecutive repeats that mean the split has no more


@dataclass(frozen=True)
class Problem:
    """`operands[0] operators[0] operands[1] ...`, evaluated left to right."""

    operands: tuple[int, ...]
    operators: tuple[str, ...]

    @property
    def prompt(self) -> str:
        """The problem as the model reads it, ending in "=" (e.g. "37+5-12=")."""
        parts = [str(self.operands[0])]
        for operator, operand in zip(self.operators, self.operands[1:]):
            parts += [operator, str(operand)]
        return "".join(parts) + "="

    @property
    def value(self) -> int:
        total = self.operands[0]
        for operator, operand in zip(self.operators, self.operands[1:]):
            total = total + operand if operator == "+" else total - operand
        return total

    @property
    def answer(self) -> str:
        """The answer as the response and the `answer` column carry it: digits only (e.g. "30")."""
        return str(self.value)

    @property
    def kind(self) -> str:
        """The operator pattern, one of `KINDS` (e.g. "a+b-c")."""
        return kind_of(self.prompt)


def careless_answer(problem: Problem, rng: random.Random, slip_rate: float) -> str:
    """The answer of a labeller who forgets the carry (or borrow) of the last operation's ones column.

    With probability `slip_rate`, when the last operation carries (a sum) or borrows (a difference) out of
    the ones column of a non-negative running total, the tens digit misses it: the answer is 10 too small
    (a sum) or 10 too large (a difference), and never negative. Otherwise the answer is right.
    """
    *_, operator = problem.operators
    before = Problem(problem.operands[:-1], problem.operators[:-1]).value
    last = problem.operands[-1]
    carries = before % 10 + last % 10 >= 10 if operator == "+" else before % 10 < last % 10
    if before < 0 or not carries or rng.random() >= slip_rate:
        return problem.answer
    return str(problem.value - 10 if operator == "+" else problem.value + 10)


def check_split(split: str) -> str:
    """Return `split` if it is a known split, else raise `ConfigError` naming the valid ones."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


def split_of(prompt: str) -> str:
    """The split a problem belongs to: a stable hash of its text, the same in every process and for every seed."""
    bucket = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") % 100
    return "validation" if bucket < VALIDATION_PERCENT else "train"


def kind_of(prompt: str) -> str:
    """The operator pattern of a prompt such as "37+5-12=" ("a+b-c")."""
    operators = [c for c in prompt if c in "+-"]
    return "a" + "".join(op + name for op, name in zip(operators, "bc"))


def _rng(seed: int, artefact: str, split: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so this is stable across processes.
    return random.Random(f"lit_rlhf.task.arith/{seed}/{artefact}/{split}")


def sample_problem(rng: random.Random, split: str, three_number_share: float) -> Problem:
    """A random problem of `split` with a non-negative answer.

    Three numbers with probability `three_number_share`; the operator pattern is uniform within two- or
    three-number problems and is drawn first, so redrawing the operands of a negative answer leaves the
    mix of patterns as asked.
    """
    kinds = THREE_NUMBER_KINDS if rng.random() < three_number_share else TWO_NUMBER_KINDS
    operators = tuple(rng.choice(kinds)[1::2])  # "a+b-c"[1::2] == "+-"
    for _ in range(_MAX_DRAWS):
        problem = Problem(tuple(rng.randint(0, MAX_OPERAND) for _ in range(len(operators) + 1)), operators)
        if problem.value >= 0 and split_of(problem.prompt) == split:
            return problem
    raise RuntimeError(f"no {split} problem in {_MAX_DRAWS} draws")  # unreachable: 1 draw in 60 or more succeeds


def _check_share(three_number_share: float) -> float:
    if not 0.0 <= three_number_share <= 1.0:
        raise ConfigError(f"three_number_share must lie in [0, 1], got {three_number_share}")
    return float(three_number_share)


def _check_rate(carry_slip_rate: float) -> float:
    if not 0.0 <= carry_slip_rate <= 1.0:
        raise ConfigError(f"carry_slip_rate must lie in [0, 1], got {carry_slip_rate}")
    return float(carry_slip_rate)


def _sizes(name: str, value: Sequence[int]) -> tuple[int, int]:
    """Validate a (train, validation) size pair, as given in code or by Hydra (a ListConfig)."""
    sizes = tuple(value)
    if len(sizes) != 2 or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in sizes):
        raise ConfigError(f"{name} must be [train_size, validation_size] of non-negative ints, got {value!r}")
    return sizes  # type: ignore[return-value]


@lru_cache(maxsize=16)
def draw_problems(
    seed: int, artefact: str, split: str, n: int, three_number_share: float, unique: bool
) -> tuple[Problem, ...]:
    """`n` problems of `split` from the stream of (seed, artefact, split); `unique`: no problem twice."""
    rng, drawn, seen, repeats = _rng(seed, artefact, check_split(split)), [], set(), 0
    while len(drawn) < n:
        problem = sample_problem(rng, split, three_number_share)
        if unique and problem.prompt in seen:
            repeats += 1
            if repeats > _MAX_REPEATS:
                raise ConfigError(
                    f"the {split} split has only about {len(seen)} distinct problems with three_number_share="
                    f"{three_number_share}, fewer than the {n} asked for; ask for fewer or raise three_number_share"
                )
            continue
        repeats = 0
        seen.add(problem.prompt)
        drawn.append(problem)
    return tuple(drawn)


def exact_answer_match(completion: str, answer: str) -> bool:
    """Whether a completion states `answer`: both are plain integers, equal once all whitespace is stripped.

    A normalised exact match for calibration and tests; the training rewards are the verifiers of
    `lit_rlhf.rewards`. Anything else is wrong: empty, "30+1", "thirty", "3_0" (which `int` would accept).
    """
    completion, answer = "".join(completion.split()), "".join(answer.split())
    if not (_INTEGER.fullmatch(completion) and _INTEGER.fullmatch(answer)):
        return False
    return int(completion) == int(answer)


class ArithmeticDemonstrations:
    """SFT records: the problem as prompt, a labeller's answer as response (the pipeline appends EOS).

    Drawn with replacement: the training split has fewer distinct two-number problems than a
    large SFT set. `three_number_share` below the prompts' share trains on a share of the task.
    The labeller forgets a carry or borrow with probability `carry_slip_rate` (`careless_answer`;
    0: every answer right), so a model that imitates it well still errs where a verifier can tell.
    """

    def __init__(self, seed: int, num_problems: Sequence[int], three_number_share: float, carry_slip_rate: float):
        self.seed = int(seed)
        self.num_problems = _sizes("num_problems", num_problems)
        self.three_number_share = _check_share(three_number_share)
        self.carry_slip_rate = _check_rate(carry_slip_rate)

    def splits(self) -> list[str]:
        return list(SPLITS)

    def load(self, split: str) -> list[SFTRecord]:
        n = self.num_problems[SPLITS.index(check_split(split))]
        drawn = draw_problems(self.seed, "demonstrations", split, n, self.three_number_share, unique=False)
        labeller = _rng(self.seed, "labeller", split)
        return [SFTRecord(p.prompt, careless_answer(p, labeller, self.carry_slip_rate)) for p in drawn]


class ArithmeticPrompts:
    """Distinct problems for RL and evaluation, each carrying its reference answer in `columns["answer"]`."""

    def __init__(self, seed: int, num_problems: Sequence[int], three_number_share: float):
        self.seed = int(seed)
        self.num_problems = _sizes("num_problems", num_problems)
        self.three_number_share = _check_share(three_number_share)

    def splits(self) -> list[str]:
        return list(SPLITS)

    def load(self, split: str) -> list[PromptRecord]:
        n = self.num_problems[SPLITS.index(check_split(split))]
        drawn = draw_problems(self.seed, "prompts", split, n, self.three_number_share, unique=True)
        return [PromptRecord(problem.prompt, columns={"answer": problem.answer}) for problem in drawn]
