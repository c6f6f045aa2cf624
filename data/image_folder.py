"""Readers for the classification datasets' on-disk layouts and their train/val split.

Layouts (``layout=`` in the datamodule):

- ``imagefolder``: ``root/<class>/**/<image>`` (the synthetic dataset, any ImageFolder tree)
- ``flowers``: the same, or TensorFlow's ``root/flower_photos/<class>/<image>``
- ``caltech101``: ``root/101_ObjectCategories/<class>/image_XXXX.jpg``; ``BACKGROUND_Google``
  is excluded unless ``include_background``
- ``caltech256``: ``root/256_ObjectCategories/NNN.name/NNN_XXXX.jpg``, classes ordered by the
  numeric prefix; ``257.clutter`` is included (the 257 classes) unless ``include_clutter=False``

The datasets have no official split, so a seeded stratified split holds out ``val_fraction``
of every class; that held-out part is both the validation and the test set.
"""
from __future__ import annotations

import logging
import math
import os
import re
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.bad_files import BadFile, SampleCheck, SplitCheck
from data.check_runner import check_samples
from data.errors import DatasetNotFoundError
from data.file_checks import image_problem
from errors import ConfigError, DataError

log = logging.getLogger("data")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
LAYOUTS = ("imagefolder", "flowers", "caltech101", "caltech256")
CALTECH101_BACKGROUND = "BACKGROUND_Google"
CALTECH256_CLUTTER = "257.clutter"
_CALTECH256_CLASS = re.compile(r"^(\d+)\.(.+)$")

Sample = tuple[str, int]  # (image path, label)

_EXPECTED = {
    "imagefolder": (
        "<root>/\n"
        "├── <class_a>/\n"
        "│   ├── 0001.jpg\n"
        "│   └── ...\n"
        "└── <class_b>/\n"
        "    └── ..."
    ),
    "flowers": (
        "<root>/                 (or <root>/flower_photos/, as in TensorFlow's flower_photos.tgz)\n"
        "├── daisy/\n"
        "│   ├── 100080576_f52e8ee070_n.jpg\n"
        "│   └── ...\n"
        "├── dandelion/\n"
        "├── roses/\n"
        "├── sunflowers/\n"
        "└── tulips/"
    ),
    "caltech101": (
        "<root>/\n"
        "└── 101_ObjectCategories/\n"
        "    ├── accordion/\n"
        "    │   ├── image_0001.jpg\n"
        "    │   └── ...\n"
        "    ├── airplanes/\n"
        "    ├── ...\n"
        "    └── BACKGROUND_Google/   (excluded unless data.include_background=true)"
    ),
    "caltech256": (
        "<root>/\n"
        "└── 256_ObjectCategories/\n"
        "    ├── 001.ak47/\n"
        "    │   ├── 001_0001.jpg\n"
        "    │   └── ...\n"
        "    ├── 002.american-flag/\n"
        "    ├── ...\n"
        "    └── 257.clutter/         (included unless data.include_clutter=false)"
    ),
}
_DATASET_NAMES = {"imagefolder": "Image-folder", "flowers": "Flowers", "caltech101": "Caltech-101", "caltech256": "Caltech-256"}


@dataclass(frozen=True)
class ImageFolderIndex:
    """All images found for a dataset: class names (label order) and sorted samples."""

    root: Path
    class_names: list[str]
    samples: list[Sample]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class ClassificationSplit:
    """Train and held-out samples with labels 0..num_classes-1 into ``class_names``."""

    class_names: list[str]
    train: list[Sample]
    val: list[Sample]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_class_counts(self) -> list[int]:
        return np.bincount([label for _, label in self.train], minlength=self.num_classes).astype(int).tolist()

    @property
    def val_class_counts(self) -> list[int]:
        return np.bincount([label for _, label in self.val], minlength=self.num_classes).astype(int).tolist()


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _list_images(folder: Path, recursive: bool) -> list[str]:
    """The images of one class folder, each real file once.

    Symbolic links are followed, but a folder already visited (a link loop such as
    ``chair/loop -> .``, or two links to one folder) is skipped with a warning, and several
    paths to one real file (file links) count once: the shortest path, then the first by name,
    is kept. Otherwise os.walk would descend a loop until the path is too long, indexing every
    image dozens of times, in the training and held-out splits at once.
    """
    if not recursive:
        found = [str(folder / e.name) for e in os.scandir(folder) if e.is_file() and _is_image(e.name)]
        return _once_per_real_file(found)
    found, visited, loops = [], set(), []
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        real = os.stat(directory)
        if (real.st_dev, real.st_ino) in visited:
            loops.append(directory)
            subdirs[:] = []
            continue
        visited.add((real.st_dev, real.st_ino))
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        found += [os.path.join(directory, name) for name in files if _is_image(name)]
    if loops:
        log.warning("skipped %d folder(s) already indexed through another path (symbolic link loop or "
                    "duplicate link): %s", len(loops), ", ".join(sorted(loops)[:5]))
    return _once_per_real_file(found)


