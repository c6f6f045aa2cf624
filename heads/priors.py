"""SSD-Lite default boxes (priors) and their box coding.

Sizes, aspect ratios, order and clipping are those of ``mb2-ssd-lite`` (MobileNetV2 paper,
SSD-Lite on VOC at 300 px): per location ``min``, ``sqrt(min * max)``, then for each aspect
ratio r ``(min*sqrt(r), min/sqrt(r))`` and ``(min/sqrt(r), min*sqrt(r))``, box sizes
60/105/150/195/240/285/330 px of a 300 px input, aspect ratios 2 and 3 on every map, sizes
clipped to [0, 1] of the image in centre form. torchvision's ``DefaultBoxGenerator`` produces
exactly these sizes and this order from ``scales = sizes / 300``, so it generates them.

Centres: mb2-ssd-lite places centre i of a map at ``(i + 0.5) * shrinkage / 300`` with fixed
shrinkages (16, 32, 64, 100, 150, 300). Those tile 300 px only approximately (10 cells * 32 px =
320 px, so the last centres fall outside the image) and cannot follow other input sizes. Here
the centres are ``(i + 0.5) / f_k`` for a map of f_k cells, the SSD paper's formula (also
torchvision's ssdlite320): they follow the actual feature-map sizes, so any input size works.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from errors import ConfigError

# mb2-ssd-lite at 300 px: map k uses BOX_SIZES[k] (min) and BOX_SIZES[k + 1] (max).
REFERENCE_IMAGE_SIZE = 300
BOX_SIZES = (60, 105, 150, 195, 240, 285, 330)
ASPECT_RATIOS = (2, 3)
# SSD's "variances" 0.1 (centre) and 0.2 (size) are BoxCoder weights 1/0.1 and 1/0.2.
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def box_coder() -> BoxCoder:
    """Encodes xyxy boxes against xyxy priors as SSD offsets (variances 0.1, 0.2)."""
    return BoxCoder(weights=BOX_CODER_WEIGHTS)


class SSDPriors(nn.Module):
    """Default boxes for a list of feature maps, in pixels of the input image (xyxy).

    ``forward(image_size, grid_sizes)`` returns ``[sum(H_k * W_k * A), 4]`` priors in the order
    the heads emit predictions: map by map, row-major locations, ``A`` boxes per location.
    Box sizes are fractions of the input (``box_sizes / reference_size``), so they scale with it.
    """

    def __init__(
        self,
        num_maps: int = 6,
        box_sizes: Sequence[float] = BOX_SIZES,
        aspect_ratios: Sequence[int] = ASPECT_RATIOS,
        reference_size: float = REFERENCE_IMAGE_SIZE,
        clip: bool = True,
    ) -> None:
        super().__init__()
        if len(box_sizes) != num_maps + 1:
            raise ConfigError(
                f"box_sizes needs num_maps + 1 = {num_maps + 1} values (min of each map, then the "
                f"max of the last), got {len(box_sizes)}: {tuple(box_sizes)}"
            )
        if any(b <= a for a, b in zip(box_sizes, box_sizes[1:])) or box_sizes[0] <= 0:
            raise ConfigError(f"box_sizes must be positive and increasing, got {tuple(box_sizes)}")
        self.num_maps = num_maps
        self.generator = DefaultBoxGenerator(
            [list(aspect_ratios)] * num_maps,
            scales=[float(s) / reference_size for s in box_sizes],
            steps=None,  # centres (i + 0.5) / f_k from the actual map sizes
            clip=clip,
        )
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_anchors(self) -> list[int]:
        """Boxes per location of each map (6 with aspect ratios 2 and 3)."""
        return self.generator.num_anchors_per_location()

    def forward(
        self,
        image_size: Sequence[int],
        grid_sizes: Sequence[Sequence[int]],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        image_size = (int(image_size[0]), int(image_size[1]))
        grid_sizes = [(int(h), int(w)) for h, w in grid_sizes]
        if len(grid_sizes) != self.num_maps:
            raise ValueError(f"expected {self.num_maps} feature maps, got {len(grid_sizes)}")
        key = (image_size, tuple(grid_sizes), dtype, str(device))
        priors = self._cache.get(key)
        if priors is None or torch.jit.is_tracing():
            # DefaultBoxGenerator only reads the image list's tensor shape and the maps' shapes.
            image = torch.empty((1, 3, *image_size), device="meta")
            maps = [torch.empty((1, 1, h, w), dtype=dtype, device=device) for h, w in grid_sizes]
            priors = self.generator(ImageList(image, [image_size]), maps)[0]
            if not torch.jit.is_tracing():
                self._cache[key] = priors
        return priors


def priors_center_form(priors: Tensor) -> Tensor:
    """xyxy -> (cx, cy, w, h)."""
    xy = (priors[:, :2] + priors[:, 2:]) / 2
    return torch.cat([xy, priors[:, 2:] - priors[:, :2]], dim=1)
