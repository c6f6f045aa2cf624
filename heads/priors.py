"""SSD-Lite default boxes (priors) and their box coding.

Sizes, aspect ratios, order and clipping are those of ``mb2-ssd-lite`` (MobileNetV2 paper,
SSD-Lite on VOC at 300 px; qfgaohao/pytorch-ssd's ``mobilenetv1_ssd_config``): per location
``min``, ``sqrt(min * max)``, then for each aspect ratio r ``(min*sqrt(r), min/sqrt(r))`` and
``(min/sqrt(r), min*sqrt(r))``, box sizes 60/105/150/195/240/285/330 px of a 300 px input,
aspect ratios 2 and 3 on every map, sizes clipped to [0, 1] of the image in centre form.
torchvision's ``DefaultBoxGenerator`` produces exactly these sizes and this order from
``scales = sizes / 300``, so it generates them.

Centres, two formulas (``centers=``):

- ``"mb2_ssd_lite"``: centre i of map k at ``(i + 0.5) * shrinkage_k / 300`` of the image, with
  the fixed shrinkages 16, 32, 64, 100, 150, 300, then clamped to the image (the reference clamps
  every centre-form value to [0, 1]). These do not tile 300 px exactly: 10 cells * 32 px = 320 px,
  so the last column/row of the 10x10 map lands on the border after clamping, and the 19x19 and
  5x5 maps stop 4 and 12 px short of the far edge. The formula only has a meaning for the maps it
  was written for (19, 10, 5, 3, 2, 1 cells, i.e. ``ceil(300 / shrinkage)``); other grids (other
  input sizes) are refused with a ConfigError. Used by the thesis rows (what the thesis ran).
- ``"ssd_paper"``: ``(i + 0.5) / f_k`` for a map of f_k cells (SSD paper, torchvision's
  ssdlite320): the centres tile the image evenly and follow the actual map sizes, so any input
  size works. Up to 18 px away from the mb2-ssd-lite centres at 300 px.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_convert

from errors import ConfigError


# mb2-ssd-lite at 300 px: map k uses BOX_SIZES[k] (min) and BOX_SIZES[k + 1] (max).
REFERENCE_IMAGE_SIZE = 300
BOX_SIZES = (60, 105, 150, 195, 240, 285, 330)
ASPECT_RATIOS = (2, 3)
# mb2-ssd-lite's "shrinkage" of each map: its centre spacing in px of the 300 px input.
SHRINKAGES = (16, 32, 64, 100, 150, 300)
PRIOR_CENTERS = ("mb2_ssd_lite", "ssd_paper")
# SSD's "variances" 0.1 (centre) and 0.2 (size) are BoxCoder weights 1/0.1 and 1/0.2.
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def box_coder() -> BoxCoder:
    """Encodes xyxy boxes against xyxy priors as SSD offsets (variances 0.1, 0.2)."""
    return BoxCoder(weights=BOX_CODER_WEIGHTS)


class SSDPriors(nn.Module):
    """Default boxes for a list of feature maps, in pixels of the input image (xyxy).

    ``forward(image_size, grid_sizes)`` returns ``[sum(H_k * W_k * A), 4]`` priors in the order
    the heads emit predictions: map by map, row-major locations, ``A`` boxes per location.
    Box sizes are fractions of the input (``box_sizes / reference_size``), so they scale with it;
    ``centers`` picks the centre formula (module docstring), ``shrinkages`` are the
    mb2-ssd-lite spacings in px at ``reference_size``.
    """

    def __init__(
        self,
        num_maps: int = 6,
        box_sizes: Sequence[float] = BOX_SIZES,
        aspect_ratios: Sequence[int] = ASPECT_RATIOS,
        reference_size: float = REFERENCE_IMAGE_SIZE,
        clip: bool = True,
        centers: str = "ssd_paper",
        shrinkages: Sequence[float] = SHRINKAGES,
    ) -> None:
        super().__init__()
        if len(box_sizes) != num_maps + 1:
            raise ConfigError(
                f"box_sizes needs num_maps + 1 = {num_maps + 1} values (min of each map, then the "
                f"max of the last), got {len(box_sizes)}: {tuple(box_sizes)}"
            )
        if any(b <= a for a, b in zip(box_sizes, box_sizes[1:])) or box_sizes[0] <= 0:
            raise ConfigError(f"box_sizes must be positive and increasing, got {tuple(box_sizes)}")
        if centers not in PRIOR_CENTERS:
            raise ConfigError(f"prior_centers must be one of {PRIOR_CENTERS}, got {centers!r}")
        if centers == "mb2_ssd_lite" and (len(shrinkages) != num_maps or min(shrinkages) <= 0):
            raise ConfigError(f"shrinkages needs {num_maps} positive values (one per map), got "
                              f"{tuple(shrinkages)}")
        self.num_maps = num_maps
        self.centers = centers
        self.reference_size = float(reference_size)
        self.shrinkages = tuple(float(s) for s in shrinkages)
        self.generator = DefaultBoxGenerator(
            [list(aspect_ratios)] * num_maps,
            scales=[float(s) / reference_size for s in box_sizes],
            # None: centres (i + 0.5) / f_k from the actual maps; steps: (i + 0.5) * step / size.
            steps=list(self.shrinkages) if centers == "mb2_ssd_lite" else None,
            clip=clip,
        )
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_anchors(self) -> list[int]:
        """Boxes per location of each map (6 with aspect ratios 2 and 3)."""
        return self.generator.num_anchors_per_location()

    def reference_grids(self) -> list[int]:
        """Cells per side of each map that the mb2-ssd-lite shrinkages were written for."""
        return [math.ceil(self.reference_size / s - 1e-9) for s in self.shrinkages]

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
            if self.centers == "mb2_ssd_lite":
                priors = self._mb2_ssd_lite(image_size, grid_sizes, dtype, device)
            else:
                priors = self._generate(image_size, grid_sizes, dtype, device)
            if not torch.jit.is_tracing():
                self._cache[key] = priors
        return priors

    def _generate(self, image_size, grid_sizes, dtype, device) -> Tensor:
        # DefaultBoxGenerator only reads the image list's tensor shape and the maps' shapes.
        image = torch.empty((1, 3, *image_size), device="meta")
        maps = [torch.empty((1, 1, h, w), dtype=dtype, device=device) for h, w in grid_sizes]
        return self.generator(ImageList(image, [image_size]), maps)[0]

    def _mb2_ssd_lite(self, image_size, grid_sizes, dtype, device) -> Tensor:
        expected = self.reference_grids()
        if [h for h, _ in grid_sizes] != expected or [w for _, w in grid_sizes] != expected:
            raise ConfigError(
                f"prior_centers=mb2_ssd_lite places centres with mb2-ssd-lite's fixed shrinkages "
                f"{self.shrinkages} px, written for {int(self.reference_size)} px inputs whose maps "
                f"are {expected} cells; this input ({image_size[0]}x{image_size[1]} px) gives "
                f"{[tuple(g) for g in grid_sizes]}. Use image_size={int(self.reference_size)}, or "
                "model.prior_centers=ssd_paper (centres (i + 0.5) / f_k, any input size)."
            )
        # Generated on the reference square (step / 300 = shrinkage fractions), clamped there as
        # the reference does (centres included), then stretched to the input like the box sizes.
        side = int(self.reference_size)
        priors = self._generate((side, side), grid_sizes, torch.float64, device)
        centre_form = box_convert(priors, "xyxy", "cxcywh")
        centre_form[:, :2] = centre_form[:, :2].clamp(0, side)
        priors = box_convert(centre_form, "cxcywh", "xyxy")
        scale = torch.tensor([image_size[1], image_size[0]] * 2, dtype=torch.float64, device=device) / side
        return (priors * scale).to(dtype)


def priors_center_form(priors: Tensor) -> Tensor:
    """xyxy -> (cx, cy, w, h)."""
    return box_convert(priors, "xyxy", "cxcywh")
