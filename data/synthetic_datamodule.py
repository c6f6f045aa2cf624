"""`data=synthetic`: write the embedded dataset in the task's real on-disk format, then read it
with the same datamodule that reads the real dataset. The real loading code is what runs."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import OmegaConf

from data.registry import register_datamodule
from errors import ConfigError


@register_datamodule
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
    ``format``: one of the on-disk formats the task registers (``TaskSpec.synthetic``; the
    first is the default), e.g. classification's "imagefolder" (Flowers / Caltech style) or
    "cifar10" (CIFAR-10's python pickle batches, read by ``data.cifar.CIFAR10DataModule``).
    """
    from hydra.utils import get_method

    from tasks.registry import get_task, list_tasks

    try:
        formats = get_task(task).synthetic
    except ConfigError:
        raise ConfigError(f"unknown task {task!r} for the synthetic dataset; valid: "
                          f"{', '.join(list_tasks())}") from None
    chosen = next(iter(formats)) if format is None else format
    if chosen not in formats:
        raise ConfigError(f"synthetic format {format!r} is not available for {task}; it takes "
                          f"{' | '.join(formats)} (or null for {next(iter(formats))})")
    common = {"batch_size": batch_size, "num_workers": num_workers, "skip_bad_files": skip_bad_files,
              **datamodule_kwargs}
    build = get_method(formats[chosen])
    return build(Path(root), dict(generator or {}), seed, num_classes, image_size, common)


def set_folder(root: Path, name: str, generator: Mapping[str, Any], seed: int) -> Path:
    """``<root>/<name>-<key>``: the folder of one synthetic set, keyed by its generator settings
    and seed (8 hex digits of their hash). Runs with other settings never share, delete or rewrite
    a set another run is reading (they once did, and a run tested on another run's images)."""
    plain = OmegaConf.to_container(generator, resolve=True) if OmegaConf.is_config(generator) else dict(generator)
    settings = json.dumps({"generator": plain, "seed": int(seed)}, sort_keys=True, default=str)
    return Path(root) / f"{name}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"


# One builder per on-disk format: write the set once under ``root``, then read it with the
# datamodule of the real dataset in that format. Named by TaskSpec.synthetic.
def synthetic_image_folder(root: Path, generator: dict[str, Any], seed: int, num_classes: int,
                           image_size: int, common: dict[str, Any]) -> L.LightningDataModule:
    from data import synthetic
    from data.classification import ImageFolderDataModule

    # The generator may write more classes than the model sees (top_fraction keeps a subset).
    generator.setdefault("num_classes", num_classes)
    folder = set_folder(root, "classification", generator, seed)
    synthetic.write_image_folder(folder, seed=seed, **generator)
    _report_missing_images(folder, common["skip_bad_files"])
    return ImageFolderDataModule(root=str(folder), layout="imagefolder", image_size=image_size,
                                 num_classes=num_classes, **common)


def synthetic_image_folder_splits(root: Path, generator: dict[str, Any], seed: int, num_classes: int,
                                  image_size: int, common: dict[str, Any]) -> L.LightningDataModule:
    """The synthetic image folder read by data=image_folder's datamodule (separate val / test
    splits by fractions, eval-time deformation): seed 001's recipes on the embedded data."""
    from data import synthetic
    from data.image_folder_splits import ImageFolderSplitsDataModule

    generator.setdefault("num_classes", num_classes)
    folder = set_folder(root, "classification", generator, seed)
    synthetic.write_image_folder(folder, seed=seed, **generator)
    _report_missing_images(folder, common["skip_bad_files"])
    return ImageFolderSplitsDataModule(root=str(folder), image_size=image_size,
                                       num_classes=num_classes, **common)


def synthetic_cifar10(root: Path, generator: dict[str, Any], seed: int, num_classes: int,
                      image_size: int, common: dict[str, Any]) -> L.LightningDataModule:
    from data import synthetic
    from data.cifar import CIFAR10DataModule

    generator.setdefault("num_classes", num_classes)
    folder = set_folder(root, "cifar10", generator, seed)
    synthetic.write_cifar10(folder, seed=seed, **generator)
    # Not the official files: their MD5 sums cannot match. The pickle batches are checked as a
    # whole (they load or not): no per-file skipping.
    common = {k: v for k, v in common.items() if k != "skip_bad_files"}
    return CIFAR10DataModule(root=str(folder), image_size=image_size, num_classes=num_classes,
                             verify_checksums=False, **common)


def synthetic_voc_detection(root: Path, generator: dict[str, Any], seed: int, num_classes: int,
                            image_size: int, common: dict[str, Any]) -> L.LightningDataModule:
    from data import synthetic
    from data.voc_detection import VOCDetectionDataModule

    folder = set_folder(root, "detection", generator, seed)
    class_names = synthetic.write_voc_detection(folder, seed=seed, **generator)
    _check_classes("detection", num_classes, len(class_names), "object classes")
    return VOCDetectionDataModule(root=str(folder), years=("2007",), image_size=image_size,
                                  class_names=list(class_names), **common)


def synthetic_voc_segmentation(root: Path, generator: dict[str, Any], seed: int, num_classes: int,
                               image_size: int, common: dict[str, Any]) -> L.LightningDataModule:
    from data import synthetic
    from data.voc_segmentation import VOCSegmentationDataModule

    folder = set_folder(root, "segmentation", generator, seed)
    class_names = list(synthetic.write_voc_segmentation(folder, seed=seed, **generator))
    if class_names[0] != "background":
        class_names = ["background", *class_names]
    _check_classes("segmentation", num_classes, len(class_names), "classes including background")
    return VOCSegmentationDataModule(root=str(folder), crop_size=image_size,
                                     class_names=class_names, **common)


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
