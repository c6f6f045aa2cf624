"""The one check -> report -> prune path every datamodule that reads sample files runs.

Before a split is used, each distinct set of its files is checked once (``data.check_runner``,
cached), every problem of every split is reported together (``data.bad_files.report_bad_files``:
one ``BadFilesError``, or with ``skip_bad_files`` a log line), and the bad samples are left out
of every dataset that reads those files. The datamodules differ only in what a "checkable" is:
a VOC detection / segmentation dataset, or an image-folder index (``CheckedImageFolder``) whose
bad paths the classification split then excludes.
"""
from __future__ import annotations

import os
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Protocol

import lightning as L

from data.bad_files import SplitCheck, report_bad_files
from data.image_folder import ImageFolderIndex, check_image_folder


class Checkable(Protocol):
    """Anything whose sample files can be checked and whose bad samples can be left out."""

    @property
    def check_key(self) -> Hashable: ...  # equal keys: the same files, checked once

    def check(self) -> SplitCheck: ...

    def leave_out(self, keys: set[str]) -> None: ...


class CheckedImageFolder:
    """An image-folder index as a ``Checkable``: ``left_out`` holds the bad image paths, which
    the classification split builders exclude."""

    def __init__(self, index: ImageFolderIndex) -> None:
        self.index = index
        self.left_out: set[str] = set()

    @property
    def check_key(self) -> Hashable:
        return ("image_folder", id(self))

    def check(self) -> SplitCheck:
        check, _ = check_image_folder(self.index)
        return check

    def leave_out(self, keys: set[str]) -> None:
        # check_image_folder keys samples by their path relative to the folder's root.
        root = Path(self.index.root)
        by_key = {os.path.relpath(path, root): path for path, _ in self.index.samples}
        self.left_out |= {by_key[key] for key in keys}


class CheckedDataModule(L.LightningDataModule):
    """Base of every datamodule that reads sample files: ``check_and_prune`` is its only way of
    checking them. Subclasses set ``dataset_name`` (the name in the report) and, for boxes,
    ``clip_tolerance``."""

    dataset_name: str = "the dataset"
    clip_tolerance: float | None = None

    @property
    def skips_bad_files(self) -> bool:
        if hasattr(self, "skip_bad_files"):
            return bool(self.skip_bad_files)
        return bool(getattr(self, "hparams", {}).get("skip_bad_files", False))

    def check_and_prune(self, parts: Iterable[Checkable | None], dataset_name: str | None = None) -> None:
        """Check every distinct set of files of ``parts`` once, report all bad files together
        (or, with ``skip_bad_files``, log them), and leave the bad samples out of every part."""
        parts = [part for part in parts if part is not None]
        checks: dict[Hashable, SplitCheck] = {}
        for part in parts:
            if part.check_key not in checks:
                checks[part.check_key] = part.check()
        report_bad_files(list(checks.values()), dataset_name or self.dataset_name, self.skips_bad_files,
                         self.clip_tolerance)
        for part in parts:
            part.leave_out(checks[part.check_key].bad_keys)
