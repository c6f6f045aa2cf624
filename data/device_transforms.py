"""What happens to a batch once it is on the device: uint8 -> float, mb2-ssd-lite's photometric
distortion, normalisation.

The loaders yield uint8 images (4x less host memory and host-to-device traffic than float32);
the LightningModules call :func:`prepare_batch_images` from ``on_after_batch_transfer``, so the
float conversion and normalisation run on the accelerator, in training, evaluation and export
checks alike. ``(x - mean) / std`` with ``mean``/``std`` in 0-255 units is the same arithmetic
albumentations' ``Normalize`` did on the CPU (to float rounding).

mb2-ssd-lite's photometric distortion (qfgaohao/pytorch-ssd ``PhotometricDistort``) works in float
and never clips: brightness is added, contrast multiplied, and OpenCV's float RGB<->HSV round
trip sees values outside 0-255. Clipping to uint8 on the CPU would change those values, so the
CPU only draws its parameters (``data.detection_pipeline``) and they are applied here, in float,
after the geometry. Brightness, contrast and channel order commute with the bilinear resize
exactly; the HSV steps are pointwise but not linear, so they differ from the reference's order
(distort, then resize) only where the resize blends pixels of different colours. On a CPU
the HSV steps run through ``cv2.cvtColor`` per image (the reference's own calls, ~3x faster
than the torch formulas there); on an accelerator through the batched torch formulas.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Per-sample photometric parameters, one row of a [B, 6] float tensor; NaN = step not drawn.
PHOTOMETRIC_FIELDS = ("brightness", "contrast_first", "contrast", "saturation", "hue", "channel_order")
CHANNEL_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
_FLT_EPSILON = 1.1920929e-07  # OpenCV's float HSV guards its divisions with FLT_EPSILON


@dataclass(frozen=True)
class Normalization:
    """``(x - mean) / std`` per channel, ``mean`` and ``std`` in 0-255 pixel units."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def imagenet(cls) -> "Normalization":
        return cls(tuple(255.0 * m for m in IMAGENET_MEAN), tuple(255.0 * s for s in IMAGENET_STD))

    @classmethod
    def mb2_ssd_lite(cls) -> "Normalization":
        return cls((127.0,) * 3, (128.0,) * 3)

    def __call__(self, images: Tensor) -> Tensor:
        """Float [B,3,H,W] (0-255 values) -> normalised, on the images' device."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std


def rgb_to_hsv_opencv(rgb: Tensor) -> Tensor:
    """OpenCV's float ``COLOR_RGB2HSV`` on [B,3,H,W]: H in degrees [0, 360), S = (V - min) /
    |V|, V = max, for any values (also outside 0-255, as the unclipped reference feeds it)."""
    r, g, b = rgb.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    vmin = torch.minimum(torch.minimum(r, g), b)
    diff = v - vmin
    s = diff / (v.abs() + _FLT_EPSILON)
    scale = 60.0 / (diff + _FLT_EPSILON)
    h = torch.where(v == r, (g - b) * scale,
                    torch.where(v == g, (b - r) * scale + 120.0, (r - g) * scale + 240.0))
    h = torch.where(h < 0, h + 360.0, h)
    return torch.stack((h, s, v), 1)


def hsv_to_rgb_opencv(hsv: Tensor) -> Tensor:
    """OpenCV's float ``COLOR_HSV2RGB`` on [B,3,H,W] (H in degrees, wrapped into [0, 360))."""
    h, s, v = hsv.unbind(1)
    h = torch.remainder(h * (6.0 / 360.0), 6.0)
    sector = torch.floor(h).clamp(0, 5)
    f = h - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = sector.long()
    # (r, g, b) per sector, from OpenCV's sector table
    choices = torch.stack((v, p, q, t), 0)  # indices 0..3 = tab[0..3]
    table = torch.tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]],
                         device=hsv.device)
    index = table[sector]  # [B,H,W,3]
    rgb = torch.gather(choices, 0, index.permute(3, 0, 1, 2))  # [3,B,H,W]
    rgb = rgb.permute(1, 0, 2, 3)
    return torch.where((s == 0).unsqueeze(1), v.unsqueeze(1).expand_as(rgb), rgb)


