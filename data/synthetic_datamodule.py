"""`data=synthetic`: write the embedded dataset in the task's real on-disk format, then read it
with the same datamodule that reads the real dataset. The real loading code is what runs."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from errors import ConfigError

TASKS = ("classification", "detection", "segmentation")
# On-disk formats the classification set can be written in (read by the datamodule of that dataset).
CLASSIFICATION_FORMATS = ("imagefolder", "cifar10", "image_folder_splits")


def synthetic_datamodule(
    task: str,
    root: str | Path,
    batch_size: int,
    num_workers: int,
    image_size: int,
    num_classes: int,
    generator: Mapping[str, Any] | None = None,
    seed: int = 0,
    format: str | None = None,
    skip_bad_files: bool = False,
    **datamodule_kwargs: Any,
) -> L.LightningDataModule:
    """Generate (once) and load the synthetic dataset for ``task``.

    ``num_classes`` is what the model is built with (object classes for detection, classes
    including background for segmentation); it must agree with what the generator writes.
    A complete dataset is reused as it is on disk, so the datamodule's indexing checks it like
    a real one: a file deleted or damaged since it was written is reported (with the advice to
    delete the folder so it is written again), or skipped with ``skip_bad_files``.
    ``format`` (classification only): "imagefolder" (default; Flowers / Caltech style) or
    "cifar10" (CIFAR-10's python pickle batches, read by ``data.cifar.CIFAR10DataModule``) or
    "image_folder_splits" (the image folder read by ``data=image_folder``'s datamodule).
    """
    from data import synthetic

    generator = dict(generator or {})
    root = Path(root)
    common = {"batch_size": batch_size, "num_workers": num_workers, **datamodule_kwargs}
    if format is not None and (task != "classification" or format not in CLASSIFICATION_FORMATS):
        raise ConfigError(f"synthetic format {format!r} is not available for {task}; classification "
                         f"takes one of {CLASSIFICATION_FORMATS}, the other tasks null")
    if task == "classification" and format == "cifar10":
        from data.cifar import CIFAR10DataModule

        folder = root / "cifar10"
        generator.setdefault("num_classes", num_classes)
        synthetic.write_cifar10(folder, seed=seed, **generator)
        # Not the official files: their MD5 sums cannot match.
        # The pickle batches are checked as a whole (they load or not): no per-file skipping.
        return CIFAR10DataModule(root=str(folder), image_size=image_size, num_classes=num_classes,
                                 verify_checksums=False, **common)
    common["skip_bad_files"] = skip_bad_files
    if task == "classification" and format == "image_folder_splits":
        from data.image_folder_splits import ImageFolderSplitsDataModule

        folder = root / "classification"
        generator.setdefault("num_classes", num_classes)
        synthetic.write_image_folder(folder, seed=seed, **generator)
        _report_missing_images(folder, skip_bad_files)
        # data=image_folder's reader: separate val / test splits by fractions, eval deformation
        return ImageFolderSplitsDataModule(root=str(folder), image_size=image_size,
                                           num_classes=num_classes, **common)
    if task == "classification":
        from data.classification import ImageFolderDataModule

        folder = root / "classification"
        # The generator may write more classes than the model sees (top_fraction keeps a subset).
        generator.setdefault("num_classes", num_classes)
        synthetic.write_image_folder(folder, seed=seed, **generator)
        _report_missing_images(folder, skip_bad_files)
        return ImageFolderDataModule(root=str(folder), layout="imagefolder", image_size=image_size,
                                     num_classes=num_classes, **common)
    if task == "detection":
        from data.voc_detection import VOCDetectionDataModule

        folder = root / "detection"
        class_names = synthetic.write_voc_detection(folder, seed=seed, **generator)
        _check_classes(task, num_classes, len(class_names), "object classes")
        return VOCDetectionDataModule(root=str(folder), years=("2007",), image_size=image_size,
                                      class_names=list(class_names), **common)
    if task == "segmentation":
        from data.voc_segmentation import VOCSegmentationDataModule

        folder = root / "segmentation"
        class_names = list(synthetic.write_voc_segmentation(folder, seed=seed, **generator))
        if class_names[0] != "background":
            class_names = ["background", *class_names]
        _check_classes(task, num_classes, len(class_names), "classes including background")
        return VOCSegmentationDataModule(root=str(folder), crop_size=image_size,
                                         class_names=class_names, **common)
    raise ConfigError(f"unknown task {task!r} for the synthetic dataset; valid: {', '.join(TASKS)}")


def _report_missing_images(folder: Path, skip: bool) -> None:
    """An image folder is indexed from what is on disk, so a deleted image would just be absent:
    compare with what the generator wrote instead."""
    from data import synthetic
    from data.bad_files import BadFile, SplitCheck, report_bad_files

    expected = synthetic.image_folder_files(folder)
    missing = [path for path in expected if not path.is_file()]
    bad = {str(path): [BadFile(str(path), "image is missing from the complete synthetic set",
                               f"delete '{folder}' so it is written again")] for path in missing}
    check = SplitCheck("synthetic images", folder, bad, num_samples=len(expected))
    report_bad_files([check], "the synthetic image folder", skip)


def _check_classes(task: str, expected: int, written: int, what: str) -> None:
    if expected != written:
        raise ConfigError(
            f"synthetic {task} set has {written} {what} but the config asks for {expected}; "
            f"set synthetic.num_classes={written}"
        )
