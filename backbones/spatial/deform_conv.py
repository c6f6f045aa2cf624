"""The deformable conv op (Dai et al., "Deformable Convolutional Networks", ICCV 2017): torchvision's
``DeformConv2d`` plus the conv that predicts its offsets, and a second implementation of the same
function in standard operations.

``DeformableConv2d(x)``: a kxk conv ``offset`` (same stride, padding and dilation, with bias,
zero-initialised: training starts on the regular grid) predicts ``2 * offset_groups * k * k``
offsets per output position (torchvision's layout: per offset group and kernel tap, (dy, dx));
with ``modulation`` (DCNv2, Zhu et al. 2019) it also predicts ``offset_groups * k * k`` mask
logits, and the mask is their sigmoid (0.5 at the start, as DCNv2). Then the kxk (grouped)
kernel is applied at the shifted, bilinearly sampled positions.

``offset_lr_mult`` is the paper's beta (section 2.1: the offset layers learn at beta times the
network's learning rate, beta = 1 by default): the offset conv carries it as ``lr_mult`` and
``tasks.base.parameter_groups`` gives its parameters that share of the optimizer's lr. With
AdamW (whose steps do not shrink with the gradient) a dense offset conv on a wide input moves
its offsets by many pixels early on; beta = 0.1 trains as fast as the plain network (measured:
README, "Spatial layers").

Implementations (``set_impl``), numerically equal:
- ``torchvision``: ``torchvision.ops.deform_conv2d`` (CPU and CUDA kernels; "auto" on CUDA);
- ``grid_sample``: every kernel tap's shifted samples with ``F.grid_sample`` (bilinear, zero
  outside the image: torchvision's rule), then one matmul with the kernel. torchvision's op has
  no ONNX symbolic; this form exports (GridSample, opset >= 16) and the FLOP counter sees its
  kernel MACs, so it is the ``reference_impl`` that export and ``benchmarks.complexity`` use;
  "auto" on CPU, where it is faster.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops import DeformConv2d, deform_conv2d

from errors import ConfigError

from ..pointwise.base import _check_impl
from .base import ZeroInitConv2d, conv_output_size, dense_kernel, spatial_conv_memory_access_cost

DEFORM_IMPLS = ("torchvision", "grid_sample")


def deform_conv2d_grid_sample(x: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor],
                              stride: tuple[int, int], padding: tuple[int, int],
                              dilation: tuple[int, int], mask: Optional[Tensor] = None) -> Tensor:
    """``torchvision.ops.deform_conv2d`` written with ``grid_sample`` and ``matmul``.

    Written here because no library offers an exportable deformable conv: sample every kernel
    tap at its offset position (pixel coordinates mapped for ``align_corners=False``, where
    ``(2 * p + 1) / size - 1`` is exactly pixel ``p``), then contract channels x taps with the
    kernel per group.
    """
    batch, channels, height, width = x.shape
    out_channels, channels_per_group, kh, kw = weight.shape
    groups = channels // channels_per_group
    taps = kh * kw
    out_h, out_w = offset.shape[-2:]
    offset_groups = offset.shape[1] // (2 * taps)
    # Regular grid: tap (i, j) of output (oy, ox) reads (oy*s - p + i*d, ox*s - p + j*d).
    ys = torch.arange(out_h, device=x.device, dtype=x.dtype) * stride[0] - padding[0]
    xs = torch.arange(out_w, device=x.device, dtype=x.dtype) * stride[1] - padding[1]
    ky = torch.arange(kh, device=x.device, dtype=x.dtype) * dilation[0]
    kx = torch.arange(kw, device=x.device, dtype=x.dtype) * dilation[1]
    base_y = (ky.view(kh, 1, 1, 1) + ys.view(1, 1, out_h, 1)).expand(kh, kw, out_h, 1).reshape(taps, out_h, 1)
    base_x = (kx.view(1, kw, 1, 1) + xs.view(1, 1, 1, out_w)).expand(kh, kw, 1, out_w).reshape(taps, 1, out_w)
    offset = offset.reshape(batch, offset_groups, taps, 2, out_h, out_w)
    sample_y = base_y + offset[:, :, :, 0]
    sample_x = base_x + offset[:, :, :, 1]
    grid = torch.stack(((2 * sample_x + 1) / width - 1, (2 * sample_y + 1) / height - 1), dim=-1)
    grid = grid.reshape(batch * offset_groups, taps * out_h, out_w, 2)
    sampled = F.grid_sample(x.reshape(batch * offset_groups, channels // offset_groups, height, width),
                            grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.reshape(batch, offset_groups, channels // offset_groups, taps, out_h * out_w)
    if mask is not None:
        sampled = sampled * mask.reshape(batch, offset_groups, 1, taps, out_h * out_w)
    columns = sampled.reshape(batch, groups, channels_per_group * taps, out_h * out_w)
    kernel = weight.reshape(groups, out_channels // groups, channels_per_group * taps)
    out = torch.matmul(kernel, columns).reshape(batch, out_channels, out_h, out_w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class DeformableConv2d(DeformConv2d):
    """torchvision's ``DeformConv2d`` (its ``weight`` and ``bias``) with its offset predictor
    ``offset`` (see the module docstring)."""

    impls = DEFORM_IMPLS
    reference_impl = "grid_sample"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, bias: bool = True, *,
                 offset_groups: int = 1, modulation: bool = False, offset_lr_mult: float = 1.0) -> None:
        if isinstance(offset_groups, bool) or not isinstance(offset_groups, int) or offset_groups < 1 \
                or in_channels % offset_groups:
            raise ConfigError(f"offset_groups must be a positive divisor of the input channels "
                              f"({in_channels}), got {offset_groups!r}")
        if isinstance(offset_lr_mult, bool) or not isinstance(offset_lr_mult, (int, float)) \
                or not offset_lr_mult >= 0:
            raise ConfigError(f"offset_lr_mult must be a number >= 0, got {offset_lr_mult!r}")
        if not isinstance(modulation, bool):
            raise ConfigError(f"modulation must be true or false, got {modulation!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.offset_groups = offset_groups
        self.modulation = modulation
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.offset = ZeroInitConv2d(in_channels, (3 if modulation else 2) * offset_groups * taps,
                                     kernel_size, stride, padding, dilation, bias=True)
        self.offset.lr_mult = float(offset_lr_mult)
        self._impl = "auto"

    # ------------------------------------------------------------------ implementations
    def set_impl(self, impl: str) -> None:
        _check_impl(self, impl)
        self._impl = impl

    @property
    def impl(self) -> str:
        return self._impl

    def resolved_impl(self, device: torch.device) -> str:
        """"auto": grid_sample on CPU (a cog_e2 training step with deform_depthwise at blocks
        7-13, 8 x 128 px: 4x faster than torchvision's CPU kernel, measured), torchvision's
        kernel elsewhere."""
        if self._impl != "auto":
            return self._impl
        return "grid_sample" if torch.device(device).type == "cpu" else "torchvision"

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        predicted = self.offset(x)
        if not self.modulation:
            return predicted, None
        taps = self.kernel_size[0] * self.kernel_size[1]
        offset, mask = predicted.split([2 * self.offset_groups * taps, self.offset_groups * taps], dim=1)
        return offset, torch.sigmoid(mask)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        offset, mask = self.offsets_and_mask(x)
        if self.resolved_impl(x.device) == "grid_sample":
            return deform_conv2d_grid_sample(x, offset, self.weight, self.bias, self.stride,
                                             self.padding, self.dilation, mask)
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask)

    # ------------------------------------------------------------------ the layer contract
    def fold_batchnorm(self, norm: Optional[nn.Module]) -> "DeformableConv2d":
        """A copy with a following eval-mode BatchNorm folded into the kernel and bias (the op is
        linear in them); the offset predictor is untouched."""
        fused = copy.deepcopy(self).eval()
        if norm is None or isinstance(norm, nn.Identity):
            return fused
        if not isinstance(norm, nn.BatchNorm2d) or norm.running_mean is None:
            raise TypeError(f"cannot fold {type(norm).__name__} into a deformable conv; fuse "
                            "supports BatchNorm2d with running statistics")
        fused.weight, fused.bias = fuse_conv_bn_weights(
            fused.weight, fused.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias)
        return fused

    def dense_equivalent(self) -> "DeformableConv2d":
        """The same function with a ``groups=1`` kernel (block-diagonal: deform_depthwise as deform)."""
        if self.groups == 1:
            return copy.deepcopy(self)
        dense = DeformableConv2d(self.in_channels, self.out_channels, self.kernel_size[0], self.stride[0],
                                 self.padding[0], self.dilation[0], 1, self.bias is not None,
                                 offset_groups=self.offset_groups, modulation=self.modulation,
                                 offset_lr_mult=self.offset.lr_mult)
        dense = dense.to(self.weight).train(self.training)
        with torch.no_grad():
            dense.weight.copy_(dense_kernel(self.weight, self.groups))
            if self.bias is not None:
                dense.bias.copy_(self.bias)
        dense.offset.load_state_dict(self.offset.state_dict())
        dense.set_impl(self._impl)
        return dense

    def memory_access_cost(self, h: int, w: int) -> int:
        """The offset conv's cost, then (im2col form, as torchvision's kernel runs it): read the
        input and the offsets (and mask), write and read the sampled columns (channels x taps per
        output position), read the kernel, write the output."""
        k, s, d = self.kernel_size[0], self.stride[0], self.dilation[0]
        taps = k * k
        h_out, w_out = conv_output_size(h, k, s, d), conv_output_size(w, k, s, d)
        offset_cost = spatial_conv_memory_access_cost(self.in_channels, self.offset.out_channels,
                                                      h, w, k, s, d)
        return (offset_cost + h * w * self.in_channels + h_out * w_out * self.offset.out_channels
                + 2 * self.in_channels * taps * h_out * w_out
                + taps * self.in_channels * self.out_channels // self.groups
                + h_out * w_out * self.out_channels)

    def extra_repr(self) -> str:
        return (f"offset_groups={self.offset_groups}, modulation={self.modulation}, "
                f"offset_lr_mult={self.offset.lr_mult}, "
                f"groups={self.groups}, impl={self._impl}")