def mb2_photometric(images: Tensor, params: Tensor) -> Tensor:
    """mb2-ssd-lite's photometric distortion of float [B,3,H,W] 0-255 images with per-sample
    ``params`` [B,6] (``PHOTOMETRIC_FIELDS``, NaN = not drawn); never clipped, like the reference."""
    params = params.to(images.device, images.dtype)
    x = images.clone()

    def column(k: int) -> tuple[Tensor, Tensor]:
        value = params[:, k].view(-1, 1, 1, 1)
        return value, ~torch.isnan(value)

    brightness, has_brightness = column(0)
    contrast_first = (params[:, 1] > 0.5).view(-1, 1, 1, 1)
    contrast, has_contrast = column(2)
    x = torch.where(has_brightness, x + brightness, x)
    x = torch.where(has_contrast & contrast_first, x * contrast, x)
    # The reference always converts to HSV and back (not an identity for negative values).
    hsv_steps = _hsv_steps_opencv if x.device.type == "cpu" else _hsv_steps_torch
    x = hsv_steps(x, params[:, 3], params[:, 4])
    x = torch.where(has_contrast & ~contrast_first, x * contrast, x)
    order, has_order = column(5)
    if has_order.any():
        orders = torch.tensor(CHANNEL_ORDERS, device=x.device)[order.nan_to_num(0).long().view(-1)]
        shuffled = torch.gather(x, 1, orders.view(-1, 3, 1, 1).expand_as(x))
        x = torch.where(has_order, shuffled, x)
    return x


def _hsv_steps_torch(x: Tensor, saturation: Tensor, hue: Tensor) -> Tensor:
    """The HSV round trip with saturation / hue ([B], NaN = not drawn) scaled / turned, batched
    on the device with OpenCV's float formulas."""
    h, s, v = rgb_to_hsv_opencv(x).unbind(1)
    saturation, hue = saturation.view(-1, 1, 1), hue.view(-1, 1, 1)
    s = torch.where(torch.isnan(saturation), s, s * saturation)
    h = torch.where(torch.isnan(hue), h, h + hue)
    h = torch.where(h > 360.0, h - 360.0, h)
    h = torch.where(h < 0.0, h + 360.0, h)
    return hsv_to_rgb_opencv(torch.stack((h, s, v), 1))


def _hsv_steps_opencv(x: Tensor, saturation: Tensor, hue: Tensor) -> Tensor:
    """The HSV round trip with saturation / hue per image through ``cv2.cvtColor`` (the
    reference's own calls): on a CPU several times faster than the torch formulas."""
    import cv2
    import numpy as np

    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        hsv = cv2.cvtColor(np.ascontiguousarray(x[i].permute(1, 2, 0).numpy()), cv2.COLOR_RGB2HSV)
        if not torch.isnan(saturation[i]):
            hsv[..., 1] *= float(saturation[i])
        if not torch.isnan(hue[i]):
            hsv[..., 0] += float(hue[i])
            hsv[..., 0][hsv[..., 0] > 360.0] -= 360.0
            hsv[..., 0][hsv[..., 0] < 0.0] += 360.0
        out[i] = torch.from_numpy(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)).permute(2, 0, 1)
    return out


def refill_outside(images: Tensor, rects: Tensor, fill: Tensor | Sequence[float]) -> Tensor:
    """Pixels of [B,3,H,W] whose centres lie outside ``rects`` [B,4] (x0, y0, x1, y1 in output
    pixels: where the source image landed) get ``fill`` ([3] or per sample [B,3]): the reference fills its Expand canvas
    after the photometric distortion, so the canvas colour is never distorted."""
    height, width = images.shape[-2:]
    ys = torch.arange(height, device=images.device, dtype=images.dtype) + 0.5
    xs = torch.arange(width, device=images.device, dtype=images.dtype) + 0.5
    rects = rects.to(images.device, images.dtype)
    inside_x = (xs[None] >= rects[:, 0:1]) & (xs[None] <= rects[:, 2:3])  # [B,W]
    inside_y = (ys[None] >= rects[:, 1:2]) & (ys[None] <= rects[:, 3:4])  # [B,H]
    inside = (inside_y[:, :, None] & inside_x[:, None, :]).unsqueeze(1)
    colour = torch.as_tensor(fill, dtype=images.dtype, device=images.device).view(-1, 3, 1, 1)
    return torch.where(inside, images, colour)


def prepare_batch_images(images: Tensor, normalization: Normalization, photometric: Tensor | None = None,
                         image_rects: Tensor | None = None, fill: Tensor | Sequence[float] | None = None) -> Tensor:
    """uint8 [B,3,H,W] -> normalised float32 (optionally distorted first); float input (already
    normalised, e.g. by a caller's own pipeline) is returned unchanged."""
    if images.dtype != torch.uint8:
        return images
    x = images.float()
    if photometric is not None:
        x = mb2_photometric(x, photometric)
        if image_rects is not None and fill is not None:
            x = refill_outside(x, image_rects, fill)
    return normalization(x)
