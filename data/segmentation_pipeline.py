"""Segmentation training samples (rescale -> pad -> crop -> flip) with the geometry composed
and applied once, uint8 out.

The step-by-step chain (``data.segmentation_transforms.train_transform``: albumentations'
RandomScale, PadIfNeeded (centred; image 0, mask ``ignore_index``), RandomCrop, HorizontalFlip)
rescales the whole image and mask before cutting the crop out of them. Here the same draws
decide where the crop lies in the original image, and one ``cv2.warpAffine`` (image, bilinear)
and one index gather (mask, OpenCV's nearest-neighbour rule ``floor(x * W / W')``) produce just
the crop. The JPEG is decoded at a reduced DCT scale when the rescale factor allows it (<= 1/2).

Same pixels as the chain up to OpenCV's 1/32-pixel quantisation of the warp's sample
positions (<= 1 grey level); masks identical (tests/test_data_pipelines.py).
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
from errors import ConfigError, DataError

IGNORE_INDEX = 255


class SegmentationTrainPipeline:
    """``pipeline(path=, mask=)`` -> ``{"image": [3,S,S] uint8 tensor, "mask": [S,S] uint8 tensor}``.

    Draws, in the chain's order: the scale U(``scale_range``) (None: no rescale), the crop's
    relative offsets U(0, 1) (y, then x; position ``int((padded - crop + 1) * u)`` as
    albumentations' RandomCrop), the flip (p=0.5).
    """

    reads_images = True

    def __init__(self, crop_size: int, scale_range: Sequence[float] | None = (0.5, 2.0),
                 ignore_index: int = IGNORE_INDEX, reduced_decode: bool = True) -> None:
        if crop_size < 1:
            raise ConfigError(f"crop size must be a positive number of pixels, got {crop_size}")
        if scale_range is not None:
            low, high = (float(s) for s in scale_range)
            if not 0 < low <= high:
                raise ConfigError(f"scale_range must be (low, high) with 0 < low <= high, or null for no "
                                  f"rescaling, got {tuple(scale_range)}")
            scale_range = (low, high)
        self.crop_size, self.scale_range = int(crop_size), scale_range
        self.ignore_index, self.reduced_decode = int(ignore_index), reduced_decode
        self.set_random_seed(0)

    def set_random_state(self, numpy_rng: np.random.Generator, python_rng: random.Random) -> None:
        self.random_generator, self.py_random = numpy_rng, python_rng

    def set_random_seed(self, seed: int) -> None:
        self.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def plan(self, width: int, height: int) -> dict[str, Any]:
        """Scaled size, centred padding, crop origin (in the padded image) and flip."""
        rng = self.py_random
        scale = rng.uniform(*self.scale_range) if self.scale_range is not None else 1.0
        # albumentations. RandomScale: the new side is the truncated product
        scaled_w, scaled_h = (int(width * scale), int(height * scale)) if scale != 1.0 else (width, height)
        crop = self.crop_size
        pad_x, pad_y = max(0, crop - scaled_w), max(0, crop - scaled_h)
        left, top = pad_x // 2, pad_y // 2  # PadIfNeeded's "center" position
        padded_w, padded_h = scaled_w + pad_x, scaled_h + pad_y
        v, u = rng.random(), rng.random()
        y0 = int((padded_h - crop + 1) * v)
        x0 = int((padded_w - crop + 1) * u)
        flip = rng.random() < 0.5
        return {"scaled": (scaled_w, scaled_h), "pad": (left, top), "origin": (x0, y0), "flip": flip}

    def __call__(self, path: str | Path, mask: np.ndarray) -> dict[str, torch.Tensor]:
        # albumentations' Compose draws once per call before its steps; so do we, so that a
        # seed gives the chain's very samples (same draws in the same order).
        self.py_random.random()
        state: dict[str, Any] = {}

        def decide(width: int, height: int) -> tuple[int, int] | None:
            state["size"] = (width, height)
            state["plan"] = self.plan(width, height)
            scaled_w, scaled_h = state["plan"]["scaled"]
            if not self.reduced_decode or max(scaled_w / width, scaled_h / height) > 0.5:
                return None
            return (scaled_w, scaled_h)

        image = read_rgb(path, draft=decide)
        height, width = mask.shape
        if "plan" not in state:  # not a JPEG: no draft hook
            decide(image.shape[1], image.shape[0])
        if state["size"] != (width, height):
            raise DataError(f"image {path} is {state['size'][0]}x{state['size'][1]} but its mask is "
                            f"{width}x{height}")
        plan = state["plan"]
        out_image = self._image(image, width, height, plan)
        out_mask = self._mask(mask, plan)
        return {"image": torch.from_numpy(out_image).permute(2, 0, 1), "mask": torch.from_numpy(out_mask)}

    def _window(self, plan: dict[str, Any]) -> tuple[int, int, int, int]:
        """Where the scaled image lies in the crop: (x0, y0, x1, y1) in output pixels (before the flip)."""
        (scaled_w, scaled_h), (left, top), (x0, y0) = plan["scaled"], plan["pad"], plan["origin"]
        c = self.crop_size
        return (max(0, left - x0), max(0, top - y0), min(c, left + scaled_w - x0), min(c, top + scaled_h - y0))

    def _image(self, image: np.ndarray, width: int, height: int, plan: dict[str, Any]) -> np.ndarray:
        (scaled_w, scaled_h), (left, top), (x0, y0) = plan["scaled"], plan["pad"], plan["origin"]
        c = self.crop_size
        decoded_h, decoded_w = image.shape[:2]
        kx = 2.0 ** round(math.log2(width / decoded_w))  # libjpeg's reduced decodes: 1/k, k a power of 2
        ky = 2.0 ** round(math.log2(height / decoded_h))
        # output pixel u -> scaled pixel s = u + x0 - left -> original (s + 0.5) W / W' - 0.5 (cv2.resize)
        # -> decoded (orig + 0.5) / k - 0.5
        rx, ry = width / scaled_w / kx, height / scaled_h / ky
        matrix = np.array([[rx, 0.0, (x0 - left + 0.5) * rx - 0.5], [0.0, ry, (y0 - top + 0.5) * ry - 0.5]])
        if scaled_w == width and scaled_h == height and kx == ky == 1:
            out = np.zeros((c, c, 3), np.uint8)
            wx0, wy0, wx1, wy1 = self._window(plan)
            out[wy0:wy1, wx0:wx1] = image[wy0 + y0 - top:wy1 + y0 - top, wx0 + x0 - left:wx1 + x0 - left]
        else:
            # Replicate the edge (cv2.resize clamps there), then zero the padding PadIfNeeded adds.
            out = cv2.warpAffine(image, matrix, (c, c), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE)
            wx0, wy0, wx1, wy1 = self._window(plan)
            if (wx0, wy0, wx1, wy1) != (0, 0, c, c):
                inside = out[wy0:wy1, wx0:wx1].copy()
                out[:] = 0
                out[wy0:wy1, wx0:wx1] = inside
        return cv2.flip(out, 1) if plan["flip"] else out

    def _mask(self, mask: np.ndarray, plan: dict[str, Any]) -> np.ndarray:
        (scaled_w, scaled_h), (left, top), (x0, y0) = plan["scaled"], plan["pad"], plan["origin"]
        height, width = mask.shape
        c = self.crop_size
        wx0, wy0, wx1, wy1 = self._window(plan)
        # OpenCV's INTER_NEAREST resize reads source pixel floor(s * W / W')
        cols = np.minimum(np.floor((np.arange(wx0, wx1) + x0 - left) * (1.0 / (scaled_w / width))).astype(np.intp), width - 1)
        rows = np.minimum(np.floor((np.arange(wy0, wy1) + y0 - top) * (1.0 / (scaled_h / height))).astype(np.intp), height - 1)
        out = np.full((c, c), self.ignore_index, np.uint8)
        out[wy0:wy1, wx0:wx1] = mask[rows[:, None], cols[None, :]]
        return np.ascontiguousarray(out[:, ::-1]) if plan["flip"] else out
