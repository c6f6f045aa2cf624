"""Errors raised by the data readers."""
from __future__ import annotations

from pathlib import Path

from errors import ConfigError, DataError, SuiteError, SuiteFileNotFoundError


class DatasetNotFoundError(SuiteFileNotFoundError):
    """A dataset is not where the configuration says; the message explains the expected layout.

    A ``SuiteError`` (the entry points print it as one line) and a ``FileNotFoundError``.

    Build it with :meth:`describe` so every message names the path looked at, the expected
    tree and the synthetic fallback. The constructor takes the plain message (like any
    exception) so the error survives pickling across DataLoader workers.
    """

    @classmethod
    def describe(
        cls, looked_at: str | Path, dataset: str, expected_layout: str, problem: str = ""
    ) -> "DatasetNotFoundError":
        lines = [f"{dataset} dataset not found: looked at '{Path(looked_at)}'."]
        if problem:
            lines.append(problem)
        lines += [
            "Expected layout:",
            expected_layout.rstrip("\n"),
            "Point data.root at the folder that holds this layout, or train on the embedded "
            "synthetic dataset instead (generated on first use, no download): data=synthetic",
        ]
        return cls("\n".join(lines))


class ImageDecodeError(DataError, OSError):
    """An image file exists but cannot be decoded (corrupt, truncated or not an image)."""


class DataFolderInUseError(SuiteError, FileExistsError):
    """A folder the suite would write a dataset into holds something else."""


class DataFolderWriteError(SuiteError, OSError):
    """A dataset folder the suite must write (the synthetic set) is not writable."""


def check_num_classes(num_classes: int | None, class_names, counting: str) -> None:
    """A configured ``num_classes`` must agree with the class names a datamodule reads."""
    if num_classes is not None and num_classes != len(class_names):
        raise ConfigError(
            f"num_classes={num_classes} but {len(class_names)} class names were given "
            f"({counting}); make them agree"
        )


class BadFilesError(DataError):
    """Dataset files found unusable when the dataset was indexed, all reported in one message.

    ``bad_files`` holds the :class:`data.bad_files.BadFile` entries (path, problem, fix).
    """

    def __init__(self, message: str, bad_files: tuple = ()) -> None:
        super().__init__(message)
        self.bad_files = tuple(bad_files)

    def __reduce__(self):  # keep ``bad_files`` when pickled (e.g. across processes)
        return type(self), (str(self), self.bad_files)
