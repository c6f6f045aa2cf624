"""Classification training samples: random resized crop + flip decided on the image's stored
size, then one resize of just the crop from a JPEG decoded at the smallest DCT scale that still
gives the output at least one decoded pixel per output pixel; uint8 out.

The draws are albumentations' ``RandomResizedCrop`` (10 tries of area U(scale) x the image's and
log-uniform aspect ratio, rounded sides, offsets ``int((side - crop + 1) * U(0, 1))``; else the
centre crop at the nearest allowed ratio), then the flip (p=0.5): the same crops as
``data.transforms.classification_train_transform``, pixel for pixel when the decode is full size
(tests/test_data_pipelines.py). With a reduced decode the crop is resampled from the smaller
decode (``reduced_decode=False``: always full size).
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from data.io import read_rgb
from data.transforms import TRAIN_CROP_SCALE, _check_size


class RandomResizedCropPipeline:
    """``pipeline(path=)`` -> ``{"image": [3,S,S] uint8 tensor}``."""

    reads_images = True

    def __init__(self, image_size: int, scale: Sequence[float] = TRAIN_CROP_SCALE,
                 ratio: Sequence[float] = (3 / 4, 4 / 3), reduced_decode: bool = True) -> None:
        self.size = _check_size(image_size)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.reduced_decode = reduced_decode
        self.set_random_seed(0)

    def set_random_state(self, numpy_rng: np.random.Generator, python_rng: random.Random) -> None:
        self.random_generator, self.py_random = numpy_rng, python_rng

    def set_random_seed(self, seed: int) -> None:
        self.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the crop in the stored image's pixels."""
        rng, area = self.py_random, width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = rng.uniform(self.scale[0] * area, self.scale[1] * area)
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                v, u = rng.random(), rng.random()
                y0, x0 = int((height - h + 1) * v), int((width - w + 1) * u)
                return (x0, y0, x0 + w, y0 + h)
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        x0, y0 = (width - w) // 2, (height - h) // 2
        return (x0, y0, x0 + w, y0 + h)

    def __call__(self, path: str | Path) -> dict[str, Any]:
        # albumentations' Compose draws once per call before its steps; so do we, so that a
        # seed gives the chain's very crops (same draws in the same order).
        self.py_random.random()
        state: dict[str, Any] = {}

        def decide(width: int, height: int) -> tuple[int, int] | None:
            state["size"], state["box"] = (width, height), self.crop_box(width, height)
            x0, y0, x1, y1 = state["box"]
            scale = max(self.size / (x1 - x0), self.size / (y1 - y0))
            if not self.reduced_decode or scale > 0.5:
                return None
            return (math.ceil(width * scale), math.ceil(height * scale))

        image = read_rgb(path, draft=decide)
        if "box" not in state:  # not a JPEG: no draft hook
            decide(image.shape[1], image.shape[0])
        flip = self.py_random.random() < 0.5
        (width, height), (x0, y0, x1, y1) = state["size"], state["box"]
        decoded_h, decoded_w = image.shape[:2]
        if (decoded_w, decoded_h) == (width, height):
            out = cv2.resize(image[y0:y1, x0:x1], (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        else:  # reduced decode (1/k, k a power of two): the same box, resampled from the smaller image
            kx = 2.0 ** round(math.log2(width / decoded_w))
            ky = 2.0 ** round(math.log2(height / decoded_h))
            rx, ry = (x1 - x0) / self.size / kx, (y1 - y0) / self.size / ky
            matrix = np.array([[rx, 0.0, (x0 / kx) + 0.5 * rx - 0.5], [0.0, ry, (y0 / ky) + 0.5 * ry - 0.5]])
            out = cv2.warpAffine(image, matrix, (self.size, self.size),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        if flip:
            out = cv2.flip(out, 1)
        return {"image": torch.from_numpy(out).permute(2, 0, 1)}
