"""PASCAL VOC2012 semantic segmentation on its official layout, optionally with the SBD extra masks.

Masks are class indices (0 background, 1..20 objects, 255 ignored boundaries/difficult areas):
palette ('P') PNGs in ``SegmentationClass`` (their raw indices are the classes; the palette is
only for display) and plain 8-bit ('L') PNGs in ``SegmentationClassAug``. RGB colour masks are
refused: reading colours as classes would silently train on garbage.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from data.bad_files import BadFile, SampleCheck, SplitCheck
from data.check_runner import check_samples
from data.errors import DatasetNotFoundError, check_num_classes
from data.file_checks import image_problem, mask_problem
from data.io import read_rgb
from data.split_datamodule import SplitDataModule
from data.registry import register_datamodule
from data.segmentation_pipeline import SegmentationTrainPipeline
from data.segmentation_transforms import IGNORE_INDEX, eval_transform
from errors import ConfigError, DataError

VOC_SEG_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

VOC2012_LAYOUT = """\
<root>/VOCdevkit/VOC2012/
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png            palette PNGs: class index per pixel, 255 = ignore
  ImageSets/Segmentation/train.txt      one image id per line
  ImageSets/Segmentation/val.txt
  SegmentationClassAug/<id>.png         only with use_sbd_aug: SBD masks, 8-bit index PNGs
  ImageSets/Segmentation/train_aug.txt  only with use_sbd_aug: the 10582 training ids
