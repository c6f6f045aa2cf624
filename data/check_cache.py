"""Cache of the dataset checks, so only the first run on a dataset pays for reading every file.

One small JSON per checked split holds, for every sample, the size and modification time of
each file it reads (its signature) and the outcome of its check. A later run re-checks only
the samples whose signature changed (a file fixed, replaced, added or deleted); everything
else comes from the cache. The JSON lies next to the dataset when that folder is writable
(``<dataset>/.cogsuite-check-<split>.json``, it then moves and is shared with the dataset),
otherwise under the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``, then
``cogsuite/data-checks``). A cache written for other check parameters (class names, number of
classes, check version) is ignored.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("data")

CACHE_PREFIX = ".cogsuite-check-"
FORMAT_VERSION = 1

Signature = list  # [[size, mtime_ns] or None per file]


def file_signature(paths: Sequence[Path]) -> Signature:
    """Size and modification time of each file (None for a missing one)."""
    signature: Signature = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            signature.append(None)
        else:
            signature.append([stat.st_size, stat.st_mtime_ns])
    return signature


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cogsuite" / "data-checks"


def _candidates(dataset_dir: Path, name: str) -> list[Path]:
    # The user-cache copy is named after the dataset folder, so two datasets never share one.
    digest = hashlib.sha1(str(Path(dataset_dir).absolute()).encode("utf-8")).hexdigest()[:16]
    return [Path(dataset_dir) / f"{CACHE_PREFIX}{name}", user_cache_dir() / f"{digest}-{name}"]


def writable_cache_path(dataset_dir: Path, name: str) -> Path | None:
    """The first place ``name`` can be written: next to the dataset, else the user cache."""
    for candidate in _candidates(dataset_dir, name):
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=candidate.parent, prefix=CACHE_PREFIX):
                pass
        except OSError:
            continue
        return candidate
    return None


class CheckCache:
    """Per-sample check results of one split, keyed by the sample and its files' signature."""

    def __init__(self, dataset_dir: Path, split: str, params: Mapping[str, Any]) -> None:
        self.paths = _candidates(Path(dataset_dir), f"{split}.json")
        self.params = {"format_version": FORMAT_VERSION, **params}

    def load(self) -> list[dict[str, list]]:
        """The ``{sample key: [signature, result]}`` maps of every readable cache with these
        params (next to the dataset first); a sample's entry counts only if its signature matches."""
        found = []
        for path in self.paths:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("params") == self.params and isinstance(data.get("entries"), dict):
                found.append(data["entries"])
        return found

    def save(self, entries: Mapping[str, list]) -> Path | None:
        """Write atomically (temp file, then rename) to the first writable place; None if none is."""
        text = json.dumps({"params": self.params, "entries": entries}, separators=(",", ":"))
        for path in self.paths:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{CACHE_PREFIX}tmp-")
                try:
                    with os.fdopen(handle, "w") as file:
                        file.write(text)
                    os.chmod(temporary, 0o644)  # mkstemp makes it private; others may share the dataset
                    os.replace(temporary, path)
                except BaseException:
                    Path(temporary).unlink(missing_ok=True)
                    raise
            except OSError as error:
                log.debug("cannot write the data-check cache %s: %s", path, error)
                continue
            return path
        log.warning("The dataset check results could not be cached (tried %s); the next run checks "
                    "the files again.", ", ".join(str(p) for p in self.paths))
        return None
