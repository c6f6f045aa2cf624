"""Where an entry point writes its results when the usual place cannot take them.

``eval.py`` writes ``PATH.eval.json`` next to the checkpoint and ``python -m analysis.report``
into ``<logs>/report``: both places may be read-only (a shared or archived logs folder). Such a
command then writes to a fallback folder and says so, instead of ending in a ``PermissionError``
after the work is done; a place the user named explicitly is never replaced, its problem is one
line (``OutputPathError``).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from errors import SuiteError

log = logging.getLogger("cogsuite")


class OutputPathError(SuiteError, OSError):
    """An output folder or file that cannot be written; the message says which and what to do."""


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (created if missing), or None when they can."""
    folder = Path(os.path.abspath(folder))
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no write permission in {existing}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create it ({error.strerror or error})"
    return None


def output_folder(preferred: Path, fallbacks: Sequence[Path], what: str, option: str) -> Path:
    """``preferred`` when files can be written there, else the first writable fallback (logged
    with the reason). ``option`` names the command-line setting that chooses the place."""
    problem = folder_problem(preferred)
    if problem is None:
        return preferred
    for fallback in fallbacks:
        if folder_problem(fallback) is None:
            log.warning("cannot write the %s to %s (%s); writing it to %s instead (choose with %s)",
                        what, preferred, problem, fallback, option)
            print(f"note: {preferred} is not writable ({problem}); writing the {what} to {fallback}")
            return fallback
    raise OutputPathError(f"cannot write the {what} to {preferred}: {problem}; name a writable folder "
                          f"with {option}")


def check_output_folder(folder: Path, what: str, option: str) -> Path:
    """A folder the user named: it must be (or become) a writable folder, else one line."""
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{option} {folder} is an existing file; the {what} is a folder of files: "
                              f"name a folder (new or existing) instead")
    problem = folder_problem(folder)
    if problem is not None:
        raise OutputPathError(f"cannot write the {what} to {folder}: {problem}; name a writable folder "
                              f"with {option}")
    return folder