"""

MASK_DIR = "SegmentationClass"
SBD_MASK_DIR = "SegmentationClassAug"
SBD_TRAIN_SPLIT = "train_aug"


def find_voc2012(root: str | Path) -> Path:
    """The ``VOC2012`` folder under ``root`` (``root/VOCdevkit/VOC2012``, or ``root`` itself)."""
    root = Path(root).expanduser()
    for candidate in (root / "VOCdevkit" / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir() and (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    raise DatasetNotFoundError.describe(
        root.absolute() / "VOCdevkit" / "VOC2012", "PASCAL VOC2012 segmentation", VOC2012_LAYOUT,
        problem="Download VOCtrainval_11-May-2012.tar and extract it under data.root "
             "(paths.data_dir or COG_DATA_DIR).",
    )


def read_split(voc_dir: Path, split: str) -> list[str]:
    """Image ids of ``ImageSets/Segmentation/<split>.txt``.

    Lines may also be ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`` (a common
    distribution of train_aug.txt); the id is then the stem of the first path.
    """
    path = voc_dir / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.txt"))
        raise DatasetNotFoundError.describe(
            path, "PASCAL VOC2012 segmentation", VOC2012_LAYOUT,
            problem=f"Split file '{split}.txt' is missing; splits present: {available or 'none'}.",
        )
    ids = [Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"split file {path} lists no image ids")
    return ids


def read_mask(path: Path) -> np.ndarray:
    """Class-index mask [H, W] uint8 from a palette ('P') or 8-bit grey ('L') PNG."""
    with Image.open(path) as image:
        if image.mode in ("P", "L"):
            return np.array(image)
        if image.mode in ("RGB", "RGBA"):
            raise DataError(
                f"{path} is an {image.mode} colour mask; segmentation masks must hold class indices "
                "(palette 'P' PNGs as in VOC2012 SegmentationClass, or 8-bit 'L' PNGs as in "
                "SegmentationClassAug). Convert the colours to VOC class indices (0-20, 255 ignore) "
                "and save as a palette or grey PNG."
            )
        raise DataError(f"{path}: unsupported mask mode {image.mode!r}; expected 'P' or 'L' index PNGs")


def check_segmentation_sample(image_path: Path, mask_path: Path, leave_out: str, num_classes: int,
                              ignore_index: int) -> SampleCheck:
    """Check one image and its mask (readable, index mode, same size, class ids in range)."""
    bad = []
    size, problem = image_problem(image_path)
    if problem:
        bad.append(BadFile(str(image_path), f"image {problem}",
                           f"restore the original file from the dataset archive, or {leave_out}"))
    problem = mask_problem(mask_path, size, num_classes, ignore_index)
    if problem:
        bad.append(BadFile(str(mask_path), f"mask {problem}",
                           f"replace it with a class-index mask of its image's size (palette 'P' or 8-bit "
                           f"'L' PNG, values 0..{num_classes - 1}, {ignore_index} = ignore), or {leave_out}"))
    return SampleCheck(bad)


class VOCSegmentation(Dataset):
    """``(image [3,H,W] uint8, mask [H,W] long)`` pairs of one split; 255 = ignore (images are
    normalised on the device, ``data.device_transforms``).

    A file the split lists but that is missing raises ``DatasetNotFoundError`` here, unless
    ``require_files=False``: the datamodule then reports it with the other bad files found by
    :meth:`check`.
    """

    def __init__(
        self,
        voc_dir: str | Path,
        split: str = "train",
        mask_dir: str = MASK_DIR,
        transform: Callable | None = None,
        num_classes: int = len(VOC_SEG_CLASSES),
        ignore_index: int = IGNORE_INDEX,
        require_files: bool = True,
    ) -> None:
        self.voc_dir = Path(voc_dir)
        self.split = split
        self.mask_dir = mask_dir
        self.ids = read_split(self.voc_dir, split)
        self.image_paths = [self.voc_dir / "JPEGImages" / f"{i}.jpg" for i in self.ids]
        self.mask_paths = [self.voc_dir / mask_dir / f"{i}.png" for i in self.ids]
        missing = [p for pair in zip(self.image_paths, self.mask_paths) for p in pair if not p.is_file()]
        if missing and (require_files or len(missing) == 2 * len(self.ids)):
            shown = "\n  ".join(str(p) for p in missing[:5])
            raise DatasetNotFoundError.describe(
                missing[0], "PASCAL VOC2012 segmentation", VOC2012_LAYOUT,
                problem=f"{len(missing)} file(s) listed by split '{split}' are missing, e.g.:\n  {shown}",
            )
        self.transform = transform if transform is not None else eval_transform()
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.ids)

    def check(self) -> SplitCheck:
        """Check every image and mask of the split (cached; see ``data.check_runner``)."""
        paths = dict(zip(self.ids, zip(self.image_paths, self.mask_paths)))

        def check_one(image_id: str) -> SampleCheck:
            leave_out = f"remove the id {image_id} from ImageSets/Segmentation/{self.split}.txt"
            return check_segmentation_sample(*paths[image_id], leave_out, self.num_classes, self.ignore_index)

        return check_samples(
            list(paths.items()), check_one,
            dataset_dir=self.voc_dir, split=f"segmentation-{self.split}-{self.mask_dir}",
            params={"kind": "voc_segmentation", "num_classes": self.num_classes, "ignore_index": self.ignore_index},
            label=f"{self.voc_dir.name} {self.split} ({self.mask_dir})")

    @property
    def check_key(self) -> tuple:
        """Which files ``check`` reads (datasets with equal keys are checked once)."""
        return (self.split, self.mask_dir)

    def leave_out(self, ids: set[str]) -> None:
        """Drop the samples of ``ids`` (bad files skipped with ``skip_bad_files``)."""
        keep = [n for n, i in enumerate(self.ids) if i not in ids]
        self.ids = [self.ids[n] for n in keep]
        self.image_paths = [self.image_paths[n] for n in keep]
        self.mask_paths = [self.mask_paths[n] for n in keep]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image [H,W,3] uint8 and mask [H,W] uint8 as stored, checked for size and class ids."""
        image = read_rgb(self.image_paths[index])
        mask = self.load_mask(index)
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"image {self.image_paths[index]} is {image.shape[1]}x{image.shape[0]} but its mask "
                f"{self.mask_paths[index]} is {mask.shape[1]}x{mask.shape[0]}"
            )
        return image, mask

    def load_mask(self, index: int) -> np.ndarray:
        """Mask [H,W] uint8 as stored, checked for class ids."""
        mask = read_mask(self.mask_paths[index])
        labelled = mask[mask != self.ignore_index]
        if labelled.size and labelled.max() >= self.num_classes:
            bad = sorted(set(np.unique(labelled[labelled >= self.num_classes]).tolist()))
            raise DataError(
                f"mask {self.mask_paths[index]} holds class ids {bad}, outside 0..{self.num_classes - 1} "
                f"(and {self.ignore_index} = ignore); check num_classes/class_names for this dataset"
            )
        return mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if getattr(self.transform, "reads_images", False):
            # data.segmentation_pipeline: it decides the decode size itself, so it gets the path.
            out = self.transform(path=self.image_paths[index], mask=self.load_mask(index))
        else:
            image, mask = self.load(index)
            out = self.transform(image=image, mask=mask)
        return out["image"], out["mask"].long()


def collate_same_size(batch: list[tuple[torch.Tensor, torch.Tensor]]):
    """default_collate with a clear error when padded evaluation images still differ in size."""
    sizes = {tuple(image.shape[-2:]) for image, _ in batch}
    if len(sizes) > 1:
        raise ConfigError(
            f"evaluation images of different sizes {sorted(sizes)} cannot be batched: val_size is "
            "smaller than an image; set data.val_size to at least the largest image side "
            "(500 for VOC2012) or to null (whole images, batch 1)"
        )
    return default_collate(batch)


