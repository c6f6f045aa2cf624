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

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from data.bad_files import BadFile, SampleCheck, SplitCheck
from data.check_runner import check_samples
from data.detection_pipeline import detection_normalization, eval_pipeline, train_pipeline
from data.detection_transforms import AUGMENTATIONS, NORMALIZATIONS
from data.device_transforms import Normalization
from data.errors import DatasetNotFoundError, check_num_classes
from data.file_checks import image_problem
from data.io import read_rgb
from data.split_datamodule import STAGE_OF_SPLIT, SplitDataModule
from data.registry import register_datamodule
from errors import ConfigError, DataError

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
        raise DataError(f"split file {path} lists no image ids")
    return ids


# Boxes that pass the image edge by at most this many pixels are clipped to the image (VOC has
# a few off-by-one boxes); boxes further out, inverted or outside the image are reported as bad.
BOX_EDGE_TOLERANCE_PX = 5.0


@dataclass(frozen=True)
class _XMLObject:
    """An ``<object>`` as written: ``box`` is VOC's 1-based (xmin, ymin, xmax, ymax), or None
    when ``<bndbox>`` is missing or not numeric."""

    name: str
    box: tuple[float, float, float, float] | None
    difficult: bool


class _UnreadableXML(Exception):
    """An annotation file that cannot be read as VOC XML; the message says why (no path)."""


def _int_text(node: ET.Element, tag: str, default: int) -> int:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return default
    try:
        return int(float(child.text))
    except ValueError as error:
        raise _UnreadableXML(f"has <{tag}> {child.text!r}, expected a number") from error


