"""Albumentations pipelines for semantic segmentation (DeepLabv3 training on VOC2012).

Training: random rescale (``scale_range``; None: none, as the thesis' Table 5.5 runs), pad to the crop (image 0, mask ``ignore_index`` so padding never counts
in the loss), random crop, horizontal flip; images stay uint8 (the task applies ImageNet
normalisation on the device, ``data.device_transforms``). Masks are always resampled
with nearest-neighbour interpolation so class ids (and 255) never blend.

Evaluation: whole images at their own size, only normalised (exact VOC evaluation; the loaders
then use batch 1 because sizes differ), or, with ``pad_to``, padded bottom/right to a fixed
square so images can be batched (padded pixels are ignored, but the network sees the zero
border, so scores can differ slightly from whole-image evaluation).
"""
from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255


def train_transform(
    crop_size: int,
    scale_range: Sequence[float] | None = (0.5, 2.0),
    ignore_index: int = IGNORE_INDEX,
) -> A.Compose:
    if crop_size < 1:
        raise ConfigError(f"crop size must be a positive number of pixels, got {crop_size}")
    rescale = []
    if scale_range is not None:
        low, high = (float(s) for s in scale_range)
        if not 0 < low <= high:
            raise ConfigError(f"scale_range must be (low, high) with 0 < low <= high, or null for no "
                              f"rescaling, got {tuple(scale_range)}")
        # RandomScale draws the factor from (1 + low, 1 + high): its limits are offsets from 1.
        rescale = [A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR,
                                 mask_interpolation=cv2.INTER_NEAREST, p=1.0)]
    return A.Compose([
        *rescale,
        A.PadIfNeeded(min_height=crop_size, min_width=crop_size, border_mode=cv2.BORDER_CONSTANT,
                      fill=0, fill_mask=ignore_index),
        A.RandomCrop(height=crop_size, width=crop_size),
        A.HorizontalFlip(p=0.5),
        ToTensorV2(),
    ])


def eval_transform(
    pad_to: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> A.Compose:
    """Whole-image evaluation; ``pad_to`` pads bottom/right to ``pad_to`` x ``pad_to`` (no resize)."""
    steps: list = []
    if pad_to is not None:
        steps.append(A.PadIfNeeded(min_height=pad_to, min_width=pad_to, position="top_left",
                                   border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index))
    steps += [ToTensorV2()]
    return A.Compose(steps)
