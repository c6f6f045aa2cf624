"""CIFAR-10 in its official python layout (``cifar-10-batches-py``).

Splits: the official ``test_batch`` is the test split; a seeded, stratified ``val_fraction`` of
the five training batches (10 % by default, as seeds 002 and 004 held out) is the validation split,
the rest the training split. Images are served at ``image_size`` (32 = native; the seeds resized
to 224), see ``data.cifar_transforms``.

The files are checked against the official MD5 sums (torchvision's list and ``check_integrity``);
``verify_checksums=False`` reads other data written in the same layout (the embedded synthetic
set, ``data.synthetic.write_cifar10``). Either way the batches are unpickled by
``data.cifar_pickle``, which builds only what the format holds (torchvision's reader would
``pickle.load`` them, running whatever a crafted file names).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity

from data.cifar_pickle import read_batch, read_meta
from data.cifar_transforms import (AUGMENTATIONS, check_normalize, cifar_eval_transform, cifar_normalization,
                                   cifar_train_transform)
from data.device_transforms import Normalization
from data.errors import DatasetNotFoundError, check_num_classes
from data.facts import record_found_num_classes
from data.image_folder import held_out_count
from data.registry import register_datamodule
from data.split_datamodule import SplitDataModule
from errors import ConfigError, DataError

BATCHES_FOLDER = CIFAR10.base_folder  # "cifar-10-batches-py"
BATCH_FILES = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
EXPECTED_LAYOUT = (
    "<root>/\n"
    "└── cifar-10-batches-py/     (cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extracted)\n"
    "    ├── batches.meta\n"
    "    ├── data_batch_1 ... data_batch_5\n"
    "    └── test_batch"
)


_MD5 = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
_MD5[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]


@dataclass(frozen=True)
class CIFARArrays:
    """One split in memory: ``images`` [N, 32, 32, 3] uint8 RGB, ``labels`` [N] int64."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]


def batches_root(root: str | Path) -> Path:
    """The folder holding ``cifar-10-batches-py`` (``root`` itself may be that folder)."""
    root = Path(root)
    return root.parent if root.name == BATCHES_FOLDER else root


def read_cifar10(root: str | Path, train: bool, verify_checksums: bool = True) -> CIFARArrays:
    """The five training batches (``train``) or the test batch, with the class names of
    ``batches.meta``. Raises ``DatasetNotFoundError`` naming what is missing or does not match."""
    parent = batches_root(root)
    folder = parent / BATCHES_FOLDER
    if not folder.is_dir():
        problem = "That folder does not exist." if not parent.is_dir() else f"No '{BATCHES_FOLDER}' folder inside it."
        raise DatasetNotFoundError.describe(parent, "CIFAR-10", EXPECTED_LAYOUT, problem)
    missing = [name for name in BATCH_FILES if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError.describe(folder, "CIFAR-10", EXPECTED_LAYOUT,
                                            f"Missing file(s): {', '.join(missing)}.")
    names = [name for name, _ in (CIFAR10.train_list if train else CIFAR10.test_list)]
    meta = CIFAR10.meta["filename"]
    if verify_checksums and not all(check_integrity(str(folder / name), _MD5[name]) for name in names + [meta]):
        raise DatasetNotFoundError.describe(
            folder, "CIFAR-10", EXPECTED_LAYOUT,
            "The files there do not match the official CIFAR-10 MD5 checksums (corrupt, or not the "
            "official files). Re-extract cifar-10-python.tar.gz, or set data.verify_checksums=false "
            "to read other data written in this layout.",
        )
    class_names = read_meta(folder / meta)
    batches = [read_batch(folder / name) for name in names]
    for name, (_, labels) in zip(names, batches):
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DataError(f"CIFAR-10 file '{folder / name}' has labels outside 0..{len(class_names) - 1} "
                            f"(batches.meta names {len(class_names)} classes); replace it with the official "
                            f"file or regenerate it")
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return CIFARArrays(images, labels, class_names)


def stratified_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: ``held_out_count(n_c, val_fraction)`` of every class held out, drawn
    with a generator seeded by (seed, class), so a class's split depends on nothing else."""
    train, val = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = np.random.default_rng([seed, int(label)]).permutation(len(members))
        held = held_out_count(len(members), val_fraction)
        val.append(members[np.sort(order[:held])])
        train.append(members[np.sort(order[held:])])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class CIFARDataset(Dataset):
    """``(image tensor [3, H, W], label)`` from in-memory CIFAR arrays via an albumentations transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(image=self.images[index])["image"], int(self.labels[index])


@register_datamodule
class CIFAR10DataModule(SplitDataModule):
    """CIFAR-10: train / seeded stratified validation from the training batches, the official test
    batch as test split. The files are read lazily, on first use of ``num_classes`` /
    ``class_names`` / ``setup``."""

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        num_workers: int = 2,
        image_size: int = 32,
        val_fraction: float = 0.1,
        seed: int = 42,
        num_classes: int | None = 10,
        augment: str = "crop_flip",
        normalize: str = "imagenet",
        verify_checksums: bool = True,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1): the share of each class held out for "
                             f"validation; got {val_fraction}.")
        if augment not in AUGMENTATIONS:
            raise ConfigError(f"unknown CIFAR augmentation {augment!r}; choose one of {AUGMENTATIONS}")
        check_normalize(normalize)
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}.")
        self.save_hyperparameters()
        self.hparams["root"] = str(root)  # text: a Path would not load with weights_only=True
        self._train: CIFARArrays | None = None
        self._test: CIFARArrays | None = None
        self._split: tuple[np.ndarray, np.ndarray] | None = None
        self.train_dataset = self.val_dataset = self.test_dataset = None

    def _load(self) -> None:
        if self._train is not None:
            return
        hp = self.hparams
        train = read_cifar10(hp.root, train=True, verify_checksums=hp.verify_checksums)
        test = read_cifar10(hp.root, train=False, verify_checksums=hp.verify_checksums)
        check_num_classes(hp.num_classes, train.class_names, f"batches.meta in '{hp.root}'")
        self._train, self._test = train, test
        self._split = stratified_indices(train.labels, hp.val_fraction, hp.seed)
        record_found_num_classes(self, len(train.class_names))

    @property
    def input_normalization(self) -> Normalization:
        """How the task normalises the uint8 batches on the device."""
        return cifar_normalization(self.hparams.get("normalize", "imagenet"))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        self._load()
        return list(self._train.class_names)

    @property
    def train_class_counts(self) -> list[int]:
        """Training samples per class (label order), for the per-class (long-tail) analysis."""
        self._load()
        counts = np.bincount(self._train.labels[self._split[0]], minlength=self.num_classes)
        return [int(c) for c in counts]

    @property
    def split_sizes(self) -> dict[str, int]:
        self._load()
        return {"train": len(self._split[0]), "val": len(self._split[1]), "test": len(self._test.labels)}

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self._load()
        hp = self.hparams
        train_idx, val_idx = self._split
        images, labels = self._train.images, self._train.labels
        norm = hp.get("normalize", "imagenet")  # checkpoints written before the option: ImageNet
        self.train_dataset = CIFARDataset(images[train_idx], labels[train_idx],
                                          cifar_train_transform(hp.image_size, hp.augment, norm))
        self.val_dataset = CIFARDataset(images[val_idx], labels[val_idx], cifar_eval_transform(hp.image_size, norm))
        self.test_dataset = CIFARDataset(self._test.images, self._test.labels,
                                         cifar_eval_transform(hp.image_size, norm))