def _once_per_real_file(paths: list[str]) -> list[str]:
    kept: dict[str, str] = {}
    for path in sorted(paths, key=lambda p: (p.count(os.sep), p)):
        kept.setdefault(os.path.realpath(path), path)
    return sorted(kept.values())


def _class_dirs(folder: Path) -> list[str]:
    return [e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")]


def _index_class_folders(
    dataset_dir: Path,
    class_dirs: Sequence[str],
    layout: str,
    recursive: bool,
) -> ImageFolderIndex:
    """Label the images of each class folder in the given order; every folder must hold images."""
    samples: list[Sample] = []
    empty = []
    for label, name in enumerate(class_dirs):
        images = _list_images(dataset_dir / name, recursive)
        if not images:
            empty.append(name)
        samples += [(path, label) for path in images]
    if not samples:
        raise DatasetNotFoundError.describe(
            dataset_dir, _DATASET_NAMES[layout], _EXPECTED[layout],
            f"The class folders there hold no images ({', '.join(sorted(IMAGE_EXTENSIONS))}).",
        )
    if empty:
        raise DataError(
            f"Class folder(s) without any image under '{dataset_dir}': {', '.join(empty)}. "
            "An empty class cannot be trained or evaluated; the download is probably incomplete. "
            "Re-extract the dataset or remove those folders."
        )
    return ImageFolderIndex(dataset_dir, list(class_dirs), samples)


def _first_existing(candidates: Sequence[Path]) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def _require_dir(root: Path, layout: str) -> None:
    if not root.is_dir():
        raise DatasetNotFoundError.describe(root, _DATASET_NAMES[layout], _EXPECTED[layout], "That folder does not exist.")


def index_image_folder(root: str | Path, layout: str = "imagefolder") -> ImageFolderIndex:
    """One sub-folder per class (sorted by name), images searched recursively."""
    root = Path(root)
    _require_dir(root, layout)
    classes = sorted(_class_dirs(root))
    if not classes:
        raise DatasetNotFoundError.describe(root, _DATASET_NAMES[layout], _EXPECTED[layout], "It has no class sub-folders.")
    return _index_class_folders(root, classes, layout, recursive=True)


def index_flowers(root: str | Path) -> ImageFolderIndex:
    """Flowers: class folders in ``root`` or in TensorFlow's ``root/flower_photos``."""
    root = Path(root)
    _require_dir(root, "flowers")
    dataset_dir = root / "flower_photos" if (root / "flower_photos").is_dir() else root
    return index_image_folder(dataset_dir, layout="flowers")


def _find_caltech_dir(root: Path, folder_name: str, download_dir: str, layout: str) -> Path:
    _require_dir(root, layout)
    # Also accept torchvision's download location and ``root`` being the category folder itself.
    found = _first_existing([root / folder_name, root / download_dir / folder_name] + ([root] if root.name == folder_name else []))
    if found is None:
        raise DatasetNotFoundError.describe(
            root, _DATASET_NAMES[layout], _EXPECTED[layout], f"No '{folder_name}' folder inside it."
        )
    return found


def index_caltech101(root: str | Path, include_background: bool = False) -> ImageFolderIndex:
    """Caltech-101: 101 classes sorted by name (+ ``BACKGROUND_Google`` when asked)."""
    dataset_dir = _find_caltech_dir(Path(root), "101_ObjectCategories", "caltech101", "caltech101")
    classes = sorted(c for c in _class_dirs(dataset_dir) if include_background or c != CALTECH101_BACKGROUND)
    if not classes:
        raise DatasetNotFoundError.describe(dataset_dir, "Caltech-101", _EXPECTED["caltech101"], "It has no class folders.")
    return _index_class_folders(dataset_dir, classes, "caltech101", recursive=False)


def index_caltech256(root: str | Path, include_clutter: bool = True) -> ImageFolderIndex:
    """Caltech-256: ``NNN.name`` folders ordered by NNN (257 classes with ``257.clutter``)."""
    dataset_dir = _find_caltech_dir(Path(root), "256_ObjectCategories", "caltech256", "caltech256")
    numbered = [(int(m.group(1)), name) for name in _class_dirs(dataset_dir) if (m := _CALTECH256_CLASS.match(name))]
    classes = [name for _, name in sorted(numbered) if include_clutter or name != CALTECH256_CLUTTER]
    if not classes:
        raise DatasetNotFoundError.describe(
            dataset_dir, "Caltech-256", _EXPECTED["caltech256"], "It has no 'NNN.name' class folders."
        )
    return _index_class_folders(dataset_dir, classes, "caltech256", recursive=False)


def index_classification_dataset(
    root: str | Path, layout: str, include_background: bool = False, include_clutter: bool = True
) -> ImageFolderIndex:
    """Find and index a dataset given its layout name (one of :data:`LAYOUTS`)."""
    readers: dict[str, Callable[[], ImageFolderIndex]] = {
        "imagefolder": lambda: index_image_folder(root),
        "flowers": lambda: index_flowers(root),
        "caltech101": lambda: index_caltech101(root, include_background),
        "caltech256": lambda: index_caltech256(root, include_clutter),
    }
    if layout not in readers:
        raise ConfigError(f"Unknown classification layout '{layout}'; choose one of {', '.join(LAYOUTS)}.")
    return readers[layout]()


def held_out_count(class_size: int, val_fraction: float) -> int:
    """round(val_fraction * n), at least 1 when the class has >= 2 images, never all of them."""
    if val_fraction <= 0 or class_size < 2:
        return 0
    return min(max(1, math.floor(val_fraction * class_size + 0.5)), class_size - 1)


def stratified_split(index: ImageFolderIndex, val_fraction: float = 0.1, seed: int = 42) -> ClassificationSplit:
    """Hold out ``val_fraction`` of each class (see :func:`held_out_count`), seeded.

    Each class is shuffled with its own generator seeded by (seed, class name), so a class's
    split does not change when other classes are added or removed (e.g. the background class).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    by_class: list[list[str]] = [[] for _ in index.class_names]
    for path, label in index.samples:
        by_class[label].append(path)
    train: list[Sample] = []
    val: list[Sample] = []
    for label, (name, paths) in enumerate(zip(index.class_names, by_class)):
        paths = sorted(paths)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
        order = rng.permutation(len(paths))
        held = held_out_count(len(paths), val_fraction)
        val += [(paths[i], label) for i in sorted(order[:held])]
        train += [(paths[i], label) for i in sorted(order[held:])]
    return ClassificationSplit(list(index.class_names), train, val)


def top_class_count(num_classes: int, top_fraction: float) -> int:
    """How many classes ``top_fraction`` keeps: round half up, at least one."""
    return max(1, math.floor(top_fraction * num_classes + 0.5))


def keep_top_classes(split: ClassificationSplit, top_fraction: float) -> ClassificationSplit:
    """Keep the ``top_fraction`` of classes with the most training samples, relabelled 0..K-1.

    Ties are broken by the original label; the kept classes stay in their original order.
    """
    if not 0.0 < top_fraction <= 1.0:
        raise ConfigError(f"top_fraction must be in (0, 1], got {top_fraction}.")
    counts = split.train_class_counts
    keep = top_class_count(split.num_classes, top_fraction)
    ranked = sorted(range(split.num_classes), key=lambda label: (-counts[label], label))
    kept = sorted(ranked[:keep])
    relabel = {old: new for new, old in enumerate(kept)}
    return ClassificationSplit(
        [split.class_names[old] for old in kept],
        [(path, relabel[label]) for path, label in split.train if label in relabel],
        [(path, relabel[label]) for path, label in split.val if label in relabel],
    )


def dataset_name(layout: str) -> str:
    return _DATASET_NAMES.get(layout, layout)


def check_image_folder(index: ImageFolderIndex) -> tuple[SplitCheck, set[str]]:
    """Check (decode) every image of ``index``, cached; returns the check and the bad sample paths."""
    root = Path(index.root)
    by_key = {os.path.relpath(path, root): path for path, _ in index.samples}

    def check_one(key: str) -> SampleCheck:
        _, problem = image_problem(Path(by_key[key]))
        if problem is None:
            return SampleCheck()
        return SampleCheck([BadFile(by_key[key], f"image {problem}",
                                    "replace it with the original file from the dataset archive, or delete it")])

    check = check_samples([(key, (Path(path),)) for key, path in by_key.items()], check_one,
                          dataset_dir=root, split="classification", params={"kind": "image_folder"},
                          label=f"{root.name} images")
    return check, {by_key[key] for key in check.bad}


def leave_out_samples(split: ClassificationSplit, paths: Collection[str]) -> ClassificationSplit:
    """``split`` without the samples of ``paths``; every class must keep a training image."""
    if not paths:
        return split
    paths = set(paths)
    left = ClassificationSplit(list(split.class_names), [s for s in split.train if s[0] not in paths],
                               [s for s in split.val if s[0] not in paths])
    emptied = [name for name, count in zip(left.class_names, left.train_class_counts) if count == 0]
    if emptied:
        raise DataError(
            f"Class(es) {', '.join(emptied)} have no usable training image once the bad files are left out; "
            "fix those files, or remove the class folder(s)."
        )
    return left


def build_classification_split(
    root: str | Path,
    layout: str = "imagefolder",
    val_fraction: float = 0.1,
    seed: int = 42,
    top_fraction: float | None = None,
    include_background: bool = False,
    include_clutter: bool = True,
    exclude: Collection[str] = (),
    index: ImageFolderIndex | None = None,
) -> ClassificationSplit:
    """Index the dataset (unless ``index`` is given), split it per class, leave out the
    ``exclude`` paths, optionally keep only the top classes.

    Bad files are left out after the split, so skipping them never moves a good image between
    the training and the held-out part.
    """
    if index is None:
        index = index_classification_dataset(root, layout, include_background, include_clutter)
    split = leave_out_samples(stratified_split(index, val_fraction, seed), exclude)
    return keep_top_classes(split, top_fraction) if top_fraction is not None else split
