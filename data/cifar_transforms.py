"""CIFAR transforms (albumentations): 32x32 uint8 RGB in, uint8 tensors at ``image_size`` out
(normalised on the device by the task with ``cifar_normalization``).

Images are resized first (seeds 002 and 004 trained at 224 px), then augmented at that size:

- ``crop_flip``: zero-pad by image_size / 8 (4 px at 32), random crop back, horizontal flip; the
  standard CIFAR augmentation (He et al. 2016, section 4.2).
- ``keras``: seed 004's CIFAR-10 notebook (k-neural-api ``cai.util`` ImageDataGenerator defaults):
  rotation +-15 degrees, width/height shift +-10 %, shear +-0.2 degrees, zoom 0.7-1.3 per axis,
  horizontal flip, borders filled with the nearest pixel.
- ``none``.

Then the normalisation, ``normalize`` (applied on the device):

- ``imagenet`` (default): ImageNet mean / std, as every other dataset of the suite (seed 004's
  notebook fed raw 0-255 pixels).
- ``keras_tf``: ``x / 127.5 - 1`` into [-1, 1], ``keras.applications.mobilenet_v2.preprocess_input``
  (seed 003 built it into its models).
"""
from __future__ import annotations

import cv2

# data.transforms first: it turns off albumentations' update check before albumentations loads.
from data.transforms import IMAGENET_MEAN, IMAGENET_STD, _check_size

import albumentations as A  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from data.device_transforms import Normalization  # noqa: E402
from errors import ConfigError  # noqa: E402

CIFAR_IMAGE_SIZE = 32
AUGMENTATIONS = ("crop_flip", "keras", "none")
NORMALIZATIONS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "keras_tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # (x / 255 - 0.5) / 0.5 = x / 127.5 - 1
}


def _resize(image_size: int) -> list:
    size = _check_size(image_size)
    return [] if size == CIFAR_IMAGE_SIZE else [A.Resize(size, size, interpolation=cv2.INTER_LINEAR)]


def check_normalize(normalize: str) -> str:
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"unknown CIFAR normalisation {normalize!r}; choose one of {sorted(NORMALIZATIONS)}")
    return normalize


def cifar_normalization(normalize: str = "imagenet") -> Normalization:
    """What the task applies on the device to this dataset's uint8 batches."""
    mean, std = NORMALIZATIONS[check_normalize(normalize)]
    return Normalization(tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std))


def _finish(normalize: str = "imagenet") -> list:
    check_normalize(normalize)
    # uint8 out: the task normalises on the device (cifar_normalization, data.device_transforms).
    return [ToTensorV2()]


def _augmentation(name: str, size: int) -> list:
    if name == "crop_flip":
        pad = max(1, size // 8)
        return [A.PadIfNeeded(size + 2 * pad, size + 2 * pad, border_mode=cv2.BORDER_CONSTANT, fill=0),
                A.RandomCrop(size, size), A.HorizontalFlip(p=0.5)]
    if name == "keras":
        return [A.Affine(scale={"x": (0.7, 1.3), "y": (0.7, 1.3)},
                         translate_percent={"x": (-0.1, 0.1), "y": (-0.1, 0.1)},
                         rotate=(-15, 15), shear=(-0.2, 0.2), interpolation=cv2.INTER_LINEAR,
                         border_mode=cv2.BORDER_REPLICATE, p=1.0),
                A.HorizontalFlip(p=0.5)]
    if name == "none":
        return []
    raise ConfigError(f"unknown CIFAR augmentation {name!r}; choose one of {AUGMENTATIONS}")


def cifar_train_transform(image_size: int, augment: str = "crop_flip", normalize: str = "imagenet") -> A.Compose:
    return A.Compose(_resize(image_size) + _augmentation(augment, image_size) + _finish(normalize))


def cifar_eval_transform(image_size: int, normalize: str = "imagenet") -> A.Compose:
    return A.Compose(_resize(image_size) + _finish(normalize))
