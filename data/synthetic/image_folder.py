"""Synthetic classification set in the class-folder layout: ``root/<class>/<idx>.jpg`` (Flowers /
Caltech style; every n-th image a grayscale JPEG so the readers' RGB conversion runs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from data.synthetic.folders import (
    SYNTHETIC_FORMAT_VERSION, _check_counts, _check_image_size, _check_num_classes, _save_jpeg,
    _STREAM_IMAGE_FOLDER, _read_marker, _write_once,
)
from data.synthetic.scenes import (
    SYNTHETIC_CLASSES, render_classification_scene,
)


# Every n-th image of each class in the image folder is stored as a grayscale ("L") JPEG so
# the RGB conversion path of the readers is exercised.
_GRAYSCALE_EVERY = 20
_GRAYSCALE_OFFSET = 3

def write_image_folder(
    root: str | Path,
    num_classes: int = len(SYNTHETIC_CLASSES),
    images_per_class: int = 40,
    image_size: int = 128,
    seed: int = 0,
) -> list[str]:
    """Write ``root/<class>/<idx>.jpg`` (square ``image_size`` JPEGs); returns the class names in
    the image-folder readers' label order (sorted by name).

    Each image holds one dominant object of its class plus small distractors of other classes.
    Every 20th image of a class (index 3, 23, ...) is a grayscale JPEG. Reuses an existing
    dataset written with the same parameters.
    """
    class_names = _check_num_classes(num_classes)
    _check_counts(images_per_class=images_per_class)
    _check_image_size(image_size)
    params = {
        "kind": "image_folder",
        "format_version": SYNTHETIC_FORMAT_VERSION,
        "num_classes": int(num_classes),
        "images_per_class": int(images_per_class),
        "image_size": int(image_size),
        "seed": int(seed),
        "class_names": class_names,
    }
    pool = list(range(num_classes))

    def write(folder: Path) -> None:
        for class_index, name in enumerate(class_names):
            (folder / name).mkdir()
            for index in range(images_per_class):
                rng = np.random.default_rng([seed, _STREAM_IMAGE_FOLDER, class_index, index])
                scene = render_classification_scene(rng, image_size, class_index, pool)
                image = Image.fromarray(scene.image)
                if index % _GRAYSCALE_EVERY == _GRAYSCALE_OFFSET:
                    image = image.convert("L")
                _save_jpeg(image, folder / name / f"{index:05d}.jpg")

    _write_once(Path(root), params, write)
    return sorted(class_names)


def image_folder_files(root: str | Path) -> list[Path]:
    """Every image a complete synthetic image folder at ``root`` holds, from its marker
    (empty when there is no marker)."""
    params = _read_marker(Path(root)) or {}
    return [Path(root) / name / f"{index:05d}.jpg"
            for name in params.get("class_names", []) for index in range(params.get("images_per_class", 0))]


def prepare_synthetic_classification(
    root: str | Path,
    image_size: int = 128,
    num_classes: int = len(SYNTHETIC_CLASSES),
    images_per_class: int = 40,
    seed: int = 0,
) -> Path:
    """Write (once) the synthetic image folder under ``root`` and return its path.

    Read the returned folder with ``ImageFolderDataModule(root=..., layout="imagefolder")``.
    """
    folder = Path(root) / "synthetic_imagefolder"
    write_image_folder(folder, num_classes=num_classes, images_per_class=images_per_class, image_size=image_size, seed=seed)
    return folder
