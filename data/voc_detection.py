"""PASCAL VOC detection (VOC2007, VOC2007+2012) on the official VOCdevkit layout.

Boxes: VOC stores 1-based inclusive pixel indices; they become continuous coordinates
``(xmin - 1, ymin - 1, xmax, ymax)`` (a box covering pixels 1..W spans 0..W). Objects flagged
``<difficult>1</difficult>`` are kept with their flag for evaluation (VOC ignores them) and
dropped from training targets unless ``keep_difficult_in_train``.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from data.detection_transforms import AUGMENTATIONS, NORMALIZATIONS, eval_transform, train_transform
from data.errors import DatasetNotFoundError, check_num_classes
from data.io import read_rgb
from data.loaders import eval_loader, train_loader
from errors import ConfigError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)

VOC_DETECTION_LAYOUT = """\
<root>/VOCdevkit/VOC2007/                (VOC2012/ alongside for years=[2007, 2012])
  Annotations/<id>.xml
  JPEGImages/<id>.jpg
  ImageSets/Main/trainval.txt            one image id per line
  ImageSets/Main/test.txt                (VOC2007 only: VOCtest_06-Nov-2007.tar)
"""
DATASET_NAME = "PASCAL VOC detection"


@dataclass(frozen=True)
class VOCAnnotation:
    """One image's objects: boxes [N,4] float32 (continuous xyxy pixels), labels [N] int64 in
    1..C, difficult [N] bool, and the image size from the XML."""

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    width: int
    height: int


def find_voc_year(root: str | Path, year: str) -> Path:
    """``root/VOCdevkit/VOC<year>`` (``root`` may also be the VOCdevkit folder itself)."""
    root = Path(root).expanduser()
    candidates = (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}")
    for candidate in candidates:
        if (candidate / "Annotations").is_dir() and (candidate / "JPEGImages").is_dir():
            return candidate
    present = [p.name for p in candidates[0].parent.iterdir()] if candidates[0].parent.is_dir() else []
    problem = f"No VOC{year} folder with Annotations/ and JPEGImages/ there"
    problem += f" (it holds: {', '.join(sorted(present))})." if present else "."
    raise DatasetNotFoundError.describe(candidates[0], DATASET_NAME, VOC_DETECTION_LAYOUT, problem)


def read_split_ids(voc_dir: Path, split: str) -> list[str]:
    path = voc_dir / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.txt") if "_" not in p.stem)
        raise DatasetNotFoundError.describe(
            path, DATASET_NAME, VOC_DETECTION_LAYOUT,
            f"Split file '{split}.txt' is missing; splits present: {available or 'none'}.",
        )
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"split file {path} lists no image ids")
    return ids


def _int_text(node: ET.Element, tag: str, default: int, where: Path) -> int:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return default
    try:
        return int(float(child.text))
    except ValueError as error:
        raise ValueError(f"{where}: <{tag}> is {child.text!r}, expected a number") from error


def parse_voc_xml(path: str | Path, class_to_label: dict[str, int]) -> VOCAnnotation:
    """Read one VOC annotation; labels are ``class_to_label[name]`` (1-based)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise ValueError(f"cannot parse VOC annotation {path}: {error}") from error
    size = root.find("size")
    width = _int_text(size, "width", 0, path) if size is not None else 0
    height = _int_text(size, "height", 0, path) if size is not None else 0
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in class_to_label:
            raise ValueError(
                f"{path}: object class {name!r} is not in class_names {sorted(class_to_label)}; "
                "pass the dataset's class names (data.class_names)"
            )
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"{path}: an object {name!r} has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(bndbox.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: object {name!r} has a malformed <bndbox>") from error
        boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
        labels.append(class_to_label[name])
        difficult.append(_int_text(obj, "difficult", 0, path) == 1)
    return VOCAnnotation(
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
        width=width,
        height=height,
    )


