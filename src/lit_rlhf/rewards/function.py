"""A user's reward function, called the way the field expects (TRL's `reward_funcs`).

    fn(prompts, completions, **columns) -> list[float | None]

`columns` holds every other column of the prompts' rows as a list per column. A `None` means "no score
for this row" (say, a math checker on a row that has no answer): the row is left out of this component's
mean and of the mix for that row, never counted as 0. `async def` functions are awaited together with
the mix's other async components, so remote judges of one batch run concurrently.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import numbers
from collections.abc import Callable
from typing import Any

import torch

from lit_rlhf.errors import ConfigError, UserError
from lit_rlhf.rewards.completions import Completions, Scores


def import_function(path: str, key: str) -> Callable:
    """The function at dotted `path` (`my_pkg.my_module.my_fn`); ConfigError naming `key` if it does not import."""
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(f"{key} must be a dotted path such as my_pkg.my_module.my_fn, got {path!r}")
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or whatever the module raises while importing
        raise ConfigError(f"{key}={path}: cannot import {module_name} ({type(error).__name__}: {error})") from None
    function = getattr(module, attribute, None)
    if function is None:
        raise ConfigError(f"{key}={path}: module {module_name} has no attribute {attribute!r}")
    if isinstance(function, type):  # a class: its instances are the reward (e.g. a judge holding a client)
        function = function()
    if not callable(function):
        raise ConfigError(f"{key}={path} is not callable")
    return function


def function_scores(values: Any, size: int, name: str) -> Scores:
    """A function's return value -> Scores (None: unscored). UserError if it is not B numbers or Nones.

    NaN and inf are kept as scores: they are faults, which the module stops on (or skips) as non-finite.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().flatten().tolist()
    try:
        values = list(values)
    except TypeError:
        raise UserError(f"reward '{name}' returned {type(values).__name__}, not a list of {size} numbers") from None
    if len(values) != size:
        raise UserError(f"reward '{name}' returned {len(values)} scores for {size} completions")
    for index, value in enumerate(values):
        if value is not None and not isinstance(value, numbers.Real):  # bools count: a check that passed is 1.0
            raise UserError(f"reward '{name}' returned {value!r} for completion {index}; scores are numbers or None")
    scored = torch.tensor([value is not None for value in values], dtype=torch.bool)
    numbers_ = torch.tensor([0.0 if value is None else float(value) for value in values], dtype=torch.float32)
    return Scores(numbers_, scored)


class FunctionReward:
    """A reward component from a function `fn(prompts, completions, **columns) -> list[float | None]`.

    Args:
        fn: the function, or its dotted import path (`my_pkg.my_module.my_fn`; a class there is instantiated).
        weight: its weight in the mix.
    """

    verifier = False

    def __init__(self, fn: Callable | str, weight: float):
        self.fn = import_function(fn, "reward fn") if isinstance(fn, str) else fn
        self.weight = weight
        self.name = getattr(self.fn, "__name__", type(self.fn).__name__)
        self.is_async = inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(
            type(self.fn).__call__ if callable(self.fn) else None
        )

    required_columns: tuple[str, ...] = ()

    def __call__(self, completions: Completions) -> Scores:
        """The function's scores; rows it returned None for are unscored."""
        if self.is_async:
            return run_concurrently([self.score_async(completions)])[0]
        values = self.fn(list(completions.prompts), list(completions.completions), **completions.columns)
        return function_scores(values, len(completions), self.name)

    async def score_async(self, completions: Completions) -> Scores:
        values = await self.fn(list(completions.prompts), list(completions.completions), **completions.columns)
        return function_scores(values, len(completions), self.name)


def run_concurrently(coroutines: list) -> list:
    """Await `coroutines` together and return their results, also from inside a running event loop (notebooks)."""

    async def gather():
        return await asyncio.gather(*coroutines)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(gather())
    # A loop already runs in this thread (Jupyter): run ours in a thread of its own.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, gather()).result()
