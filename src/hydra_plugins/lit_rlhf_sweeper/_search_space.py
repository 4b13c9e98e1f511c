"""Search spaces: Hydra's sweep syntax, from `hydra.sweeper.params` and the command line, as Optuna distributions.

    choice(a, b, c)                 -> categorical (numbers, strings, booleans)
    range(start, stop[, step])      -> integers start, start + step, ... below stop (floats if a bound is one)
    shuffle(range(...))             -> categorical over the range's values
    interval(low, high)             -> uniform float; tag(log, interval(...)) log-uniform;
                                       tag(int, interval(...)) integers, combinable with log
    glob(...) on a config group     -> categorical over the matching options
    anything else (key=value, +key=value, ~key) -> the same override for every trial

A later override of a key replaces an earlier one, so `module.clip_eps=0.2` on the command line fixes a
parameter the search config would have searched. (The module starts with `_`: Hydra's plugin scan skips
it, so runs that do not search never import Optuna.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from lit_rlhf.errors import ConfigError

PRIMITIVE = (str, int, float, bool)


@dataclass(frozen=True)
class Param:
    """One searched key: its Optuna name, the key as an override writes it (with any +/++), where it ranges."""

    name: str
    key: str
    distribution: BaseDistribution
    grid: tuple | None  # the values a grid search visits; None for a continuous interval


@dataclass
class SearchSpace:
    params: list[Param] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)  # overrides every trial gets, as written

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {param.name: param.distribution for param in self.params}

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The command-line overrides of the trial with these parameter values."""
        return [f"{param.key}={format_value(values[param.name])}" for param in self.params] + self.fixed


def _categorical(override: Override, values: list) -> CategoricalDistribution:
    bad = [value for value in values if not isinstance(value, PRIMITIVE)]
    if bad:
        raise ConfigError(f"{override.input_line}: choices must be numbers, strings or booleans, got {bad[0]!r}")
    return CategoricalDistribution(values)


def _range(override: Override, sweep: RangeSweep) -> tuple[BaseDistribution, tuple]:
    values = list(override.sweep_iterator(transformer=Transformer.identity))
    if not values:
        raise ConfigError(f"{override.input_line}: the range is empty")
    if sweep.shuffle:
        return _categorical(override, values), tuple(values)
    numbers = cast(list[int | float], values)  # a range sweep yields numbers only
    low, high, step = min(numbers), max(numbers), abs(sweep.step)
    if isinstance(step, int) and all(isinstance(value, int) for value in numbers):
        return IntDistribution(int(low), int(high), step=step), tuple(values)
    high = round(low + (len(values) - 1) * step, 12)  # Hydra adds the step repeatedly; undo its rounding
    return FloatDistribution(low, high, step=step), tuple(values)


def _interval(override: Override, sweep: IntervalSweep) -> BaseDistribution:
    assert sweep.start is not None and sweep.end is not None, "Hydra's grammar gives an interval both bounds"
    log, integer = "log" in sweep.tags, "int" in sweep.tags
    unknown = sorted(set(sweep.tags) - {"log", "int"})
    if unknown:
        raise ConfigError(f"{override.input_line}: unknown tag {unknown[0]}; an interval takes: log, int")
    try:
        if integer:
            return IntDistribution(int(sweep.start), int(sweep.end), log=log)
        return FloatDistribution(sweep.start, sweep.end, log=log)
    except ValueError as error:
        raise ConfigError(f"{override.input_line}: {error}") from None


def _param(override: Override) -> Param:
    name = override.key_or_group + (f"@{override.package}" if override.package else "")
    value = override.value()
    if isinstance(value, IntervalSweep):
        return Param(name, override.get_key_element(), _interval(override, value), None)
    if isinstance(value, RangeSweep):
        return Param(name, override.get_key_element(), *_range(override, value))
    if isinstance(value, Glob):
        values = list(override.sweep_string_iterator())
    else:
        values = list(override.sweep_iterator(transformer=Transformer.identity))
    return Param(name, override.get_key_element(), _categorical(override, values), tuple(values))


def parse_search_space(params: dict[str, Any] | None, arguments: list[str], parser: OverridesParser) -> SearchSpace:
    """The search space of `hydra.sweeper.params` (key -> sweep expression) and the command-line overrides."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    by_key: dict[str, Override] = {}
    for override in parser.parse_overrides(lines):
        by_key.pop(override.key_or_group, None)  # a later override of a key replaces the earlier one
        by_key[override.key_or_group] = override
    space = SearchSpace()
    for override in by_key.values():
        if override.is_sweep_override():
            space.params.append(_param(override))
        else:
            assert override.input_line is not None, "the parser keeps each override's text"
            space.fixed.append(override.input_line)
    return space


_PLAIN = re.compile(r"[A-Za-z_/][\w\-./:]*")


def format_value(value: Any) -> str:
    """`value` as an override's value that Hydra parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in {"true", "false", "null", "inf", "nan"}:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
