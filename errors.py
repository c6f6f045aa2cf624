"""The suite's exceptions for bad input: the only ones train.py / eval.py shorten to one line.

Every error we raise on purpose because a user's input is wrong (a config value, a dataset
file, a checkpoint) derives from ``SuiteError``; the entry points print those as one clear
message and exit with status 2. Anything else is a bug and keeps its full traceback.

Each class also derives from the builtin exception that names the kind of problem
(ValueError, FileNotFoundError, ...), so library-style ``except ValueError`` still works.

``exit_on_user_error`` is that shortening, for every command-line entry point (train, eval,
per-class analysis, export, report, benchmarks); it lives here so light tools need not import
the training stack.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


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


def user_error(exc: BaseException) -> SuiteError | None:
    """The bad-input error behind ``exc`` (unwrapping Hydra's InstantiationException), or None.

    Only the suite's own ``SuiteError``s count: anything else may be a bug and keeps its
    traceback.
    """
    from hydra.errors import InstantiationException

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SuiteError):
            return seen
        if not isinstance(seen, InstantiationException):
            return None
        seen = seen.__cause__
    return None


def exit_on_user_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; bad input (a ``SuiteError``: missing dataset, unknown backbone, wrong
    checkpoint; a ``???`` config value left unset; an override Hydra cannot compose) is printed
    as one clear message and exits with status 2. Every other exception propagates with its
    traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from hydra.errors import ConfigCompositionException
        from omegaconf.errors import MissingMandatoryValue

        try:
            return fn(*args, **kwargs)
        except MissingMandatoryValue as exc:
            key = getattr(exc, "full_key", "") or "a required value"
            exit_with_error(f"{key} is required and was not given: set it on the command line, e.g. {key}=...")
        except ConfigCompositionException as exc:  # Hydra's own message names the bad override
            exit_with_error(str(exc))
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
            shown = user_error(exc)
            if shown is None:
                raise
            exit_with_error(user_message(shown))

    return wrapper


_WORKER_PREFIX = "Caught "


def user_message(error: SuiteError) -> str:
    """The message of a bad-input error; for one re-raised from a DataLoader worker process
    (torch rebuilds it from "Caught X in DataLoader worker process N. Original Traceback ...")
    the original message, without the worker's traceback."""
    text = str(error)
    if not text.startswith(_WORKER_PREFIX) or "\nOriginal Traceback" not in text:
        return text
    kind = type(error)
    marker = f"\n{kind.__module__}.{kind.__qualname__}: "
    if marker not in text:
        return text
    return text.rsplit(marker, 1)[1].rstrip("\n")


def exit_with_error(message: str) -> None:
    """Print ``message`` as the one-line error of a command and exit with status 2."""
    print(f"\nerror: {message}", file=sys.stderr)
    sys.exit(2)
