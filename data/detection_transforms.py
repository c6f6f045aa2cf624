"""Albumentations pipelines for SSD training and evaluation, step by step.

The datamodules run ``data.detection_pipeline`` instead: the same draws and rules with the
geometry composed into one warp, uint8 out, the photometric distortion and normalisation on the
device. The chains here stay as the step-by-step reference its tests and
``benchmarks.data_pipeline`` compare with (float out, normalised on the CPU).

Boxes are ``pascal_voc`` pixels with ``labels`` and ``difficult`` carried along. Three training
augmentations (``augmentation=``):

- ``"mb2_ssd_lite"``: the behaviour of qfgaohao/pytorch-ssd's ``TrainAugmentation`` (what the
  thesis trained its detector with). On the image as float32 in 0-255, never clipped: additive
  brightness U(-32, 32) (p=0.5); then either [contrast, HSV saturation, HSV hue] or [HSV
  saturation, HSV hue, contrast] (p=0.5 each order), contrast x U(0.5, 1.5), saturation
  x U(0.5, 1.5), hue +- U(0, 18) degrees, each with p=0.5, through OpenCV's float RGB<->HSV;
  then one of the six channel orders (p=0.5). Expand (p=0.5): a canvas U(1, 4) x the size filled
  with 127, the image at ``int(U(0, canvas - size))``. Random sample crop (``SSDRandomCrop``
  with ``rules="mb2_ssd_lite"``). Mirror (p=0.5). Resize to the square input (bilinear). Then
  ``(x - 127) / 128``. No box is dropped for being small.
- ``"ssd_paper"``: the SSD paper's rules as torchvision implements them (RandomPhotometricDistort
  ranges: multiplicative brightness 0.875-1.125, contrast and saturation 0.5-1.5, hue +-0.05,
  channel shuffle), zoom-out onto the mean colour, the min-IoU crop (``rules="ssd_paper"``), flip,
  resize; boxes thinner than 1 px are dropped. ImageNet normalisation by default.
- ``"none"``: resize and normalise only (overfitting checks, debugging).

Written here because no library step has the reference's behaviour: albumentations' and
torchvision's colour ops clip to the valid range and use multiplicative brightness (the reference
adds, and never clips, so its HSV round trip sees values outside 0-255); their zoom-out pads to
fixed sizes or shrinks the image; their SSD crops enforce the min-IoU rule, which the reference
never does (see ``SSDRandomCrop``).
"""
from __future__ import annotations

import os

# albumentations asks PyPI for a newer version on import; training needs no such check.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.augmentations.crops import functional as fcrops  # noqa: E402
from albumentations.augmentations.crops.transforms import BaseCrop  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from errors import ConfigError  # noqa: E402

AUGMENTATIONS = ("mb2_ssd_lite", "ssd_paper", "none")
NORMALIZATIONS = ("mb2_ssd_lite", "imagenet")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MEAN_PIXEL = tuple(255.0 * m for m in IMAGENET_MEAN)  # ssd_paper canvas fill: zero after normalisation
MB2_MEAN, MB2_STD = 127.0, 128.0  # mb2-ssd-lite: (x - 127) / 128 on 0-255 pixels

