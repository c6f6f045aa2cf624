"""One check -> report -> prune path (issue 19, item 4): every datamodule that reads sample files
derives from data.checked_datamodule.CheckedDataModule and checks through check_and_prune."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from data.bad_files import BadFile, SplitCheck
from data.checked_datamodule import CheckedDataModule
from data.classification import ImageFolderDataModule
from data.errors import BadFilesError
from data.image_folder_splits import ImageFolderSplitsDataModule
from data.voc_detection import VOCDetectionDataModule
from data.voc_segmentation import VOCSegmentationDataModule


class _Part:
    def __init__(self, key, ids, bad=()):
        self.check_key, self.ids, self._bad, self.checked = key, list(ids), set(bad), 0

    def check(self) -> SplitCheck:
        self.checked += 1
        bad = {i: [BadFile(f"/data/{i}.jpg", "image is truncated", "replace it")] for i in self._bad}
        return SplitCheck(f"part {self.check_key}", Path("/data"), bad, num_samples=len(self.ids))

    def leave_out(self, keys: set[str]) -> None:
        self.ids = [i for i in self.ids if i not in keys]


class _Module(CheckedDataModule):
    dataset_name = "the test set"

    def __init__(self, skip: bool) -> None:
        super().__init__()
        self.skip_bad_files = skip


def test_equal_keys_are_checked_once_and_every_part_is_pruned():
    first, same_files, other = _Part("a", "123", bad="2"), _Part("a", "123", bad="2"), _Part("b", "45")
    _Module(skip=True).check_and_prune([first, None, same_files, other])
    assert (first.checked, same_files.checked, other.checked) == (1, 0, 1)
    assert first.ids == same_files.ids == ["1", "3"] and other.ids == ["4", "5"]


def test_bad_files_are_reported_together_without_skip():
    parts = [_Part("a", "12", bad="1"), _Part("b", "34", bad="4")]
    with pytest.raises(BadFilesError, match=r"(?s)the test set.*/data/1\.jpg.*/data/4\.jpg"):
        _Module(skip=False).check_and_prune(parts)


@pytest.mark.parametrize("datamodule", [ImageFolderDataModule, ImageFolderSplitsDataModule,
                                        VOCDetectionDataModule, VOCSegmentationDataModule])
def test_every_file_reading_datamodule_checks_through_the_base(datamodule):
    assert issubclass(datamodule, CheckedDataModule)
    source = inspect.getsource(inspect.getmodule(datamodule))
    assert "check_and_prune(" in source and "report_bad_files(" not in source


@pytest.mark.parametrize("datamodule", [ImageFolderDataModule, ImageFolderSplitsDataModule,
                                        VOCDetectionDataModule, VOCSegmentationDataModule])
def test_every_datamodule_is_served_by_the_one_split_base(datamodule):
    from data.cifar import CIFAR10DataModule
    from data.split_datamodule import SplitDataModule

    assert issubclass(datamodule, SplitDataModule) and issubclass(CIFAR10DataModule, SplitDataModule)
    # The loaders are the base's; a datamodule only says what differs (collate, eval batch, ...).
    for hook in ("train_dataloader", "val_dataloader", "test_dataloader", "_loader"):
        assert getattr(datamodule, hook) is getattr(SplitDataModule, hook)
