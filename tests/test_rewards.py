"""The reward room on hand-computed values: the weighted mix, unscored rows, normalisation, a user's
functions (their errors, async ones), the verifiers and the length penalty."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from lit_rlhf.errors import ConfigError, UserError
from lit_rlhf.rewards import (
    Completions,
    ExactMatch,
    FormatReward,
    FunctionReward,
    LengthPenalty,
    MathVerifier,
    Reward,
    import_function,
    overlong_penalty,
)


def texts(*completions: str, **columns) -> Completions:
    return Completions(["q"] * len(completions), list(completions), {k: list(v) for k, v in columns.items()})


# ----------------------------------------------------------------------------- user functions (imported by path)


def length_of(prompts, completions, **columns):
    return [float(len(c)) for c in completions]


def answer_or_none(prompts, completions, answer, **columns):
    """1 if the completion is the answer, None where the row has no answer."""
    return [None if a is None else float(c == a) for c, a in zip(completions, answer)]


def too_few(prompts, completions, **columns):
    return [1.0]


def not_numbers(prompts, completions, **columns):
    return ["good"] * len(completions)


SEEN = {}


def record_columns(prompts, completions, **columns):
    SEEN.update(prompts=prompts, completions=completions, columns=columns)
    return [0.0] * len(completions)


def component(fn, weight: float) -> FunctionReward:
    return FunctionReward(fn, weight=weight)


# ----------------------------------------------------------------------------- the mix


def test_weighted_mix_equals_the_hand_computed_sum():
    # total = 1.0 * len + 0.5 * (c == answer) + (-2.0) * 1[c matches 'a+']
    reward = Reward(
        {
            "length": component(length_of, 1.0),
            "right": component(answer_or_none, 0.5),
            "format": FormatReward("a+", weight=-2.0),
        },
        normalize="none",
    )
    scores = reward(texts("aa", "b", "ccc", answer=["aa", "x", "ccc"]))
    # row 0: 2 + 0.5*1 - 2*1 = 0.5; row 1: 1 + 0 - 0 = 1; row 2: 3 + 0.5 - 0 = 3.5
    torch.testing.assert_close(scores.total, torch.tensor([0.5, 1.0, 3.5]))
    assert scores.scored.all()
    torch.testing.assert_close(scores.components["length"].values, torch.tensor([2.0, 1.0, 3.0]))


def test_a_none_leaves_the_row_out_of_that_component_and_of_the_mix():
    reward = Reward({"length": component(length_of, 1.0), "right": component(answer_or_none, 10.0)}, "none")
    scores = reward(texts("aa", "b", answer=["aa", None]))
    # Row 1 has no answer: its total is the length alone, not length + 10 * 0.
    torch.testing.assert_close(scores.total, torch.tensor([12.0, 1.0]))
    assert scores.components["right"].scored.tolist() == [True, False]
    metrics = scores.metrics()
    assert metrics["reward/right"] == 1.0  # the mean over the one scored row, not (1 + 0) / 2
    assert metrics["reward_unscored"] == 0.0


def test_a_row_no_component_scores_has_no_total():
    reward = Reward({"right": component(answer_or_none, 1.0)}, "none")
    scores = reward(texts("aa", "b", answer=["aa", None]))
    assert scores.scored.tolist() == [True, False]
    assert math.isnan(float(scores.total_or_nan()[1]))
    assert scores.metrics()["reward_unscored"] == 0.5


def test_batch_normalisation_standardises_each_component_over_its_scored_rows():
    reward = Reward({"length": component(length_of, 1.0), "right": component(answer_or_none, 1.0)}, "batch")
    scores = reward(texts("a", "bbb", "ccccc", answer=["a", "x", None]))
    # length 1, 3, 5: mean 3, sample std 2 -> -1, 0, 1. right (rows 0, 1): 1, 0 -> mean 0.5, std 0.7071.
    right = (torch.tensor([1.0, 0.0]) - 0.5) / (2**0.5 / 2)
    expected = torch.tensor([-1.0 + right[0], 0.0 + right[1], 1.0])
    torch.testing.assert_close(scores.total, expected, rtol=1e-5, atol=1e-5)


def test_running_normalisation_learns_only_from_training_batches_and_round_trips():
    reward = Reward({"length": component(length_of, 1.0)}, "running")
    reward(texts("a", "bbb"), update=True)  # lengths 1, 3: mean 2, std sqrt(2)
    evaluated = reward(texts("aaaa"), update=False)  # not learned from
    torch.testing.assert_close(evaluated.total, torch.tensor([(4 - 2) / 2**0.5]), rtol=1e-5, atol=1e-5)
    restored = Reward({"length": component(length_of, 1.0)}, "running")
    restored.load_stats_state(reward.stats_state())
    torch.testing.assert_close(restored(texts("aaaa")).total, evaluated.total)


def test_bad_choices_are_refused():
    with pytest.raises(ConfigError, match=r"unknown reward\.normalize 'zscore'; choose one of: none, batch, running"):
        Reward({"length": component(length_of, 1.0)}, "zscore")
    with pytest.raises(ConfigError, match="at least one component"):
        Reward({}, "none")


# ----------------------------------------------------------------------------- functions


def test_columns_reach_a_function_unchanged():
    nested = {"a": [1, {"b": None}], "c": 2.5}
    reward = Reward({"seen": component(record_columns, 1.0)}, "none")
    reward(texts("x", "y", answer=["1/2", 7], meta=[nested, None]))
    assert SEEN["columns"] == {"answer": ["1/2", 7], "meta": [nested, None]}
    assert SEEN["completions"] == ["x", "y"]


@pytest.mark.parametrize(
    "path, message",
    [
        ("no_such_module.fn", "reward fn=no_such_module.fn: cannot import no_such_module (ModuleNotFoundError"),
        ("test_rewards.no_such_fn", "module test_rewards has no attribute 'no_such_fn'"),
        ("not_a_path", "must be a dotted path such as my_pkg.my_module.my_fn"),
    ],
)
def test_a_function_path_that_does_not_import_is_one_clear_error(path, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        import_function(path, "reward fn")


def test_a_function_that_returns_the_wrong_length_or_a_non_number_is_one_clear_error():
    with pytest.raises(UserError, match="reward 'few' returned 1 scores for 2 completions"):
        Reward({"few": component(too_few, 1.0)}, "none")(texts("a", "b"))
    with pytest.raises(UserError, match="reward 'words' returned 'good' for completion 0; scores are numbers or None"):
        Reward({"words": component(not_numbers, 1.0)}, "none")(texts("a", "b"))


def test_a_nan_from_a_function_is_a_score_not_a_missing_one():
    """A None means "no score"; NaN is a fault the module stops on (or skips), never silently dropped."""
    scores = Reward({"nan": component(lambda p, c, **k: [math.nan, 1.0], 1.0)}, "none")(texts("a", "b"))
    assert scores.scored.tolist() == [True, True] and math.isnan(float(scores.total[0]))


def test_async_functions_of_a_batch_are_awaited_concurrently():
    """Each function waits for the other's event: run one after the other, they would time out."""
    events = {}

    async def first(prompts, completions, **columns):
        events["first"].set()
        await asyncio.wait_for(events["second"].wait(), timeout=5)
        return [1.0] * len(completions)

    async def second(prompts, completions, **columns):
        events["second"].set()
        await asyncio.wait_for(events["first"].wait(), timeout=5)
        return [2.0] * len(completions)

    class Events(dict):
        def __missing__(self, key):
            self[key] = asyncio.Event()
            return self[key]

    events = Events()
    reward = Reward({"first": component(first, 1.0), "second": component(second, 1.0)}, "none")
    assert all(c.is_async for c in reward.components.values())
    torch.testing.assert_close(reward(texts("a", "b")).total, torch.tensor([3.0, 3.0]))


