"""Albumentations pipelines for SSD training and evaluation.

Training follows SSD / mb2-ssd-lite: photometric distortion, zoom-out (expand onto a mean-filled
canvas up to 4x, p=0.5), the SSD min-IoU random crop, horizontal flip, resize to the square input,
ImageNet normalisation. Boxes are ``pascal_voc`` pixels with ``labels`` and ``difficult`` carried
along; boxes thinner than ``min_box_size`` px after any step are dropped.

Two steps are written here because albumentations has no equivalent:
- ``ZoomOut``: ``Pad`` with a random expansion ratio and random placement (``PadIfNeeded`` pads to
  fixed sizes, and shrinking with ``Affine`` would throw away resolution the later crop needs).
- ``SSDRandomCrop``: ``RandomSizedBBoxSafeCrop``/``AtLeastOneBBoxRandomCrop`` keep boxes whole
  or any box; SSD samples a patch (scale 0.3-1, aspect 0.5-2) that overlaps some box with at
  least a randomly chosen IoU and keeps only the boxes whose centres fall inside it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops import functional as fcrops
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.pytorch import ToTensorV2

from errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MEAN_PIXEL = tuple(255.0 * m for m in IMAGENET_MEAN)  # canvas fill: zero after normalisation

# SSD crop modes: None keeps the whole image, 0.0 is an unconstrained patch, the rest are the
# minimum IoU with some ground-truth box.
SSD_CROP_MIN_IOUS: tuple[float | None, ...] = (None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9)


class ZoomOut(A.Pad):
    """Places the image at a random spot of a canvas ``ratio`` x its size, ratio ~ U(1, max_ratio)."""

    def __init__(self, max_ratio: float = 4.0, fill: Sequence[float] | float = MEAN_PIXEL,
                 p: float = 0.5) -> None:
        super().__init__(padding=0, fill=tuple(fill) if isinstance(fill, Sequence) else fill,
                         border_mode=cv2.BORDER_CONSTANT, p=p)
        if max_ratio < 1:
            raise ConfigError(f"ZoomOut max_ratio must be >= 1, got {max_ratio}")
        self.max_ratio = max_ratio

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        ratio = self.py_random.uniform(1.0, self.max_ratio)
        pad_x, pad_y = int(width * ratio) - width, int(height * ratio) - height
        left, top = self.py_random.randint(0, pad_x), self.py_random.randint(0, pad_y)
        return {"pad_left": left, "pad_right": pad_x - left, "pad_top": top, "pad_bottom": pad_y - top}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_ratio", "fill")


def _iou_with_patch(boxes: np.ndarray, patch: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = patch
    iw = np.clip(np.minimum(boxes[:, 2], x1) - np.maximum(boxes[:, 0], x0), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], y1) - np.maximum(boxes[:, 1], y0), 0, None)
    inter = iw * ih
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + (x1 - x0) * (y1 - y0) - inter)


def _centres_inside(boxes: np.ndarray, patch: tuple[int, int, int, int]) -> np.ndarray:
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return (cx > patch[0]) & (cx < patch[2]) & (cy > patch[1]) & (cy < patch[3])


class SSDRandomCrop(BaseCrop):
    """SSD's random patch: a mode from ``min_ious``, then up to ``max_trials`` patches of
    ``min_scale``-1 of each side and aspect ``1/max_aspect``-``max_aspect``; a patch is taken when
    a box whose centre lies inside it has IoU >= the mode (Caffe SSD / torchvision's rule). Boxes
    whose centres leave the patch are dropped. An image without boxes, or a mode that finds no
    patch, tries another mode; after ``max_modes`` the whole image is kept, so no crop can lose
    every box.
    """

    def __init__(self, min_ious: Sequence[float | None] = SSD_CROP_MIN_IOUS, min_scale: float = 0.3,
                 max_aspect: float = 2.0, max_trials: int = 50, max_modes: int = 20, p: float = 1.0) -> None:
        super().__init__(p=p)
        if not 0 < min_scale <= 1:
            raise ConfigError(f"min_scale must be in (0, 1], got {min_scale}")
        if max_aspect < 1:
            raise ConfigError(f"max_aspect must be >= 1, got {max_aspect}")
        self.min_ious = tuple(min_ious)
        self.min_scale, self.max_aspect = min_scale, max_aspect
        self.max_trials, self.max_modes = max_trials, max_modes

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        whole = (0, 0, width, height)
        bboxes = np.asarray(data.get("bboxes", np.zeros((0, 4))), dtype=np.float64)
        if len(bboxes) == 0:
            return {"crop_coords": whole}
        boxes = bboxes[:, :4] * np.array([width, height, width, height])
        rng = self.py_random
        for _ in range(self.max_modes):
            min_iou = rng.choice(self.min_ious)
            if min_iou is None:
                return {"crop_coords": whole}
            for _ in range(self.max_trials):
                w = rng.uniform(self.min_scale * width, width)
                h = rng.uniform(self.min_scale * height, height)
                if not 1 / self.max_aspect <= h / w <= self.max_aspect:
                    continue
                left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
                patch = (int(left), int(top), int(left + w), int(top + h))
                if patch[2] - patch[0] < 1 or patch[3] - patch[1] < 1:
                    continue
                inside = _centres_inside(boxes, patch)
                if inside.any() and _iou_with_patch(boxes[inside], patch).max() >= min_iou:
                    return {"crop_coords": patch}
        return {"crop_coords": whole}

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int],
                        **params: Any) -> np.ndarray:
        if len(bboxes) == 0:
            return bboxes
        height, width = params["shape"][:2]
        pixels = bboxes[:, :4] * np.array([width, height, width, height])
        kept = bboxes[_centres_inside(pixels, crop_coords)]
        if len(kept) == 0:
            return kept
        return fcrops.crop_bboxes_by_coords(kept, crop_coords, (height, width))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_ious", "min_scale", "max_aspect", "max_trials", "max_modes")


def _bbox_params(min_box_size: float) -> A.BboxParams:
    # clip: VOC has a few boxes touching or passing the border by a pixel.
    return A.BboxParams(format="pascal_voc", label_fields=["labels", "difficult"], clip=True,
                        min_width=min_box_size, min_height=min_box_size)


def train_transform(image_size: int = 300, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, zoom_out_max: float = 4.0,
                    min_box_size: float = 1.0) -> A.Compose:
    """SSD training augmentation; call with ``image=, bboxes=, labels=, difficult=``."""
    if image_size < 1:
        raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}")
    fill = tuple(255.0 * m for m in mean)
    return A.Compose(
        [
            # SSD's photometric distortion (torchvision's RandomPhotometricDistort ranges): each
            # step with p=0.5, then a random channel permutation with p=0.5.
            A.ColorJitter(brightness=(0.875, 1.125), contrast=(1, 1), saturation=(1, 1), hue=(0, 0), p=0.5),
            A.ColorJitter(brightness=(1, 1), contrast=(0.5, 1.5), saturation=(1, 1), hue=(0, 0), p=0.5),
            A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(0.5, 1.5), hue=(0, 0), p=0.5),
            A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=(-0.05, 0.05), p=0.5),
            A.ChannelShuffle(p=0.5),
            ZoomOut(max_ratio=zoom_out_max, fill=fill, p=0.5),
            SSDRandomCrop(),
            A.HorizontalFlip(p=0.5),
            A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR),
            A.Normalize(mean=tuple(mean), std=tuple(std)),
            ToTensorV2(),
        ],
        bbox_params=_bbox_params(min_box_size),
    )


def eval_transform(image_size: int = 300, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> A.Compose:
    """Resize to ``image_size`` x ``image_size`` and normalise; boxes follow the resize."""
    if image_size < 1:
        raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}")
    return A.Compose(
        [
            A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR),
            A.Normalize(mean=tuple(mean), std=tuple(std)),
            ToTensorV2(),
        ],
        # No size filter: evaluation must see every ground-truth box, however small.
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "difficult"], clip=True),
    )