class VOCDetection(Dataset):
    """``(image [3,H,W] float, dict(boxes [N,4] float32, labels [N] int64, difficult [N] bool))``.

    ``transform`` is an albumentations Compose called with ``image, bboxes, labels, difficult``
    (see ``data.detection_transforms``); boxes come back in pixels of the transformed image.
    """

    def __init__(self, voc_dir: str | Path, split: str, class_names: Sequence[str] = VOC_CLASSES,
                 keep_difficult: bool = True, transform: Callable | None = None,
                 ids: Sequence[str] | None = None) -> None:
        self.voc_dir = Path(voc_dir)
        self.split = split
        self.class_names = list(class_names)
        self.class_to_label = {name: i + 1 for i, name in enumerate(self.class_names)}
        self.keep_difficult = keep_difficult
        # ``ids``: a subset of the split (the held-out validation part, or what is left to train on).
        self.ids = list(ids) if ids is not None else read_split_ids(self.voc_dir, split)
        missing = [i for i in self.ids[:1] + self.ids[-1:]
                   if not (self.voc_dir / "Annotations" / f"{i}.xml").is_file()]
        if missing:
            raise DatasetNotFoundError.describe(
                self.voc_dir / "Annotations" / f"{missing[0]}.xml", DATASET_NAME, VOC_DETECTION_LAYOUT,
                f"Split '{split}' lists image {missing[0]!r} but its annotation is missing.",
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def annotation(self, index: int) -> VOCAnnotation:
        """The image's objects as stored (all of them, difficult ones included)."""
        return parse_voc_xml(self.voc_dir / "Annotations" / f"{self.ids[index]}.xml", self.class_to_label)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image [H,W,3] uint8 and boxes, labels, difficult (difficult dropped unless kept)."""
        ann = self.annotation(index)
        image = read_rgb(self.voc_dir / "JPEGImages" / f"{self.ids[index]}.jpg")
        boxes, labels, difficult = ann.boxes, ann.labels, ann.difficult
        if not self.keep_difficult:
            boxes, labels, difficult = boxes[~difficult], labels[~difficult], difficult[~difficult]
        return image, boxes, labels, difficult

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, boxes, labels, difficult = self.load(index)
        if self.transform is None:
            tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255
        else:
            out = self.transform(image=image, bboxes=boxes, labels=labels, difficult=difficult)
            tensor, boxes, labels, difficult = out["image"], out["bboxes"], out["labels"], out["difficult"]
        target = {
            "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "difficult": torch.as_tensor(np.asarray(difficult, dtype=bool).reshape(-1)),
        }
        return tensor, target


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """Images stacked to [B,3,H,W]; targets kept as a list of per-image dicts."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


class VOCDetectionDataModule(L.LightningDataModule):
    """VOC detection for SSD: ``years`` and ``train_split`` make the training set (VOC2007
    trainval, or 07+12 trainval), validation and test read ``eval_year``'s ``val_split`` /
    ``test_split`` (VOC2007 test; VOC2012 test annotations are not public).

    ``val_fraction > 0`` validates instead on that fraction of the training images, drawn with
    ``val_seed`` (the same images for every run with that seed) and removed from training, so a
    checkpoint selected on ``val/map`` is selected without the test set. With the default 0 the
    validation split is ``val_split`` (VOC2007 test, as the thesis' reference validated):
    ``validates_on_test`` is then True and the best-``val/map`` checkpoint is test-selected.
    ``augmentation`` / ``normalization``: see ``data.detection_transforms``.

    ``root`` is the folder holding ``VOCdevkit``. A missing dataset raises
    ``DatasetNotFoundError`` here, before anything is built.
    """

    def __init__(
        self,
        root: str | Path,
        years: Sequence[str | int] = ("2007",),
        train_split: str = "trainval",
        val_split: str = "test",
        test_split: str = "test",
        eval_year: str | int = "2007",
        batch_size: int = 24,
        num_workers: int = 2,
        image_size: int = 300,
        class_names: Sequence[str] = VOC_CLASSES,
        num_classes: int | None = None,
        keep_difficult_in_train: bool = False,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        augmentation: str = "mb2_ssd_lite",
        normalization: str = "mb2_ssd_lite",
        val_fraction: float = 0.0,
        val_seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1) (0 = validate on val_split), got {val_fraction!r}")
        if augmentation not in AUGMENTATIONS or normalization not in NORMALIZATIONS:
            raise ConfigError(f"data.augmentation must be one of {AUGMENTATIONS} and data.normalization one "
                              f"of {NORMALIZATIONS}; got {augmentation!r}, {normalization!r}")
        self.augmentation, self.normalization = augmentation, normalization
        self.val_fraction, self.val_seed = float(val_fraction), int(val_seed)
        self.class_names = list(class_names)
        check_num_classes(num_classes, self.class_names, "object classes, background excluded")
        if isinstance(years, (str, int)):
            years = (years,)
        self.years = tuple(str(y) for y in years)
        if not self.years:
            raise ValueError("years must name at least one VOC year, e.g. [2007] or [2007, 2012]")
        self.eval_year = str(eval_year)
        self.root = Path(root)
        self.train_split, self.val_split, self.test_split = train_split, val_split, test_split
        self.batch_size, self.num_workers = batch_size, num_workers
        self.image_size = image_size
        self.keep_difficult_in_train = keep_difficult_in_train
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.persistent_workers = persistent_workers
        # Fail now (cheap stat calls) rather than after the model is built.
        self.year_dirs = {y: find_voc_year(self.root, y) for y in dict.fromkeys((*self.years, self.eval_year))}
        for year in self.years:
            read_split_ids(self.year_dirs[year], train_split)
        for split in dict.fromkeys((val_split, test_split)):
            read_split_ids(self.year_dirs[self.eval_year], split)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: VOCDetection | None = None

    @property
    def num_classes(self) -> int:
        """Object classes (background excluded)."""
        return len(self.class_names)

    @property
    def validates_on_test(self) -> bool:
        """Whether validation reads the test images (then best-``val/map`` selection is on test)."""
        return self.val_fraction == 0 and self.val_split == self.test_split

    def _eval_set(self, split: str) -> VOCDetection:
        return VOCDetection(self.year_dirs[self.eval_year], split, self.class_names, keep_difficult=True,
                            transform=eval_transform(self.image_size, self.normalization))

    def _held_out_ids(self) -> dict[str, set[str]]:
        """Per year, the training ids held out for validation (``val_fraction`` of all, seeded)."""
        if self.val_fraction == 0:
            return {y: set() for y in self.years}
        pool = [(y, i) for y in self.years for i in read_split_ids(self.year_dirs[y], self.train_split)]
        count = round(self.val_fraction * len(pool))
        if not 1 <= count <= len(pool) - 2:
            raise ConfigError(f"data.val_fraction={self.val_fraction} holds out {count} of {len(pool)} "
                              "training images; it must leave at least 1 for validation and 2 for training")
        chosen = np.random.default_rng(self.val_seed).permutation(len(pool))[:count]
        held: dict[str, set[str]] = {y: set() for y in self.years}
        for k in chosen:
            held[pool[k][0]].add(pool[k][1])
        return held

    def _train_parts(self, held: dict[str, set[str]], validation: bool) -> Dataset:
        parts = []
        for year in self.years:
            ids = read_split_ids(self.year_dirs[year], self.train_split)
            ids = [i for i in ids if (i in held[year]) == validation]
            if not ids:
                continue
            parts.append(VOCDetection(
                self.year_dirs[year], self.train_split, self.class_names,
                keep_difficult=True if validation else self.keep_difficult_in_train,
                transform=(eval_transform(self.image_size, self.normalization) if validation else
                           train_transform(self.image_size, self.augmentation, self.normalization)),
                ids=ids))
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def setup(self, stage: str | None = None) -> None:
        held = self._held_out_ids() if stage in (None, "fit", "validate") else {}
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._train_parts(held, validation=False)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = (self._train_parts(held, validation=True) if self.val_fraction > 0
                            else self._eval_set(self.val_split))
        if stage in (None, "test") and self.test_set is None:
            self.test_set = self._eval_set(self.test_split)

    def _loader_options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "num_workers": self.num_workers,
                "collate_fn": collate_detection, "pin_memory": self.pin_memory,
                "persistent_workers": self.persistent_workers}

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        # The last SSD extra layer is 1x1: a training batch of one image would give BatchNorm a
        # single value per channel, so drop a ragged last batch whenever a full one exists.
        return train_loader(self.train_set, drop_last=len(self.train_set) > self.batch_size,
                            **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return eval_loader(self.val_set, **self._loader_options())

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            self.setup("test")
        return eval_loader(self.test_set, **self._loader_options())
