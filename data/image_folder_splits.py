"""Any image-folder dataset with a train / validation / test split (seed 001's dog breeds), and a
seeded, reproducible random deformation of the evaluation images.

Layouts under ``root`` (found automatically):

- split folders: ``root/train/<class>/...``, ``root/test/<class>/...`` and optionally
  ``root/val/<class>/...`` (without ``val/``, a seeded stratified ``val_fraction`` of ``train``);
  every split must have the training set's class folders;
- one folder: ``root/<class>/...``, split per class into train / val / test by the seeded
  stratified fractions ``val_fraction`` and ``test_fraction`` (of the whole class).

Unlike ``data.classification.ImageFolderDataModule`` (Flowers, Caltech: one held-out split that is
both validation and test), validation and test are separate here, so a checkpoint selected on
validation is not selected on test.

``eval_deformation`` (seed 001 "perform[s] random deformation on the validation and test set"):
every validation and test image is warped after the evaluation resize and crop, with a generator
seeded by (``deformation_seed``, split, sample index), so the same image gets the same deformation
on every evaluation, in any worker, in any run. Kinds: ``affine`` (rotation +-20 deg, scale
0.8-1.2, shear +-10 deg, shift +-10 %), ``grid`` (a 5x5 grid distortion, limit 0.3: a non-rigid
warp), ``affine_grid`` (both). The seed names no kind; its configs use ``affine_grid``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2

from data.transforms import EVAL_CROP_FRACTION, _check_size

import albumentations as A  # noqa: E402  (after data.transforms: no update check)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from data.checked_datamodule import CheckedImageFolder  # noqa: E402
from data.facts import record_found_num_classes  # noqa: E402
from data.classification import ImageClassificationDataset  # noqa: E402
from data.classification_pipeline import RandomResizedCropPipeline  # noqa: E402
from data.image_folder import (  # noqa: E402
    ClassificationSplit, ImageFolderIndex, Sample, index_image_folder,
    leave_out_samples, stratified_split,
)
from data.io import read_rgb  # noqa: E402
from data.registry import register_datamodule  # noqa: E402
from data.split_datamodule import SplitDataModule  # noqa: E402
from errors import ConfigError, DataError  # noqa: E402

DEFORMATIONS = ("affine", "grid", "affine_grid")
SPLIT_FOLDERS = ("train", "val", "test")
_SPLIT_SEEDS = {"val": 1, "test": 2}


def deformation(kind: str) -> A.Compose:
    """The deformation ``kind`` as an albumentations pipeline (every step always applied)."""
    steps = {
        "affine": [A.Affine(rotate=(-20, 20), scale=(0.8, 1.2), shear=(-10, 10),
                            translate_percent=(-0.1, 0.1), border_mode=cv2.BORDER_REFLECT_101, p=1.0)],
        "grid": [A.GridDistortion(num_steps=5, distort_limit=0.3, border_mode=cv2.BORDER_REFLECT_101, p=1.0)],
    }
    if kind not in DEFORMATIONS:
        raise ConfigError(f"unknown eval_deformation {kind!r}; choose one of {DEFORMATIONS} or null")
    return A.Compose(steps["affine"] + steps["grid"] if kind == "affine_grid" else steps[kind])


class DeformedEvalDataset(Dataset):
    """Evaluation samples, each resized and centre-cropped, then warped by ``deform`` seeded by
    (seed, split, index); uint8 out (normalised on the device): the same deformation of the same
    image every time."""

    def __init__(self, samples: Sequence[Sample], image_size: int, deform: A.Compose, seed: int,
                 split: str) -> None:
        size = _check_size(image_size)
        self.samples = list(samples)
        self.resize = A.Compose([A.SmallestMaxSize(max_size=int(round(size / EVAL_CROP_FRACTION))),
                                 A.CenterCrop(height=size, width=size)])
        self.deform = deform
        self.finish = A.Compose([ToTensorV2()])  # uint8: the task normalises on the device
        self.seed = [int(seed), _SPLIT_SEEDS.get(split, 0)]

    def __len__(self) -> int:
        return len(self.samples)

    def deformed(self, index: int) -> np.ndarray:
        """The warped uint8 image of sample ``index`` (before normalisation)."""
        path, _ = self.samples[index]
        image = self.resize(image=read_rgb(path))["image"]
        # One 32-bit seed from (seed, split, index): albumentations draws from its own generators.
        seed = int(np.random.SeedSequence([*self.seed, index]).generate_state(1)[0])
        self.deform.set_random_seed(seed)
        return self.deform(image=image)["image"]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.finish(image=self.deformed(index))["image"], self.samples[index][1]


def _fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be in (0, 1), the share of every class held out; got {value!r}.")
    return float(value)


@register_datamodule
class ImageFolderSplitsDataModule(SplitDataModule):
    """Train / val / test from split folders or seeded stratified fractions (module docstring)."""

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        num_workers: int = 2,
        image_size: int = 224,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 42,
        num_classes: int | None = None,
        eval_deformation: str | None = None,
        deformation_seed: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        skip_bad_files: bool = False,
    ) -> None:
        super().__init__()
        _fraction("val_fraction", val_fraction)
        _fraction("test_fraction", test_fraction)
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError(f"val_fraction + test_fraction must leave training images; got "
                              f"{val_fraction} + {test_fraction}.")
        if eval_deformation is not None:
            deformation(eval_deformation)  # checks the name now, not at the first evaluation
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}.")
        self.save_hyperparameters()
        self.hparams["root"] = str(root)  # text: a Path would not load with weights_only=True
        self._splits: dict[str, list[Sample]] | None = None
        self._class_names: list[str] | None = None

    # ------------------------------------------------------------------ indexing
    @property
    def layout(self) -> str:
        root = Path(self.hparams.root)
        return "split_folders" if (root / "train").is_dir() else "one_folder"

    def _index(self) -> None:
        if self._splits is not None:
            return
        hp = self.hparams
        root = Path(hp.root)
        if self.layout == "split_folders":
            indexes = {name: index_image_folder(root / name) for name in SPLIT_FOLDERS if (root / name).is_dir()}
            if "test" not in indexes:
                raise DataError(f"'{root}' has a train/ folder but no test/ folder: give train/ and test/ "
                                "(and optionally val/) class folders, or put the class folders directly in "
                                "the root to split them by data.val_fraction and data.test_fraction.")
            names = indexes["train"].class_names
            for split, index in indexes.items():
                if index.class_names != names:
                    raise DataError(f"'{root / split}' has classes {index.class_names} but train/ has "
                                    f"{names}; every split needs the same class folders.")
        else:
            indexes = {"all": index_image_folder(root)}
            names = indexes["all"].class_names
        checked = [CheckedImageFolder(index) for index in indexes.values()]
        self.check_and_prune(checked, f"the image folder '{root}'")
        bad = set().union(*(part.left_out for part in checked))

        if self.layout == "split_folders":
            train_index = indexes["train"]
            test = [s for s in indexes["test"].samples if s[0] not in bad]
            if "val" in indexes:
                train, val = list(train_index.samples), list(indexes["val"].samples)
            else:
                part = stratified_split(train_index, hp.val_fraction, hp.seed + _SPLIT_SEEDS["val"])
                train, val = part.train, part.val
        else:
            whole = indexes["all"]
            rest = stratified_split(whole, hp.test_fraction, hp.seed + _SPLIT_SEEDS["test"])
            rest_index = ImageFolderIndex(whole.root, names, rest.train)
            # val_fraction is of the whole class: of what the test split left, a larger share.
            part = stratified_split(rest_index, hp.val_fraction / (1.0 - hp.test_fraction),
                                    hp.seed + _SPLIT_SEEDS["val"])
            train, val, test = part.train, part.val, rest.val
        kept = leave_out_samples(ClassificationSplit(names, train, val), bad)
        test = [s for s in test if s[0] not in bad]
        if hp.num_classes is not None and hp.num_classes != len(names):
            raise ConfigError(f"data.num_classes={hp.num_classes} but '{root}' has {len(names)} classes "
                              f"({', '.join(names[:10])}); set data.num_classes=null to use what is found.")
        self._class_names = list(names)
        record_found_num_classes(self, len(names))
        self._splits = {"train": kept.train, "val": kept.val, "test": test}

    @property
    def class_names(self) -> list[str]:
        self._index()
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def split_sizes(self) -> dict[str, int]:
        self._index()
        return {k: len(v) for k, v in self._splits.items()}

    @property
    def train_class_counts(self) -> list[int]:
        self._index()
        return np.bincount([label for _, label in self._splits["train"]],
                           minlength=len(self._class_names)).astype(int).tolist()

    # ------------------------------------------------------------------ datasets
    def _eval_dataset(self, split: str) -> Dataset:
        hp = self.hparams
        samples = self._splits[split]
        if hp.eval_deformation is None:
            from data.transforms import classification_eval_transform

            return ImageClassificationDataset(samples, classification_eval_transform(hp.image_size))
        return DeformedEvalDataset(samples, hp.image_size, deformation(hp.eval_deformation),
                                   hp.deformation_seed, split)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self._index()
        hp = self.hparams
        self.train_dataset = ImageClassificationDataset(self._splits["train"],
                                                        RandomResizedCropPipeline(hp.image_size))
        self.val_dataset = self._eval_dataset("val")
        self.test_dataset = self._eval_dataset("test")


