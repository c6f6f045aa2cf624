"""`data=synthetic`: write the embedded dataset in the task's real on-disk format, then read it
with the same datamodule that reads the real dataset. The real loading code is what runs."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from errors import ConfigError

TASKS = ("classification", "detection", "segmentation")


def synthetic_datamodule(
    task: str,
    root: str | Path,
    batch_size: int,
    num_workers: int,
    image_size: int,
    num_classes: int,
    generator: Mapping[str, Any] | None = None,
    seed: int = 0,
    **datamodule_kwargs: Any,
) -> L.LightningDataModule:
    """Generate (once) and load the synthetic dataset for ``task``.

    ``num_classes`` is what the model is built with (object classes for detection, classes
    including background for segmentation); it must agree with what the generator writes.
    """
    from data import synthetic

    generator = dict(generator or {})
    root = Path(root)
    common = {"batch_size": batch_size, "num_workers": num_workers, **datamodule_kwargs}
    if task == "classification":
        from data.classification import ImageFolderDataModule

        folder = root / "classification"
        # The generator may write more classes than the model sees (top_fraction keeps a subset).
        generator.setdefault("num_classes", num_classes)
        synthetic.write_image_folder(folder, seed=seed, **generator)
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


def _check_classes(task: str, expected: int, written: int, what: str) -> None:
    if expected != written:
        raise ConfigError(
            f"synthetic {task} set has {written} {what} but the config asks for {expected}; "
            f"set synthetic.num_classes={written}"
        )
