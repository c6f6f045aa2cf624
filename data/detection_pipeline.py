"""SSD training/evaluation samples with the geometry composed and applied once, uint8 out.

The step-by-step chain of ``data.detection_transforms`` (photometric distortion -> Expand onto
a canvas up to 4x the image -> SSD random crop -> mirror -> resize) is decided here on box
coordinates first, with the same random draws and acceptance rules (``SSDRandomCrop.sample_patch``
itself); then one affine warp produces the ``image_size`` x ``image_size`` output straight from
the decoded JPEG: the expanded canvas is never materialised, and the JPEG is decoded at a
reduced DCT scale (1/2, 1/4, 1/8) whenever the output still gets at least one decoded pixel per
output pixel (``reduced_decode``; with False every sample is decoded at full size, as the
reference does).

mb2-ssd-lite's photometric distortion is drawn here and applied on the device
(``data.device_transforms.mb2_photometric``, float, unclipped as the reference); its six
parameters travel in the target as ``photometric`` and the rectangle where the image landed in
the output as ``image_rect`` (the Expand fill outside it is not distorted, as in the reference).
``ssd_paper``'s torchvision-style colour jitter works on uint8 and stays on the CPU (before the
warp, as before). Normalisation happens on the device.

Differences to the step-by-step chain, all at the interpolation level (tested in
tests/test_detection_pipeline.py): OpenCV's warp quantises sample positions to 1/32 pixel
(cv2.resize does not), the HSV steps run after the resize instead of before it, and when part
of the output is Expand fill the outermost output row/column where the crop cuts through the
image blends with the fill instead of repeating the edge pixel. Boxes are exact.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from data.detection_transforms import MEAN_PIXEL, SSDRandomCrop, _check, _CHANNEL_ORDERS
from data.device_transforms import Normalization
from data.io import read_rgb

# The mb2 canvas fill, 127 (its mean: zero after (x - 127) / 128).
MB2_FILL = (127.0, 127.0, 127.0)


def detection_normalization(normalization: str) -> Normalization:
    return Normalization.mb2_ssd_lite() if normalization == "mb2_ssd_lite" else Normalization.imagenet()


@dataclass(frozen=True)
class SamplePlan:
    """The composed geometry of one sample, in the original image's pixels.

    ``patch``: the crop (x0, y0, x1, y1) in canvas pixels; ``offset``: where the image sits on
    the Expand canvas (0, 0 without Expand); ``canvas``: (width, height); ``flip``: mirrored
    after the crop. Output = resize(flip(canvas[patch])) to ``size`` x ``size``."""

    width: int
    height: int
    canvas: tuple[int, int]
    offset: tuple[int, int]
    patch: tuple[int, int, int, int]
    flip: bool
    size: int

    @property
    def scale(self) -> tuple[float, float]:
        """Output pixels per original pixel (x, y)."""
        return (self.size / (self.patch[2] - self.patch[0]), self.size / (self.patch[3] - self.patch[1]))

    def map_x(self, x: np.ndarray) -> np.ndarray:
        """Original-image x -> output x (continuous coordinates)."""
        patch_width = self.patch[2] - self.patch[0]
        a = x + self.offset[0] - self.patch[0]
        return (patch_width - a if self.flip else a) * self.size / patch_width

    def map_y(self, y: np.ndarray) -> np.ndarray:
        return (y + self.offset[1] - self.patch[1]) * self.size / (self.patch[3] - self.patch[1])

    def image_rect(self) -> tuple[float, float, float, float]:
        """Where the whole original image lands in the output (x0, y0, x1, y1)."""
        xs = sorted(self.map_x(np.array([0.0, float(self.width)])).tolist())
        ys = self.map_y(np.array([0.0, float(self.height)])).tolist()
        return (xs[0], ys[0], xs[1], ys[1])

    def shows_fill(self) -> bool:
        x0, y0 = self.patch[0] - self.offset[0], self.patch[1] - self.offset[1]
        x1, y1 = self.patch[2] - self.offset[0], self.patch[3] - self.offset[1]
        return x0 < 0 or y0 < 0 or x1 > self.width or y1 > self.height

    def decode_request(self, width: int, height: int) -> tuple[int, int] | None:
        """The smallest decoded size that keeps >= 1 decoded pixel per output pixel."""
        sx, sy = self.scale
        if max(sx, sy) > 0.5:
            return None
        return (math.ceil(width * sx), math.ceil(height * sy))


def warp(image: np.ndarray, plan: SamplePlan, fill: tuple[float, float, float]) -> np.ndarray:
    """The output of ``plan`` from ``image`` (the decoded original, possibly DCT-reduced), one
    ``cv2.warpAffine``: output pixel centre -> resize -> un-flip -> canvas -> original -> decoded."""
    height, width = image.shape[:2]
    # libjpeg's reduced decodes are 1/k of the original, k a power of two (last pixel partial).
    kx = 2.0 ** round(math.log2(plan.width / width))
    ky = 2.0 ** round(math.log2(plan.height / height))
    patch_w, patch_h = plan.patch[2] - plan.patch[0], plan.patch[3] - plan.patch[1]
    # Source rectangle of the patch in the decoded image; read from a view of just that part
    # (with the edge repeated beyond it, as cv2.resize of the crop does) unless it shows fill.
    x0 = (plan.patch[0] - plan.offset[0]) / kx
    y0 = (plan.patch[1] - plan.offset[1]) / ky
    x1, y1 = x0 + patch_w / kx, y0 + patch_h / ky
    vx0, vy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    vx1, vy1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
    view = image[vy0:vy1, vx0:vx1]
    if kx == ky == 1 and not plan.shows_fill():
        # A full-size decode and a patch inside the image: the chain's own crop + resize (+ mirror,
        # which commutes with cv2's symmetric resize), pixel for pixel.
        out = cv2.resize(view, (plan.size, plan.size), interpolation=cv2.INTER_LINEAR)
        return cv2.flip(out, 1) if plan.flip else out
    ax = patch_w / (plan.size * kx)
    ay = patch_h / (plan.size * ky)
    if plan.flip:  # continuous output X -> patch coordinate pw - X * pw / S
        matrix = np.array([[-ax, 0.0, x1 - 0.5 * ax - 0.5 - vx0], [0.0, ay, y0 + 0.5 * ay - 0.5 - vy0]])
    else:
        matrix = np.array([[ax, 0.0, x0 + 0.5 * ax - 0.5 - vx0], [0.0, ay, y0 + 0.5 * ay - 0.5 - vy0]])
    if plan.shows_fill():
        border, value = cv2.BORDER_CONSTANT, tuple(float(round(f)) for f in fill)
    else:
        border, value = cv2.BORDER_REPLICATE, 0
    return cv2.warpAffine(view, matrix, (plan.size, plan.size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=border, borderValue=value)


def map_boxes(plan: SamplePlan, boxes: np.ndarray, min_box_size: float = 0.0) -> np.ndarray:
    """Boxes ([N,4] original pixels) through the plan, as the step-by-step chain moves them:
    shift onto the canvas, keep those whose centre is strictly inside the patch, clip to it,
    mirror, scale. Returns the indices kept and the output boxes."""
    ox, oy = plan.offset
    canvas = boxes + np.array([ox, oy, ox, oy], dtype=boxes.dtype)
    x0, y0, x1, y1 = plan.patch
    cx, cy = (canvas[:, 0] + canvas[:, 2]) / 2, (canvas[:, 1] + canvas[:, 3]) / 2
    if plan.patch != (0, 0, *plan.canvas):
        inside = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
    else:
        inside = np.ones(len(boxes), dtype=bool)
    kept = np.flatnonzero(inside)
    local = np.clip(canvas[kept] - np.array([x0, y0, x0, y0]), 0, np.array([x1 - x0, y1 - y0] * 2))
    if min_box_size > 0:
        big = ((local[:, 2] - local[:, 0]) >= min_box_size) & ((local[:, 3] - local[:, 1]) >= min_box_size)
        kept, local = kept[big], local[big]
    if plan.flip:
        local = np.stack([(x1 - x0) - local[:, 2], local[:, 1], (x1 - x0) - local[:, 0], local[:, 3]], 1)
    sx, sy = plan.scale
    out = local * np.array([sx, sy, sx, sy])
    if min_box_size > 0:
        big = ((out[:, 2] - out[:, 0]) >= min_box_size) & ((out[:, 3] - out[:, 1]) >= min_box_size)
        kept, out = kept[big], out[big]
    return kept, out.astype(np.float32)


class SSDPipeline:
    """Read + augment + resize one VOC sample; ``pipeline(path=, bboxes=, labels=, difficult=)``
    returns ``image`` ([3,S,S] uint8 tensor), ``bboxes``, ``labels``, ``difficult`` and, for
    ``mb2_ssd_lite``, ``photometric`` [6], ``image_rect`` [4] and the canvas ``fill`` [3] (see the
    module docstring).

    ``augmentation="none"`` is the evaluation transform (resize only, every box kept).
    Random state: ``set_random_state(numpy_rng, python_rng)`` / ``set_random_seed`` as an
    albumentations pipeline, so ``data.loaders.SeededAugmentation`` seeds it per sample.
    """

    reads_images = True  # the dataset hands over the file path (decode size is decided here)

    def __init__(self, image_size: int = 300, augmentation: str = "mb2_ssd_lite",
                 normalization: str = "mb2_ssd_lite", zoom_out_max: float = 4.0,
                 min_box_size: float | None = None, reduced_decode: bool = True) -> None:
        _check(image_size, augmentation, normalization)
        self.image_size, self.augmentation, self.normalization = image_size, augmentation, normalization
        self.zoom_out_max = float(zoom_out_max)
        if min_box_size is None:
            min_box_size = 1.0 if augmentation == "ssd_paper" else 0.0
        self.min_box_size = float(min_box_size)
        self.reduced_decode = reduced_decode
        self.fill = MB2_FILL if normalization == "mb2_ssd_lite" else MEAN_PIXEL
        self.crop = (SSDRandomCrop(rules="mb2_ssd_lite" if augmentation == "mb2_ssd_lite" else "ssd_paper")
                     if augmentation != "none" else None)
        self.colour = _ssd_paper_colour_jitter() if augmentation == "ssd_paper" else None
        self.set_random_seed(0)

    @property
    def device_normalization(self) -> Normalization:
        return detection_normalization(self.normalization)

    def set_random_state(self, numpy_rng: np.random.Generator, python_rng: random.Random) -> None:
        self.random_generator, self.py_random = numpy_rng, python_rng
        for part in (self.crop, self.colour):
            if part is not None:
                part.set_random_state(numpy_rng, python_rng)

    def set_random_seed(self, seed: int) -> None:
        self.set_random_state(np.random.default_rng(seed), random.Random(seed))

    # The draws, in the step-by-step chain's order: photometric, Expand, crop, mirror.
    def draw_photometric(self) -> np.ndarray:
        """mb2-ssd-lite's six photometric parameters (NaN = step not drawn), drawn as
        ``MB2PhotometricDistort.get_params`` draws them."""
        rng = self.py_random

        def maybe(draw):
            return draw() if rng.random() < 0.5 else math.nan

        brightness = maybe(lambda: rng.uniform(-32.0, 32.0))
        contrast_first = float(rng.random() < 0.5)
        contrast = maybe(lambda: rng.uniform(0.5, 1.5))
        saturation = maybe(lambda: rng.uniform(0.5, 1.5))
        hue = maybe(lambda: rng.uniform(-18.0, 18.0))
        order = maybe(lambda: float(rng.randrange(len(_CHANNEL_ORDERS))))
        return np.array([brightness, contrast_first, contrast, saturation, hue, order], dtype=np.float32)

    def plan(self, width: int, height: int, boxes: np.ndarray) -> SamplePlan:
        """The geometry for an image of ``width`` x ``height`` with ``boxes`` (original pixels)."""
        canvas, offset = (width, height), (0, 0)
        patch = (0, 0, width, height)
        flip = False
        if self.augmentation != "none":
            rng = self.py_random
            if rng.random() < 0.5:  # Expand, as ZoomOut draws it
                ratio = rng.uniform(1.0, self.zoom_out_max)
                left = int(rng.uniform(0, width * ratio - width))
                top = int(rng.uniform(0, height * ratio - height))
                canvas, offset = (int(width * ratio), int(height * ratio)), (left, top)
            if len(boxes):
                shifted = boxes.astype(np.float64) + np.array([*offset, *offset])
                patch = self.crop.sample_patch(shifted, *canvas)
            else:
                patch = (0, 0, *canvas)
            flip = rng.random() < 0.5
        return SamplePlan(width, height, canvas, offset, tuple(int(v) for v in patch), flip, self.image_size)

    def __call__(self, path: str | Path, bboxes: np.ndarray, labels: np.ndarray,
                 difficult: np.ndarray) -> dict[str, Any]:
        if self.augmentation == "mb2_ssd_lite":
            # albumentations' Compose draws once per call before its steps; so do we, so that a
            # seed gives the chain's very draws in the same order.
            self.py_random.random()
        photometric = self.draw_photometric() if self.augmentation == "mb2_ssd_lite" else None
        state: dict[str, Any] = {}

        def decide(width: int, height: int) -> tuple[int, int] | None:
            state["size"] = (width, height)
            state["plan"] = self.plan(width, height, _clip(bboxes, width, height))
            return state["plan"].decode_request(width, height) if self.reduced_decode else None

        image = read_rgb(path, draft=decide)
        if "plan" not in state:  # not a JPEG: no draft hook, plan on the decoded size
            decide(image.shape[1], image.shape[0])
        plan = state["plan"]
        if self.colour is not None:
            image = self.colour(image=image)["image"]
        out = warp(image, plan, self.fill)
        kept, boxes = map_boxes(plan, _clip(bboxes, plan.width, plan.height), self.min_box_size)
        result = {
            "image": torch.from_numpy(out).permute(2, 0, 1),
            "bboxes": boxes,
            "labels": np.asarray(labels)[kept],
            "difficult": np.asarray(difficult)[kept],
        }
        if photometric is not None:
            result["photometric"] = torch.from_numpy(photometric)
            result["image_rect"] = torch.tensor(plan.image_rect(), dtype=torch.float32)
            result["fill"] = torch.tensor(self.fill, dtype=torch.float32)
        return result


def _clip(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float32))


def _ssd_paper_colour_jitter():
    import albumentations as A

    # torchvision's RandomPhotometricDistort ranges: each step p=0.5, then a channel shuffle.
    return A.Compose([
        A.ColorJitter(brightness=(0.875, 1.125), contrast=(1, 1), saturation=(1, 1), hue=(0, 0), p=0.5),
        A.ColorJitter(brightness=(1, 1), contrast=(0.5, 1.5), saturation=(1, 1), hue=(0, 0), p=0.5),
        A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(0.5, 1.5), hue=(0, 0), p=0.5),
        A.ColorJitter(brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=(-0.05, 0.05), p=0.5),
        A.ChannelShuffle(p=0.5),
    ])


def train_pipeline(image_size: int = 300, augmentation: str = "mb2_ssd_lite",
                   normalization: str = "mb2_ssd_lite", **options: Any) -> SSDPipeline:
    return SSDPipeline(image_size, augmentation, normalization, **options)


def eval_pipeline(image_size: int = 300, normalization: str = "mb2_ssd_lite", **options: Any) -> SSDPipeline:
    """Resize to ``image_size`` x ``image_size``; every box kept (evaluation sees them all)."""
    return SSDPipeline(image_size, "none", normalization, min_box_size=0.0, **options)

