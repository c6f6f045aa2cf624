"""What every spatial (kxk) layer provides, so fusion, export, complexity and init never ask its
type: the twin of ``backbones.pointwise.base``.

A *spatial layer* replaces one ``kxk conv -> norm -> activation`` unit (a MobileNet block's
depthwise conv, a plain 3x3 conv). Every registered layer (``backbones.spatial.registry``) is a
``SpatialLayer``:

- ``fuse()``: an inference-equivalent module, BatchNorm folded into the conv (deformable convs
  too: they are linear in their kernel);
- ``dense_equivalent()``: the same function with every grouped (depthwise) kxk conv as a dense
  (``groups=1``) conv with a block-diagonal kernel, norms and activations kept;
- ``memory_access_cost(h, w)``: ShuffleNetV2's memory access cost at batch 1 for an ``h x w``
  input, in tensor elements (``benchmarks.complexity``);
- ``set_impl(impl)`` / ``impls`` / ``reference_impl``: numerically equal implementations (the
  deformable conv: torchvision's kernel, or bilinear ``grid_sample`` + matmul, which ONNX exports
  and whose operations count its MACs).

Most layers are laid out like torchvision's ``Conv2dNormActivation`` (children "0" conv, "1"
norm, "2" activation): ``SpatialConvNormAct``, so the default ``depthwise`` layer has exactly the
keys, parameters and initialisation of the conv every family hard-coded before.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.ops.misc import ConvNormActivation

from errors import ConfigError

from ..pointwise.base import (ConvLayerInterface, _check_impl, _parameters, fold_batchnorm,
                              is_conv_weight_module)


class ZeroInitConv2d(nn.Conv2d):
    """A conv whose weight and bias start at zero and stay so through every init scheme (the
    backbones' and heads' init skip it): a deformable conv's offset predictor, zero-initialised
    as in Dai et al. 2017 (section 2.1), so training starts from the regular sampling grid."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def is_kernel_module(module: nn.Module) -> bool:
    """Modules whose ``weight`` the backbones initialise as a conv kernel: convs, pointwise ops and
    deformable convs, but not the zero-initialised offset predictors."""
    from torchvision.ops import DeformConv2d

    return (is_conv_weight_module(module) or isinstance(module, DeformConv2d)) \
        and not isinstance(module, ZeroInitConv2d)


def conv_output_size(size: int, kernel_size: int, stride: int, dilation: int) -> int:
    """Output length of a conv with padding ``dilation * (kernel_size - 1) // 2``."""
    padding = dilation * (kernel_size - 1) // 2
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def spatial_conv_memory_access_cost(c_in: int, c_out: int, h: int, w: int, kernel_size: int,
                                    stride: int = 1, dilation: int = 1, groups: int = 1) -> int:
    """ShuffleNetV2's memory access cost of a kxk (group) conv at batch 1, in elements, for an
    ``h x w`` input: read the input map, write the output map, read the kernel (Ma et al., ECCV
    2018, Sec. 2; their 1x1 formula with the kxk kernel and the stride's smaller output)."""
    h_out = conv_output_size(h, kernel_size, stride, dilation)
    w_out = conv_output_size(w, kernel_size, stride, dilation)
    return h * w * c_in + h_out * w_out * c_out + kernel_size * kernel_size * c_in * c_out // groups


def dense_kernel(weight: Tensor, groups: int) -> Tensor:
    """``(out, in/groups, kh, kw)`` grouped kernel -> the ``(out, in, kh, kw)`` dense kernel with
    the groups' blocks on the diagonal (zeros elsewhere)."""
    if groups == 1:
        return weight
    out_channels, in_per_group = weight.shape[:2]
    out_per_group = out_channels // groups
    dense = weight.new_zeros(out_channels, in_per_group * groups, *weight.shape[2:])
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        dense[rows, g * in_per_group:(g + 1) * in_per_group] = weight[rows]
    return dense


def to_dense_kxk_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A ``groups=1`` copy of the (grouped) conv ``conv`` computing the same function."""
    dense = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, groups=1, bias=conv.bias is not None,
                      padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        dense.weight.copy_(dense_kernel(conv.weight, conv.groups))
        if conv.bias is not None:
            dense.bias.copy_(conv.bias)
    return dense.train(conv.training)


class SpatialLayer(ConvLayerInterface):
    """Interface of every registered spatial layer (see the module docstring)."""


class SpatialConvNormAct(ConvNormActivation, SpatialLayer):
    """``conv (kxk) -> norm -> activation``, torchvision's Conv2dNormActivation layout.

    ``conv_layer(in_channels, out_channels, kernel_size, stride, padding, dilation=, groups=,
    bias=)`` builds the conv: an ``nn.Conv2d`` or a conv op torch has no layer for (the
    deformable conv), which provides ``fold_batchnorm(norm)``, ``dense_equivalent()``,
    ``memory_access_cost(h, w)`` and its implementations.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: Optional[bool] = None,
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = None,
        conv_layer: Callable[..., nn.Module] = nn.Conv2d,
    ) -> None:
        for what, value in (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{what} must be a positive integer, got {value!r}")
        if kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd (padding keeps the map centred), got {kernel_size}")
        # In-place where the activation can (ReLU6, SiLU), as torchvision.
        inplace = True if activation_layer is not None and "inplace" in _parameters(activation_layer) else None
        super().__init__(
            in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=None,
            groups=groups, norm_layer=norm_layer, activation_layer=activation_layer,
            dilation=dilation, conv_layer=conv_layer, bias=bias, inplace=inplace,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.groups = groups

    @property
    def conv(self) -> nn.Module:
        return self[0]

    def _after_conv(self) -> tuple[Optional[nn.Module], list[nn.Module]]:
        rest = list(self)[1:]
        if rest and isinstance(rest[0], nn.modules.batchnorm._NormBase):
            return rest[0], rest[1:]
        return None, rest

    @property
    def impls(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(getattr(self.conv, "impls", ()))

    @property
    def reference_impl(self) -> Optional[str]:  # type: ignore[override]
        return getattr(self.conv, "reference_impl", None)

    def set_impl(self, impl: str) -> None:
        if self.impls:
            self.conv.set_impl(impl)
        else:
            _check_impl(self, impl)

    @property
    def impl(self) -> str:  # type: ignore[override]
        return getattr(self.conv, "impl", "auto")

    def resolved_impl(self, device: torch.device) -> Optional[str]:
        resolve = getattr(self.conv, "resolved_impl", None)
        return resolve(device) if resolve is not None else None

    def dense_equivalent(self) -> nn.Module:
        conv = self.conv
        dense = to_dense_kxk_conv(conv) if isinstance(conv, nn.Conv2d) else conv.dense_equivalent()
        return nn.Sequential(dense, *copy.deepcopy(list(self)[1:]))

    def fuse(self) -> nn.Module:
        norm, rest = self._after_conv()
        if isinstance(self.conv, nn.Conv2d):
            folded = fold_batchnorm(self.conv, norm)
        else:
            folded = self.conv.fold_batchnorm(norm)
        return nn.Sequential(folded, *copy.deepcopy(rest)).eval()

    def memory_access_cost(self, h: int, w: int) -> int:
        conv = self.conv
        if isinstance(conv, nn.Conv2d):
            return spatial_conv_memory_access_cost(self.in_channels, self.out_channels, h, w,
                                                   self.kernel_size, self.stride, self.dilation,
                                                   self.groups)
        return conv.memory_access_cost(h, w)