# SSD crop modes: None keeps the whole image, 0.0 is an unconstrained patch, the rest are the
# minimum IoU with some ground-truth box.
SSD_CROP_MIN_IOUS: tuple[float | None, ...] = (None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
# mb2-ssd-lite's modes, drawn uniformly: whole image, four min-IoUs, an unconstrained patch.
MB2_CROP_MIN_IOUS: tuple[float | None, ...] = (None, 0.1, 0.3, 0.7, 0.9, 0.0)
CROP_RULES = ("mb2_ssd_lite", "ssd_paper")

_CHANNEL_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


class MB2PhotometricDistort(A.ImageOnlyTransform):
    """mb2-ssd-lite's photometric distortion on a float32 0-255 image, never clipped (see the
    module docstring for the steps and their probabilities). Returns float32."""

    def __init__(self, brightness_delta: float = 32.0, contrast: tuple[float, float] = (0.5, 1.5),
                 saturation: tuple[float, float] = (0.5, 1.5), hue_delta: float = 18.0, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.brightness_delta, self.contrast = brightness_delta, tuple(contrast)
        self.saturation, self.hue_delta = tuple(saturation), hue_delta

    def get_params(self) -> dict[str, Any]:
        rng = self.py_random

        def maybe(draw):  # each step happens with p=0.5; None = skipped
            return draw() if rng.random() < 0.5 else None

        return {
            "brightness": maybe(lambda: rng.uniform(-self.brightness_delta, self.brightness_delta)),
            "contrast_first": rng.random() < 0.5,
            "contrast": maybe(lambda: rng.uniform(*self.contrast)),
            "saturation": maybe(lambda: rng.uniform(*self.saturation)),
            "hue": maybe(lambda: rng.uniform(-self.hue_delta, self.hue_delta)),
            "channel_order": maybe(lambda: _CHANNEL_ORDERS[rng.randrange(len(_CHANNEL_ORDERS))]),
        }

    def apply(self, img: np.ndarray, brightness=None, contrast_first=True, contrast=None, saturation=None,
              hue=None, channel_order=None, **params: Any) -> np.ndarray:
        image = img.astype(np.float32, copy=True)
        if brightness is not None:
            image += brightness
        if contrast_first and contrast is not None:
            image *= contrast
        # OpenCV's float HSV: H in degrees [0, 360), S = (V - min) / V, V = max (here 0-255).
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        if saturation is not None:
            hsv[..., 1] *= saturation
        if hue is not None:
            hsv[..., 0] += hue
            hsv[..., 0][hsv[..., 0] > 360.0] -= 360.0
            hsv[..., 0][hsv[..., 0] < 0.0] += 360.0
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first and contrast is not None:
            image *= contrast
        if channel_order is not None:
            image = np.ascontiguousarray(image[..., list(channel_order)])
        return image

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_delta", "contrast", "saturation", "hue_delta")


class ZoomOut(A.Pad):
    """Expand: the image at a random spot of a canvas ``ratio`` x its size, ratio ~ U(1, max_ratio),
    offsets ``int(U(0, canvas - size))`` as mb2-ssd-lite's ``Expand``."""

    def __init__(self, max_ratio: float = 4.0, fill: Sequence[float] | float = MEAN_PIXEL,
                 p: float = 0.5) -> None:
        super().__init__(padding=0, fill=tuple(fill) if isinstance(fill, Sequence) else fill,
                         border_mode=cv2.BORDER_CONSTANT, p=p)
        if max_ratio < 1:
            raise ConfigError(f"ZoomOut max_ratio must be >= 1, got {max_ratio}")
        self.max_ratio = max_ratio

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        rng = self.py_random
        ratio = rng.uniform(1.0, self.max_ratio)
        left, top = int(rng.uniform(0, width * ratio - width)), int(rng.uniform(0, height * ratio - height))
        pad_x, pad_y = int(width * ratio) - width, int(height * ratio) - height
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
    """SSD's random patch. A mode is drawn from ``min_ious`` (None = keep the whole image), then
    up to ``max_trials`` patches with sides U(``min_scale``, 1) x the image's and ``h / w`` in
    [1/``max_aspect``, ``max_aspect``], cut at integer pixels; boxes whose centres leave the
    patch are dropped, the others clipped to it. A mode that finds no patch draws a new mode.

    ``rules="mb2_ssd_lite"`` (qfgaohao/pytorch-ssd, from amdegroot/ssd.pytorch): a patch is taken
    as soon as some box centre lies inside it; the min-IoU of the mode is *not* enforced (the
    reference rejects a patch only if ``min IoU < mode and inf < max IoU``, never true), so every
    crop mode draws from the same distribution and the whole image is kept 1 time in 6 (more
    when patches rarely hold a box centre). Its offsets are U between 1 and ``W - w``
    (``numpy.random.uniform(W - w)`` has ``high=1``), so a patch never starts at pixel 0 when
    ``W - w > 1``. It loops until a mode succeeds; here after ``max_modes`` modes the whole
    image is kept, which changes the result with probability below (5/6)^max_modes.

    ``rules="ssd_paper"`` (Caffe SSD, torchvision's RandomIoUCrop): a patch is taken when a box
    whose centre is inside it has IoU >= the mode; offsets U(0, W - w).

    An image without boxes is returned whole (the reference fails on it).
    """

    def __init__(self, min_ious: Sequence[float | None] | None = None, min_scale: float = 0.3,
                 max_aspect: float = 2.0, max_trials: int = 50, max_modes: int = 100,
                 rules: str = "ssd_paper", p: float = 1.0) -> None:
        super().__init__(p=p)
        if rules not in CROP_RULES:
            raise ConfigError(f"crop rules must be one of {CROP_RULES}, got {rules!r}")
        if not 0 < min_scale <= 1:
            raise ConfigError(f"min_scale must be in (0, 1], got {min_scale}")
        if max_aspect < 1:
            raise ConfigError(f"max_aspect must be >= 1, got {max_aspect}")
        if min_ious is None:
            min_ious = MB2_CROP_MIN_IOUS if rules == "mb2_ssd_lite" else SSD_CROP_MIN_IOUS
        self.min_ious = tuple(min_ious)
        self.min_scale, self.max_aspect = min_scale, max_aspect
        self.max_trials, self.max_modes = max_trials, max_modes
        self.rules = rules

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        bboxes = np.asarray(data.get("bboxes", np.zeros((0, 4))), dtype=np.float64)
        if len(bboxes) == 0:
            return {"crop_coords": (0, 0, width, height)}
        boxes = bboxes[:, :4] * np.array([width, height, width, height])
        return {"crop_coords": self.sample_patch(boxes, width, height)}

    def sample_patch(self, boxes: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
        """The crop ``(x0, y0, x1, y1)`` in integer pixels for ``boxes`` (pixels, [N, 4])."""
        rng = self.py_random
        reference = self.rules == "mb2_ssd_lite"
        for _ in range(self.max_modes):
            min_iou = self.min_ious[rng.randrange(len(self.min_ious))]
            if min_iou is None:
                break
            for _ in range(self.max_trials):
                w = rng.uniform(self.min_scale * width, width)
                h = rng.uniform(self.min_scale * height, height)
                if not 1 / self.max_aspect <= h / w <= self.max_aspect:
                    continue
                if reference:
                    left, top = rng.uniform(1.0, width - w), rng.uniform(1.0, height - h)
                else:
                    left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
                patch = (int(left), int(top), int(left + w), int(top + h))
                if patch[2] - patch[0] < 1 or patch[3] - patch[1] < 1:
                    continue
                inside = _centres_inside(boxes, patch)
                if not inside.any():
                    continue
                if reference or _iou_with_patch(boxes[inside], patch).max() >= min_iou:
                    return patch
        return (0, 0, width, height)

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
        return ("min_ious", "min_scale", "max_aspect", "max_trials", "max_modes", "rules")


def _bbox_params(min_box_size: float) -> A.BboxParams:
    # clip: VOC has a few boxes touching or passing the border by a pixel.
    return A.BboxParams(format="pascal_voc", label_fields=["labels", "difficult"], clip=True,
                        min_width=min_box_size, min_height=min_box_size)


def _check(image_size: int, augmentation: str, normalization: str) -> None:
    if image_size < 1:
        raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}")
    if augmentation not in AUGMENTATIONS:
        raise ConfigError(f"data.augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"data.normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def _normalize(normalization: str) -> A.Normalize:
    if normalization == "mb2_ssd_lite":
        # max_pixel_value=1: mean and std are used as given, on 0-255 values.
        return A.Normalize(mean=(MB2_MEAN,) * 3, std=(MB2_STD,) * 3, max_pixel_value=1.0)
    return A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)


def train_transform(image_size: int = 300, augmentation: str = "mb2_ssd_lite",
                    normalization: str = "mb2_ssd_lite", zoom_out_max: float = 4.0,
                    min_box_size: float | None = None) -> A.Compose:
    """SSD training augmentation; call with ``image=, bboxes=, labels=, difficult=``.

    ``min_box_size``: boxes narrower or shorter than this (px) after any step are dropped;
    default 0 for ``mb2_ssd_lite`` and ``none`` (the reference drops none), 1 for ``ssd_paper``.
    """
    _check(image_size, augmentation, normalization)
    if min_box_size is None:
        min_box_size = 1.0 if augmentation == "ssd_paper" else 0.0
    fill = (MB2_MEAN,) * 3 if normalization == "mb2_ssd_lite" else tuple(255.0 * m for m in IMAGENET_MEAN)
    if augmentation == "mb2_ssd_lite":
        steps = [
            MB2PhotometricDistort(),
            ZoomOut(max_ratio=zoom_out_max, fill=fill, p=0.5),
            SSDRandomCrop(rules="mb2_ssd_lite"),
            A.HorizontalFlip(p=0.5),
        ]
    elif augmentation == "ssd_paper":
        steps = [
            # torchvision's RandomPhotometricDistort ranges: each step p=0.5, then a channel shuffle.
            A.ColorJitter(brightness=(0.875, 1.125), contrast=(1, 1), saturation=(1, 1), hue=(0, 0), p=0.5),
            A.ColorJitter(brightness=(1, 1), contrast=(0.5, 1.5), saturation=(1, 1), hue=(0, 0), p=0.5),
            A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(0.5, 1.5), hue=(0, 0), p=0.5),
            A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=(-0.05, 0.05), p=0.5),
            A.ChannelShuffle(p=0.5),
            ZoomOut(max_ratio=zoom_out_max, fill=fill, p=0.5),
            SSDRandomCrop(rules="ssd_paper"),
            A.HorizontalFlip(p=0.5),
        ]
    else:
        steps = []
    return A.Compose(
        [
            *steps,
            A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR),
            _normalize(normalization),
            ToTensorV2(),
        ],
        bbox_params=_bbox_params(min_box_size),
    )


def eval_transform(image_size: int = 300, normalization: str = "mb2_ssd_lite") -> A.Compose:
    """Resize to ``image_size`` x ``image_size`` and normalise; boxes follow the resize."""
    _check(image_size, "none", normalization)
    return A.Compose(
        [
            A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR),
            _normalize(normalization),
            ToTensorV2(),
        ],
        # No size filter: evaluation must see every ground-truth box, however small.
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "difficult"], clip=True),
    )
