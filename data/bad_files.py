"""Bad dataset files found while a dataset is indexed, and how they are reported or skipped.

The datamodules check every sample of the splits they will read (images, annotations, masks)
before training starts. Every problem is collected and reported in one :class:`BadFilesError`
that names each file, what is wrong and how to fix it; with ``skip_bad_files=True`` the
samples are left out instead and counted in the log. Doing this up front is what keeps a
corrupt file from surfacing as a DataLoader worker traceback in the middle of an epoch.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data.check_cache import writable_cache_path
from data.errors import BadFilesError
from data.synthetic import MARKER_NAME as SYNTHETIC_MARKER
from errors import DataError

log = logging.getLogger("data")

# The error lists this many bad files in full; the rest are written to a file it names, so a
# dataset whose every mask is wrong does not print ten thousand lines.
MAX_LISTED = 50
# The skip message shows the first few paths.
MAX_SKIPPED_SHOWN = 5


@dataclass(frozen=True)
class BadFile:
    """One unusable file: its path, what is wrong with it, and how to fix it."""

    path: str
    problem: str
    fix: str

    def line(self) -> str:
        return f"{self.path}: {self.problem}. Fix: {self.fix}."


@dataclass
class SampleCheck:
    """The outcome of checking one sample (an image and its annotation or mask).

    ``clipped_boxes`` counts boxes that pass the image edge by a few pixels; they are clipped
    when loaded and only counted in the log.
    """

    bad: list[BadFile] = field(default_factory=list)
    clipped_boxes: int = 0

    def to_json(self, relative_to: Path) -> dict:
        return {"bad": [[_relative(b.path, relative_to), b.problem, b.fix] for b in self.bad],
                "clipped_boxes": self.clipped_boxes}

    @classmethod
    def from_json(cls, data: Mapping, relative_to: Path) -> "SampleCheck":
        bad = [BadFile(str(relative_to / path), problem, fix) for path, problem, fix in data["bad"]]
        return cls(bad, int(data["clipped_boxes"]))


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


@dataclass
class SplitCheck:
    """The checks of every sample of one split: the bad samples by key and the clip count."""

    name: str
    directory: Path
    bad: dict[str, list[BadFile]]
    clipped_boxes: int = 0
    clipped_samples: int = 0
    num_samples: int = 0

    @property
    def bad_keys(self) -> set[str]:
        return set(self.bad)


def report_bad_files(checks: Sequence[SplitCheck], dataset: str, skip: bool,
                     clip_tolerance: float | None = None) -> None:
    """Raise one :class:`BadFilesError` listing every bad file of ``checks``, or (``skip``) log
    how many samples are left out; log how many boxes are clipped at the image edge."""
    clipped = sum(c.clipped_boxes for c in checks)
    if clipped:
        samples = sum(c.clipped_samples for c in checks)
        within = f" by at most {clip_tolerance:g} px" if clip_tolerance is not None else ""
        log.info("%s: %d box(es) in %d annotation(s) pass the image edge%s and are clipped to the image.",
                 dataset, clipped, samples, within)
    bad = _unique(b for c in checks for files in c.bad.values() for b in files)
    if not bad:
        return
    directories = list(dict.fromkeys(c.directory for c in checks if c.bad))
    where = ", ".join(f"'{d}'" for d in directories)
    if skip:
        per_split = ", ".join(f"{len(c.bad)} of {c.num_samples} in {c.name}" for c in checks if c.bad)
        shown = ", ".join(b.path for b in bad[:MAX_SKIPPED_SHOWN])
        more = f" and {len(bad) - MAX_SKIPPED_SHOWN} more" if len(bad) > MAX_SKIPPED_SHOWN else ""
        log.warning("data.skip_bad_files=true: leaving out the samples of %d bad file(s) of %s at %s "
                    "(%s): %s%s", len(bad), dataset, where, per_split, shown, more)
        for check in checks:
            if check.bad and len(check.bad) == check.num_samples:
                example = next(iter(check.bad.values()))[0]
                raise DataError(f"Every sample of {check.name} of {dataset} at '{check.directory}' has a bad "
                                f"file (e.g. {example.line()}); nothing is left to read. Fix the files or "
                                "point data.root at the right dataset.")
        return
    raise BadFilesError(_message(bad, dataset, directories), tuple(bad))


def _unique(files) -> list[BadFile]:
    # Validation and test may read the same split: report each file once.
    return list(dict.fromkeys(files))


def _message(bad: list[BadFile], dataset: str, directories: list[Path]) -> str:
    where = ", ".join(f"'{d}'" for d in directories)
    lines = [f"{len(bad)} bad file(s) in {dataset} at {where}, found while indexing the dataset "
             "(before training):"]
    lines += [f"  {b.line()}" for b in bad[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        listing = _write_listing(bad, directories[0])
        shown = f"all {len(bad)} are listed in '{listing}'" if listing else "not all are shown"
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more ({shown}).")
    for directory in directories:
        if (directory / SYNTHETIC_MARKER).is_file():
            lines.append(f"'{directory}' is the generated synthetic dataset: delete it and it is written "
                         "again on the next run.")
    lines.append("Fix or remove these files, or set data.skip_bad_files=true to leave their samples "
                 "out (they are then counted in the log).")
    return "\n".join(lines)


def _write_listing(bad: list[BadFile], dataset_dir: Path) -> Path | None:
    path = writable_cache_path(dataset_dir, "bad-files.txt")
    if path is None:
        return None
    try:
        path.write_text("".join(b.line() + "\n" for b in bad))
    except OSError:
        return None
    return path