@register_datamodule
class VOCSegmentationDataModule(SplitDataModule):
    """VOC2012 segmentation (optionally SBD-augmented training set) for DeepLabv3.

    ``root`` is the folder holding ``VOCdevkit``. Training uses random scale (``scale_range``),
    pad and ``crop_size`` x ``crop_size`` crops. Validation/test use whole images with batch 1
    (exact VOC evaluation) unless ``val_size`` is set: images are then padded to
    ``val_size`` x ``val_size`` (ignored padding, no resize) and batched with ``batch_size``.
    VOC2012 test masks are not public, so ``test_split`` defaults to ``val_split``.
    ``use_sbd_aug`` trains on the ``SegmentationClassAug`` masks; a ``train_split`` left at
    "train" then means ``train_aug``. Validation always reads ``SegmentationClass``.
    Building a split checks each of its images and masks; ``setup("fit")`` builds (and checks)
    train, val and test, and reports all bad files in one ``BadFilesError``, or leaves their
    samples out with ``skip_bad_files``; see ``data.bad_files``.
    """

    dataset_name = "PASCAL VOC2012 segmentation"

    def __init__(
        self,
        root: str | Path,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        use_sbd_aug: bool = False,
        batch_size: int = 8,
        num_workers: int = 2,
        crop_size: int = 480,
        scale_range: Sequence[float] = (0.5, 2.0),
        class_names: Sequence[str] = VOC_SEG_CLASSES,
        num_classes: int | None = None,
        val_size: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        skip_bad_files: bool = False,
    ) -> None:
        super().__init__()
        self.class_names = list(class_names)
        check_num_classes(num_classes, self.class_names, "background included")
        self.skip_bad_files = bool(skip_bad_files)
        if use_sbd_aug and train_split == "train":
            train_split = SBD_TRAIN_SPLIT
        self.root = Path(root)
        self.train_split, self.val_split = train_split, val_split
        self.test_split = test_split or val_split
        self.use_sbd_aug = use_sbd_aug
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.crop_size = int(crop_size)
        self.scale_range = None if scale_range is None else tuple(scale_range)
        self.val_size, self.ignore_index = val_size, ignore_index
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        # Fail at construction, before a model is built, when the dataset is not there.
        self.voc_dir = find_voc2012(self.root)
        self.datasets: dict[str, VOCSegmentation] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def validates_on_test(self) -> bool:
        """Whether validation reads the test images (VOC2012's test masks are not public, so
        by default both are ``val``: a checkpoint selected on ``val/miou`` is test-selected)."""
        return self.val_split == self.test_split

    def dataset(self, stage: str) -> VOCSegmentation:
        """The dataset of ``stage`` (train|val|test), built and checked on first use."""
        self._build([stage])
        return self.datasets[stage]

    def _new_dataset(self, stage: str) -> VOCSegmentation:
        if stage == "train":
            split, transform = self.train_split, SegmentationTrainPipeline(self.crop_size, self.scale_range,
                                                                           self.ignore_index)
        elif stage in ("val", "test"):
            split = self.val_split if stage == "val" else self.test_split
            transform = eval_transform(self.val_size, self.ignore_index)
        else:
            raise ValueError(f"stage must be train, val or test, got {stage!r}")
        mask_dir = SBD_MASK_DIR if stage == "train" and self.use_sbd_aug else MASK_DIR
        return VOCSegmentation(self.voc_dir, split, mask_dir, transform, self.num_classes, self.ignore_index,
                               require_files=False)

    def _build(self, stages: list[str]) -> None:
        """Build the datasets of ``stages`` not built yet, check all their files (each split
        once) and report every bad file together, or leave them out with ``skip_bad_files``."""
        new = {stage: self._new_dataset(stage) for stage in dict.fromkeys(stages) if stage not in self.datasets}
        if not new:
            return
        self.check_and_prune(new.values())
        self.datasets.update(new)

    def setup(self, stage: str | None = None) -> None:
        # ``fit`` checks the test split too: it is read after training, too late to learn of a bad file.
        stages = {"fit": ["train", "val", "test"], "validate": ["val"], "test": ["test"]}
        self._build(stages.get(stage, ["train", "val", "test"]))
        if stage in (None, "fit"):
            train, val = self.dataset("train"), self.dataset("val")
            leaked = set(train.ids) & set(val.ids)
            if leaked:
                raise DataError(
                    f"{len(leaked)} image(s) of split '{self.val_split}' are also in the training split "
                    f"'{self.train_split}' (e.g. {sorted(leaked)[:3]}); use a training list without "
                    "the validation images (the usual train_aug.txt excludes VOC2012 val)"
                )

    # One base (data.split_datamodule): the image-pooling branch of ASPP has BatchNorm on 1x1
    # maps, so a ragged last training batch of one image is dropped there; evaluation runs whole
    # images at batch 1 (exact VOC evaluation) unless val_size pads them to one size.
    def loader_options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "num_workers": self.num_workers,
                "pin_memory": self.pin_memory, "persistent_workers": self.persistent_workers}

    def collate(self, train: bool) -> Callable:
        return default_collate if train else collate_same_size

    def eval_batch_size(self) -> int:
        return 1 if self.val_size is None else self.batch_size

    def split_dataset(self, split: str) -> VOCSegmentation:
        return self.dataset(split)  # built and checked on first use, that split alone

    @property
    def train_dataset(self) -> VOCSegmentation | None:
        return self.datasets.get("train")

    @property
    def val_dataset(self) -> VOCSegmentation | None:
        return self.datasets.get("val")

    @property
    def test_dataset(self) -> VOCSegmentation | None:
        return self.datasets.get("test")
