"""The suite's exceptions for bad input: the only ones train.py / eval.py shorten to one line.

Every error we raise on purpose because a user's input is wrong (a config value, a dataset
file, a checkpoint) derives from ``SuiteError``; the entry points print those as one clear
message and exit with status 2. Anything else is a bug and keeps its full traceback.

Each class also derives from the builtin exception that names the kind of problem
(ValueError, FileNotFoundError, ...), so library-style ``except ValueError`` still works.
"""
from __future__ import annotations


class SuiteError(Exception):
    """Bad input we can explain; the message says what was wrong and how to fix it."""


class ConfigError(SuiteError, ValueError):
    """A configuration value (or Python argument) that cannot work: unknown name, bad range."""


class ConfigTypeError(SuiteError, TypeError):
    """A configuration key or keyword argument that does not exist for that component."""


class CheckpointError(SuiteError, ValueError):
    """A checkpoint that is missing, unreadable, unsafe, or of another architecture/task."""


class DataError(SuiteError, ValueError):
    """A dataset file that exists but is wrong: corrupt image, malformed annotation, bad mask."""


class SuiteFileNotFoundError(SuiteError, FileNotFoundError):
    """A file or folder the user pointed at does not exist."""