def test_an_async_function_runs_inside_a_running_event_loop():
    """Notebooks run an event loop already: the reward still awaits its functions."""

    async def judge(prompts, completions, **columns):
        await asyncio.sleep(0)
        return [1.0] * len(completions)

    async def inside():
        return Reward({"judge": component(judge, 2.0)}, "none")(texts("a")).total

    torch.testing.assert_close(asyncio.run(inside()), torch.tensor([2.0]))


# ----------------------------------------------------------------------------- verifiers


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("30", "30", 1.0),
        (" 30", "30", 1.0),
        ("0.5", "1/2", 1.0),  # math-verify: equal values in different forms
        ("\\frac{1}{2}", "0.5", 1.0),
        ("the answer is \\boxed{12}", "12", 1.0),
        ("-7", "-7", 1.0),
        ("31", "30", 0.0),
        ("", "30", 0.0),  # no answer at all: wrong
        ("no number here", "30", 0.0),
    ],
)
def test_math_verifier_judges_equivalent_answers(completion, answer, expected):
    correct, scored = MathVerifier(column="answer", weight=1.0)(texts(completion, answer=[answer]))
    assert scored.tolist() == [True] and correct.tolist() == [expected]


def test_math_verifier_leaves_rows_without_a_usable_answer_unscored():
    _, scored = MathVerifier(column="answer", weight=1.0)(texts("3", "3", answer=[None, "not math"]))
    assert scored.tolist() == [False, False]


