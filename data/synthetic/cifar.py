"""Synthetic classification set in CIFAR-10's python layout: ``root/cifar-10-batches-py``
(pickle batches data_batch_1..5, test_batch, batches.meta; 32x32 images).
"""
from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from data.synthetic.folders import (
    SYNTHETIC_FORMAT_VERSION, _check_counts, _check_image_size, _check_num_classes,
    _STREAM_CIFAR, _write_once,
)
from data.synthetic.scenes import (
    SYNTHETIC_CLASSES, render_classification_scene,
)


CIFAR_IMAGE_SIZE = 32
CIFAR_TRAIN_BATCHES = 5


def _cifar_rows(images: Sequence[np.ndarray]) -> np.ndarray:
    """CIFAR's row format: [N, 3072] uint8, each row the red, green, then blue plane (row-major)."""
    return np.stack([image.transpose(2, 0, 1).reshape(-1) for image in images]).astype(np.uint8)


def _write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)  # the official files are Python 2 pickles


def write_cifar10(
    root: str | Path,
    num_classes: int = len(SYNTHETIC_CLASSES),
    images_per_class: int = 50,
    test_images_per_class: int | None = None,
    image_size: int = 64,
    seed: int = 0,
) -> list[str]:
    """Write ``root/cifar-10-batches-py`` in CIFAR-10's python layout: ``data_batch_1``..``5``
    (the training images, shuffled and split evenly), ``test_batch`` and ``batches.meta``
    (``label_names``), pickled dicts with CIFAR's keys (``data`` [N, 3072] uint8, ``labels``,
    ``filenames``, ``batch_label``). Returns the class names (label order).

    Scenes are rendered at ``image_size`` and reduced to 32x32 (box filter).
    ``test_images_per_class`` defaults to a fifth of ``images_per_class`` (at least 1).
    """
    class_names = _check_num_classes(num_classes)
    if test_images_per_class is None:
        test_images_per_class = max(1, images_per_class // 5)
    _check_counts(images_per_class=images_per_class, test_images_per_class=test_images_per_class)
    _check_image_size(image_size)
    params = {
        "kind": "cifar10",
        "format_version": SYNTHETIC_FORMAT_VERSION,
        "num_classes": int(num_classes),
        "images_per_class": int(images_per_class),
        "test_images_per_class": int(test_images_per_class),
        "image_size": int(image_size),
        "seed": int(seed),
        "class_names": class_names,
    }
    pool = list(range(num_classes))

    def render(class_index: int, index: int) -> np.ndarray:
        rng = np.random.default_rng([seed, _STREAM_CIFAR, class_index, index])
        scene = render_classification_scene(rng, image_size, class_index, pool)
        small = Image.fromarray(scene.image).resize((CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE), Image.Resampling.BOX)
        return np.asarray(small)

    def batch(label_text: str, samples: Sequence[tuple[int, int]]) -> dict:
        return {
            "batch_label": label_text,
            "labels": [class_index for class_index, _ in samples],
            "data": _cifar_rows([render(c, i) for c, i in samples]),
            "filenames": [f"{class_names[c]}_{i:05d}.png" for c, i in samples],
        }

    def write(folder: Path) -> None:
        # Image indices: training images first, then the test images of each class.
        train = [(c, i) for c in range(num_classes) for i in range(images_per_class)]
        test = [(c, images_per_class + i) for c in range(num_classes) for i in range(test_images_per_class)]
        order = np.random.default_rng([seed, _STREAM_CIFAR]).permutation(len(train))
        chunks = np.array_split(order, CIFAR_TRAIN_BATCHES)
        for number, chunk in enumerate(chunks, start=1):
            _write_pickle(folder / f"data_batch_{number}",
                          batch(f"training batch {number} of {CIFAR_TRAIN_BATCHES}", [train[k] for k in chunk]))
        _write_pickle(folder / "test_batch", batch("testing batch 1 of 1", test))
        _write_pickle(folder / "batches.meta", {"num_cases_per_batch": len(chunks[0]),
                                                "label_names": class_names, "num_vis": 3 * CIFAR_IMAGE_SIZE ** 2})

    _write_once(Path(root) / "cifar-10-batches-py", params, write)
    return class_names
