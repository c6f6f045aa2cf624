"""Classification dataset and LightningDataModule over the image-folder layouts."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from data.checked_datamodule import CheckedImageFolder
from data.facts import record_found_num_classes
from data.image_folder import (
    LAYOUTS,
    ClassificationSplit,
    Sample,
    build_classification_split,
    dataset_name,
    index_classification_dataset,
)
from data.io import read_rgb
from data.registry import register_datamodule
from data.split_datamodule import SplitDataModule
from data.classification_pipeline import RandomResizedCropPipeline
from data.transforms import classification_eval_transform
from errors import ConfigError


class ImageClassificationDataset(Dataset):
    """``(path, label)`` samples -> ``(image tensor [3,H,W] uint8, label)`` via an albumentations
    transform or a pipeline that reads the file itself (``data.classification_pipeline``)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[..., dict]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        if getattr(self.transform, "reads_images", False):  # data.classification_pipeline: decodes itself
            return self.transform(path=path)["image"], label
        return self.transform(image=read_rgb(path))["image"], label


@register_datamodule
class ImageFolderDataModule(SplitDataModule):
    """Flowers, Caltech-101/256 or any image folder, with a seeded per-class held-out split.

    The held-out split (``val_fraction`` of every class) serves as validation and test set.
    The dataset is indexed lazily, on first use of ``num_classes``/``class_names``/``setup``;
    indexing decodes every image once (cached) and reports all bad files in one
    ``BadFilesError``, or leaves them out with ``skip_bad_files``; see ``data.bad_files``.
    """

    def __init__(
        self,
        root: str,
        layout: str = "imagefolder",
        batch_size: int = 16,
        num_workers: int = 2,
        image_size: int = 224,
        val_fraction: float = 0.1,
        seed: int = 42,
        num_classes: int | None = None,
        include_background: bool = False,
        include_clutter: bool = True,
        top_fraction: float | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        skip_bad_files: bool = False,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ConfigError(f"Unknown classification layout '{layout}'; choose one of {', '.join(LAYOUTS)}.")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(
                f"val_fraction must be in (0, 1): the held-out part is the validation and test set; got {val_fraction}."
            )
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}.")
        self.save_hyperparameters()
        # Stored as text: a Path object in the checkpoint would not load with weights_only=True.
        self.hparams["root"] = str(root)
        self._split: ClassificationSplit | None = None
        self.train_dataset: ImageClassificationDataset | None = None
        self.val_dataset: ImageClassificationDataset | None = None
        self.test_dataset: ImageClassificationDataset | None = None

    @property
    def split(self) -> ClassificationSplit:
        if self._split is None:
            hp = self.hparams
            index = index_classification_dataset(hp.root, hp.layout, hp.include_background, hp.include_clutter)
            checked = CheckedImageFolder(index)
            self.check_and_prune([checked], dataset_name(hp.layout))
            split = build_classification_split(
                hp.root, hp.layout, hp.val_fraction, hp.seed, hp.top_fraction, hp.include_background,
                hp.include_clutter, exclude=checked.left_out, index=index,
            )
            if hp.num_classes is not None and hp.num_classes != split.num_classes:
                raise ConfigError(
                    f"data.num_classes={hp.num_classes} but the {hp.layout} dataset at '{hp.root}' has "
                    f"{split.num_classes} classes"
                    + (f" after keeping the top {hp.top_fraction:.0%}" if hp.top_fraction is not None else "")
                    + ". Set data.num_classes=null to use what is found, or point data.root at the right dataset."
                )
            self._split = split
            record_found_num_classes(self, split.num_classes)
        return self._split

    @property
    def num_classes(self) -> int:
        return self.split.num_classes

    @property
    def validates_on_test(self) -> bool:
        """The held-out split is both the validation and the test set (these datasets have no
        official test split), so a checkpoint selected on validation is selected on test."""
        return True

    @property
    def class_names(self) -> list[str]:
        return list(self.split.class_names)

    @property
    def train_class_counts(self) -> list[int]:
        """Training samples per class (label order), for the long-tail analysis."""
        return self.split.train_class_counts

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None:
            size = self.hparams.image_size
            self.train_dataset = ImageClassificationDataset(self.split.train, RandomResizedCropPipeline(size))
            self.val_dataset = ImageClassificationDataset(self.split.val, classification_eval_transform(size))
            self.test_dataset = self.val_dataset  # these datasets have no separate test set