@pytest.mark.parametrize(
    "pattern, case_sensitive, completion, answer, expected",
    [
        (None, False, "  Paris. ", "paris", 1.0),
        (None, True, "Paris", "paris", 0.0),
        (None, False, "Paris is it", "paris", 0.0),
        (r"####\s*(.+)", False, "so 3 + 4\n#### 7", "7", 1.0),
        (r"####\s*(.+)", False, "#### 6\n#### 7", "7", 1.0),  # the last match counts
        (r"####\s*(.+)", False, "7", "7", 0.0),  # the pattern finds no answer
    ],
)
def test_exact_match_normalises_and_extracts(pattern, case_sensitive, completion, answer, expected):
    verifier = ExactMatch(column="answer", pattern=pattern, case_sensitive=case_sensitive, weight=1.0)
    correct, scored = verifier(texts(completion, answer=[answer]))
    assert scored.tolist() == [True] and correct.tolist() == [expected]


def test_a_missing_column_a_verifier_needs_is_one_clear_error():
    reward = Reward({"math": MathVerifier(column="answer", weight=1.0)}, "none")
    with pytest.raises(ConfigError, match=r"reward 'math' needs the data column 'answer'.*\(columns: id, solution\)"):
        reward.check_columns({"id", "solution"}, "the prompt data")
    with pytest.raises(ConfigError, match="reward 'math' checks completions against the data column 'answer'"):
        reward(texts("3", solution=["3"]))


def test_format_reward_matches_the_whole_completion():
    reward = FormatReward(r"<think>.*</think>\s*<answer>.*</answer>", weight=1.0)
    values, scored = reward(
        texts("<think>a\nb</think> <answer>4</answer>", "<answer>4</answer>", "x<think></think><answer></answer>")
    )
    assert values.tolist() == [1.0, 0.0, 0.0] and scored.all()


def test_overlong_penalty_follows_dapo():
    # L_max = 10, L_cache = 4: free up to 6, then (6 - L) / 4, -1 past 10.
    lengths = torch.tensor([0, 6, 7, 8, 10, 11, 50])
    expected = torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0, -1.0])
    torch.testing.assert_close(overlong_penalty(lengths, max_tokens=10, buffer_tokens=4), expected)
    penalty = LengthPenalty(max_tokens=10, buffer_tokens=4, weight=1.0)
    samples = Completions(["q"] * 2, ["a", "b"], lengths=torch.tensor([7, 11]))
    values, scored = penalty(samples)
    torch.testing.assert_close(values, torch.tensor([-0.25, -1.0]))
    assert scored.all()
    with pytest.raises(ConfigError, match="buffer_tokens < max_tokens"):
        LengthPenalty(max_tokens=4, buffer_tokens=4, weight=1.0)
