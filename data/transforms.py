"""Classification transforms (albumentations): images in as HxWx3 uint8 RGB, tensors out.

Train: RandomResizedCrop with scale (0.25, 1) rather than Inception's (0.08, 1): the datasets
here are small (a few thousand images), objects are often not centred, and with 8 % crops a
sizeable share of training crops would miss the object entirely; 0.25 keeps the augmentation
strong while the label stays visible. Then a horizontal flip. Images stay uint8; the task
applies ImageNet normalisation on the device (``data.device_transforms``).

Eval: resize the shorter side to ``image_size / 0.875`` (256 for 224) and centre-crop
``image_size``, the usual ImageNet evaluation protocol.
"""
from __future__ import annotations

import os

# albumentations asks PyPI for a newer version on import (a network call with a 2 s timeout,
# repeated in every DataLoader worker process); training needs no such check.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_CROP_SCALE = (0.25, 1.0)
EVAL_CROP_FRACTION = 0.875


def _check_size(image_size: int) -> int:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ConfigError(f"image_size must be an integer >= 8 (pixels), got {image_size!r}.")
    return image_size


def classification_train_transform(image_size: int) -> A.Compose:
    size = _check_size(image_size)
    return A.Compose(
        [
            A.RandomResizedCrop(size=(size, size), scale=TRAIN_CROP_SCALE, ratio=(3 / 4, 4 / 3)),
            A.HorizontalFlip(p=0.5),
            ToTensorV2(),
        ]
    )


def classification_eval_transform(image_size: int) -> A.Compose:
    size = _check_size(image_size)
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=int(round(size / EVAL_CROP_FRACTION))),
            A.CenterCrop(height=size, width=size),
            ToTensorV2(),
        ]
    )
