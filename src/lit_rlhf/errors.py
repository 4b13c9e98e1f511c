"""Errors that reach the user as one clear message instead of a stack trace.

`lit_rlhf.command` catches `UserError` and prints only its message, so every raise
must name the problem and, where there is one, the list of valid choices.
"""


class UserError(Exception):
    """A problem the user can fix: bad data, bad config, a missing path."""


class DataError(UserError):
    """Malformed or missing data. The message names the file and, if known, the line."""


class ConfigError(UserError):
    """An unknown or inconsistent configuration choice."""


class NonFiniteError(UserError):
    """A loss, reward, advantage, gradient or weight became NaN/inf during training."""


class OutputError(UserError):
    """A folder or file the run cannot write (read-only, full, in use) or must not touch (not ours)."""