def _read_xml(path: Path) -> tuple[int, int, list[_XMLObject]]:
    """The ``<size>`` (0 when absent) and objects of a VOC annotation; raises _UnreadableXML
    when it is empty, not XML or not a VOC annotation."""
    if path.stat().st_size == 0:
        raise _UnreadableXML("is empty (0 bytes)")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise _UnreadableXML(f"is not valid XML ({error})") from error
    if root.tag != "annotation":
        raise _UnreadableXML(f"is not a VOC annotation (its root element is <{root.tag}>, not <annotation>)")
    size = root.find("size")
    width = _int_text(size, "width", 0) if size is not None else 0
    height = _int_text(size, "height", 0) if size is not None else 0
    objects = []
    for obj in root.iter("object"):
        bndbox = obj.find("bndbox")
        try:
            box = tuple(float(bndbox.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            box = None
        objects.append(_XMLObject((obj.findtext("name") or "").strip(), box,
                                  _int_text(obj, "difficult", 0) == 1))
    return width, height, objects


def parse_voc_xml(path: str | Path, class_to_label: dict[str, int]) -> VOCAnnotation:
    """Read one VOC annotation; labels are ``class_to_label[name]`` (1-based)."""
    path = Path(path)
    try:
        width, height, objects = _read_xml(path)
    except _UnreadableXML as error:
        raise DataError(f"VOC annotation {path} {error}") from error
    boxes, labels, difficult = [], [], []
    for obj in objects:
        if obj.name not in class_to_label:
            raise DataError(
                f"{path}: object class {obj.name!r} is not in class_names {sorted(class_to_label)}; "
                "pass the dataset's class names (data.class_names)"
            )
        if obj.box is None:
            raise DataError(f"{path}: object {obj.name!r} has no <bndbox> with numeric xmin, ymin, xmax, ymax")
        xmin, ymin, xmax, ymax = obj.box
        boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
        labels.append(class_to_label[obj.name])
        difficult.append(obj.difficult)
    return VOCAnnotation(
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
        width=width,
        height=height,
    )


def _box_problem(box: tuple[float, float, float, float], width: int, height: int,
                 tolerance: float) -> tuple[str | None, bool]:
    """(what is wrong with a VOC box on a ``width`` x ``height`` image, whether it gets clipped)."""
    xmin, ymin, xmax, ymax = box
    inverted = [f"{high} {b:g} < {low} {a:g}" for low, a, high, b in
                (("xmin", xmin, "xmax", xmax), ("ymin", ymin, "ymax", ymax)) if b < a]
    if inverted:
        return f"is inverted ({' and '.join(inverted)})", False
    x0, y0, x1, y1 = xmin - 1.0, ymin - 1.0, xmax, ymax  # continuous pixel coordinates
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return f"lies entirely outside the {width}x{height} image", False
    past = {"left": -x0, "top": -y0, "right": x1 - width, "bottom": y1 - height}
    edge, distance = max(past.items(), key=lambda item: item[1])
    if distance > tolerance:
        return (f"runs {distance:g} px past the {edge} edge of the {width}x{height} image "
                f"(more than the {tolerance:g} px that are clipped)"), False
    return None, distance > 0


def annotation_problems(path: Path, class_to_label: dict[str, int], image_size: tuple[int, int] | None,
                        tolerance: float = BOX_EDGE_TOLERANCE_PX) -> tuple[list[str], int]:
    """Everything wrong with one annotation, checked against its image's real size, and the
    number of boxes that pass the edge by at most ``tolerance`` px (clipped when loaded)."""
    try:
        xml_width, xml_height, objects = _read_xml(path)
    except FileNotFoundError:
        return ["is missing"], 0
    except _UnreadableXML as error:
        return [str(error)], 0
    problems = []
    if image_size is not None and xml_width > 0 and xml_height > 0 and (xml_width, xml_height) != tuple(image_size):
        problems.append(f"gives the image size {xml_width}x{xml_height} but the image is "
                        f"{image_size[0]}x{image_size[1]}")
    width, height = image_size if image_size is not None else (xml_width, xml_height)
    clipped = 0
    for number, obj in enumerate(objects, start=1):
        what = f"object {number} ({obj.name!r})"
        if obj.name not in class_to_label:
            problems.append(f"{what} is not one of the {len(class_to_label)} class names")
        if obj.box is None:
            problems.append(f"{what} has no <bndbox> with numeric xmin, ymin, xmax, ymax")
            continue
        if width <= 0 or height <= 0:
            continue  # no image size to check against (the image itself is reported)
        problem, clip = _box_problem(obj.box, width, height, tolerance)
        if problem:
            box = ", ".join(f"{v:g}" for v in obj.box)
            problems.append(f"{what} box ({box}) {problem}")
        clipped += clip
    return problems, clipped


def check_voc_sample(voc_dir: Path, image_id: str, split: str, class_to_label: dict[str, int],
                     tolerance: float = BOX_EDGE_TOLERANCE_PX) -> SampleCheck:
    """Check the image and the annotation of one VOC detection sample."""
    image_path = voc_dir / "JPEGImages" / f"{image_id}.jpg"
    xml_path = voc_dir / "Annotations" / f"{image_id}.xml"
    leave_out = f"remove the id {image_id} from ImageSets/Main/{split}.txt"
    bad = []
    size, problem = image_problem(image_path)
    if problem:
        bad.append(BadFile(str(image_path), f"image {problem}",
                           f"restore the original file from the dataset archive, or {leave_out}"))
    problems, clipped = annotation_problems(xml_path, class_to_label, size, tolerance)
    if problems:
        fix = "correct the annotation (boxes are 1-based pixel indices inside the image)"
        if any("class names" in p for p in problems):
            fix = "correct the <name>, or list the dataset's classes in data.class_names"
        bad.append(BadFile(str(xml_path), "annotation " + "; ".join(problems), f"{fix}, or {leave_out}"))
    return SampleCheck(bad, 0 if bad else clipped)


class VOCDetection(Dataset):
    """``(image [3,H,W] uint8, dict(boxes [N,4] float32, labels [N] int64, difficult [N] bool))``.

    ``transform``: a ``data.detection_pipeline.SSDPipeline`` (called with the image's path), or an
    albumentations Compose called with ``image, bboxes, labels, difficult``; boxes come back in
    pixels of the transformed image. mb2-ssd-lite training targets also carry ``photometric``
    and ``image_rect``, applied on the device (``data.device_transforms``).
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
        # Neither the first nor the last annotation: the split belongs to another folder. A few
        # missing files are found and reported with the other bad files by ``check``.
        missing = [i for i in dict.fromkeys(self.ids[:1] + self.ids[-1:])
                   if not (self.voc_dir / "Annotations" / f"{i}.xml").is_file()]
        if len(missing) == len(dict.fromkeys(self.ids[:1] + self.ids[-1:])):
            raise DatasetNotFoundError.describe(
                self.voc_dir / "Annotations" / f"{missing[0]}.xml", DATASET_NAME, VOC_DETECTION_LAYOUT,
                f"Split '{split}' lists image {missing[0]!r} but its annotation is missing.",
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def check(self, tolerance: float = BOX_EDGE_TOLERANCE_PX) -> SplitCheck:
        """Check every image and annotation of the split (cached; see ``data.check_runner``)."""
        samples = [(i, (self.voc_dir / "JPEGImages" / f"{i}.jpg", self.voc_dir / "Annotations" / f"{i}.xml"))
                   for i in self.ids]
        return check_samples(
            samples, lambda i: check_voc_sample(self.voc_dir, i, self.split, self.class_to_label, tolerance),
            dataset_dir=self.voc_dir, split=f"detection-{self.split}",
            params={"kind": "voc_detection", "class_names": self.class_names, "tolerance": tolerance},
            label=f"{self.voc_dir.name} {self.split}")

    @property
    def check_key(self) -> tuple:
        """Which files ``check`` reads (datasets with equal keys are checked once)."""
        return (self.voc_dir, self.split, tuple(self.ids))

    def leave_out(self, ids: set[str]) -> None:
        """Drop the samples of ``ids`` (bad files skipped with ``skip_bad_files``)."""
        self.ids = [i for i in self.ids if i not in ids]

    def annotation(self, index: int) -> VOCAnnotation:
        """The image's objects as stored (all of them, difficult ones included)."""
        return parse_voc_xml(self.voc_dir / "Annotations" / f"{self.ids[index]}.xml", self.class_to_label)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image [H,W,3] uint8 and boxes, labels, difficult (difficult dropped unless kept).

        Boxes are clipped to the image: indexing let through only boxes that pass its edge by
        at most ``BOX_EDGE_TOLERANCE_PX`` (and counted them in the log)."""
        ann = self.annotation(index)
        image = read_rgb(self.voc_dir / "JPEGImages" / f"{self.ids[index]}.jpg")
        boxes, labels, difficult = ann.boxes, ann.labels, ann.difficult
        height, width = image.shape[:2]
        boxes = np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float32))
        if not self.keep_difficult:
            boxes, labels, difficult = boxes[~difficult], labels[~difficult], difficult[~difficult]
        return image, boxes, labels, difficult

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        extra: dict[str, torch.Tensor] = {}
        if getattr(self.transform, "reads_images", False):
            # data.detection_pipeline: it decides the decode size itself, so it gets the path.
            ann = self.annotation(index)
            boxes, labels, difficult = ann.boxes, ann.labels, ann.difficult
            if not self.keep_difficult:
                boxes, labels, difficult = boxes[~difficult], labels[~difficult], difficult[~difficult]
            out = self.transform(path=self.voc_dir / "JPEGImages" / f"{self.ids[index]}.jpg",
                                 bboxes=boxes, labels=labels, difficult=difficult)
            tensor, boxes, labels, difficult = out["image"], out["bboxes"], out["labels"], out["difficult"]
            extra = {k: out[k] for k in ("photometric", "image_rect", "fill") if k in out}
        else:
            image, boxes, labels, difficult = self.load(index)
            if self.transform is None:  # uint8 as every loader yields (normalised on the device)
                tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
            else:
                out = self.transform(image=image, bboxes=boxes, labels=labels, difficult=difficult)
                tensor, boxes, labels, difficult = out["image"], out["bboxes"], out["labels"], out["difficult"]
        target = {
            "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "difficult": torch.as_tensor(np.asarray(difficult, dtype=bool).reshape(-1)),
            **extra,
        }
        return tensor, target


def _concat(parts: Sequence[Dataset]) -> Dataset:
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """Images stacked to [B,3,H,W]; targets kept as a list of per-image dicts."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


@register_datamodule
class VOCDetectionDataModule(SplitDataModule):
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
    ``DatasetNotFoundError`` here, before anything is built. ``setup`` checks every image and
    annotation of the splits it builds (``fit`` also checks the test split, which is read after
    training) and reports all bad files in one ``BadFilesError``, or leaves their samples out
    with ``skip_bad_files``; see ``data.bad_files``.
    """

    dataset_name = DATASET_NAME
    clip_tolerance = BOX_EDGE_TOLERANCE_PX

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
        skip_bad_files: bool = False,
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
        self.skip_bad_files = bool(skip_bad_files)
        if isinstance(years, (str, int)):
            years = (years,)
        self.years = tuple(str(y) for y in years)
        if not self.years:
            raise ConfigError("years must name at least one VOC year, e.g. [2007] or [2007, 2012]")
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
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: VOCDetection | None = None

    @property
    def input_normalization(self) -> Normalization:
        """How the task normalises the uint8 batches on the device."""
        return detection_normalization(self.normalization)

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
                            transform=eval_pipeline(self.image_size, self.normalization))

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

    def _train_parts(self, held: dict[str, set[str]], validation: bool) -> list[VOCDetection]:
        parts = []
        for year in self.years:
            ids = read_split_ids(self.year_dirs[year], self.train_split)
            ids = [i for i in ids if (i in held[year]) == validation]
            if not ids:
                continue
            parts.append(VOCDetection(
                self.year_dirs[year], self.train_split, self.class_names,
                keep_difficult=True if validation else self.keep_difficult_in_train,
                transform=(eval_pipeline(self.image_size, self.normalization) if validation else
                           train_pipeline(self.image_size, self.augmentation, self.normalization)),
                ids=ids))
        return parts

    def setup(self, stage: str | None = None) -> None:
        held = self._held_out_ids() if stage in (None, "fit", "validate") else {}
        train_parts: list[VOCDetection] = []
        val_parts: list[VOCDetection] = []
        test_set = None
        if stage in (None, "fit") and self.train_dataset is None:
            train_parts = self._train_parts(held, validation=False)
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            val_parts = (self._train_parts(held, validation=True) if self.val_fraction > 0
                         else [self._eval_set(self.val_split)])
        # ``fit`` checks the test split too: it is read after training, too late to learn of a bad file.
        if stage in (None, "fit", "test") and self.test_dataset is None:
            test_set = self._eval_set(self.test_split)
        self.check_and_prune([*train_parts, *val_parts, test_set])
        if train_parts:
            self.train_dataset = _concat(train_parts)
        if val_parts:
            self.val_dataset = _concat(val_parts)
        self.test_dataset = test_set or self.test_dataset

    # One base (data.split_datamodule): detection's batch format; the last SSD extra layer is
    # 1x1, so a ragged training batch of one image is dropped there as everywhere.
    def loader_options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "num_workers": self.num_workers,
                "pin_memory": self.pin_memory, "persistent_workers": self.persistent_workers}

    def collate(self, train: bool) -> Callable:
        return collate_detection

    def split_dataset(self, split: str) -> Dataset | None:
        if getattr(self, f"{split}_dataset") is None:
            self.setup(STAGE_OF_SPLIT[split])
        return getattr(self, f"{split}_dataset")

    # The names this datamodule had before the common base.
    @property
    def train_set(self) -> Dataset | None:
        return self.train_dataset

    @property
    def val_set(self) -> Dataset | None:
        return self.val_dataset

    @property
    def test_set(self) -> VOCDetection | None:
        return self.test_dataset
