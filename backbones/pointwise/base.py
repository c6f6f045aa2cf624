"""What every pointwise layer provides, so fusion, export, complexity and init never ask its type.

A *pointwise layer* replaces one ``1x1 conv -> norm -> activation`` unit of a block. Every
registered layer (see ``backbones.pointwise.registry``) is a ``PointwiseLayer``:

- ``fuse()``: an inference-equivalent module made of standard layers, BatchNorm folded
  (what ``backbones.fuse_for_inference`` and the ONNX export use);
- ``dense_equivalent()``: the same function with every pointwise conv as one plain dense
  ``nn.Conv2d`` (norms and activations kept): the layer's "dense 1x1 weight";
- ``memory_access_cost(h, w)``: ShuffleNetV2's memory access cost of the layer at batch 1, in
  tensor elements (``benchmarks.complexity``);
- ``set_impl(impl)``: choose among numerically equal implementations (``impls``); a layer with
  one implementation accepts only "auto";
- ``reference_impl``: the implementation whose operations count the layer's MACs honestly
  (e.g. COG's grouped conv, not the block-sparse dense conv with its zeros).

Most layers are one conv + norm + activation laid out like torchvision's
``Conv2dNormActivation`` (children "0" conv, "1" norm, "2" activation), so checkpoints and
torchvision weight conversion see the same keys whatever the layer: ``PointwiseConvNormAct``.
Their conv is either an ``nn.Conv2d`` (dense or grouped) or a ``PointwiseConvOp``, the base for
pointwise convs that torch does not have (COG).
"""
from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Callable, Iterator
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops.misc import ConvNormActivation

from errors import ConfigError


class PointwiseConvOp(nn.Module):
    """A linear 1x1 conv torch has no layer for. Subclasses hold ``weight`` (initialised like a
    conv weight by the backbones), ``bias`` (or None) and implement ``dense_weight()``."""

    in_channels: int
    out_channels: int
    weight: nn.Parameter
    bias: Optional[nn.Parameter]
    impls: tuple[str, ...] = ()
    reference_impl: Optional[str] = None

    def dense_weight(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def memory_access_cost(self, h: int, w: int) -> int:
        return conv_memory_access_cost(self.in_channels, self.out_channels, h, w, 1)

    def set_impl(self, impl: str) -> None:
        _check_impl(self, impl)

    @property
    def impl(self) -> str:
        return "auto"


def is_conv_weight_module(module: nn.Module) -> bool:
    """Modules whose ``weight`` is a conv kernel (initialised as one by the backbones)."""
    return isinstance(module, (nn.Conv2d, PointwiseConvOp))


def dense_weight(conv: nn.Module) -> Tensor:
    """The dense ``(out, in, 1, 1)`` weight of a 1x1 conv: grouped convs become block-diagonal."""
    if isinstance(conv, PointwiseConvOp):
        return conv.dense_weight()
    if isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == (1, 1):
        if conv.groups == 1:
            return conv.weight
        blocks = conv.weight.flatten(1).chunk(conv.groups, dim=0)
        return torch.block_diag(*blocks).reshape(conv.out_channels, conv.in_channels, 1, 1)
    raise TypeError(f"dense_weight needs a 1x1 conv, got {conv}")


def to_dense_conv(conv: nn.Module) -> nn.Conv2d:
    """A plain dense 1x1 ``nn.Conv2d`` computing the same function as the 1x1 conv ``conv``."""
    weight = dense_weight(conv)
    dense = nn.Conv2d(weight.shape[1], weight.shape[0], kernel_size=1, bias=conv.bias is not None,
                      device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        dense.weight.copy_(weight)
        if conv.bias is not None:
            dense.bias.copy_(conv.bias)
    return dense.train(conv.training)


def conv_memory_access_cost(c_in: int, c_out: int, h: int, w: int, groups: int = 1) -> int:
    """ShuffleNetV2's memory access cost of a 1x1 (group) conv at batch 1, in elements.

    Ma et al., ECCV 2018, Sec. 2, G1 and Eq. 2 (G2): ``h*w*(c_in + c_out) + c_in*c_out/g`` -- read
    the input map, write the output map, read the kernel (bias ignored, as in the paper).
    """
    return h * w * (c_in + c_out) + c_in * c_out // groups


def copy_memory_access_cost(channels: int, h: int, w: int) -> int:
    """A tensor copy (concatenation, channel shuffle): read it once and write it once."""
    return 2 * channels * h * w


def fold_batchnorm(conv: nn.Module, norm: Optional[nn.Module]) -> nn.Module:
    """``conv`` with a following eval-mode BatchNorm folded in (a copy; inputs untouched)."""
    conv = copy.deepcopy(conv)
    if isinstance(norm, nn.BatchNorm2d) and norm.running_mean is not None:
        return fuse_conv_bn_eval(conv.eval(), norm.eval())
    if norm is None or isinstance(norm, nn.Identity):
        return conv
    raise TypeError(f"cannot fold {type(norm).__name__} into a conv; fuse supports BatchNorm2d")


def _parameters(factory: Callable[..., nn.Module]) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # builtins without a signature
        return set()


def _check_impl(layer: nn.Module, impl: str) -> None:
    allowed = ("auto",) + tuple(getattr(layer, "impls", ()))
    if impl not in allowed:
        raise ConfigError(
            f"{type(layer).__name__} has no implementation {impl!r}; choose one of {list(allowed)}."
        )


class ConvLayerInterface(nn.Module):
    """What every registered conv layer provides, pointwise (``PointwiseLayer``) or spatial
    (``backbones.spatial.base.SpatialLayer``): fusion, a dense equivalent, its memory-access
    cost, and its implementations."""

    in_channels: int
    out_channels: int
    impls: tuple[str, ...] = ()
    reference_impl: Optional[str] = None

    def fuse(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def dense_equivalent(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def memory_access_cost(self, h: int, w: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_impl(self, impl: str) -> None:
        _check_impl(self, impl)

    @property
    def impl(self) -> str:
        """The implementation setting ("auto" for layers with one implementation)."""
        return "auto"

    def resolved_impl(self, device: torch.device) -> Optional[str]:
        """The implementation that runs on ``device`` (None: the layer has only one)."""
        return None


class PointwiseLayer(ConvLayerInterface):
    """Interface of every registered pointwise layer (see the module docstring)."""


@contextlib.contextmanager
def using_impl(model: nn.Module, impl: Optional[str]) -> Iterator[int]:
    """Temporarily runs every layer of ``model`` that offers ``impl`` with it (pointwise layers,
    and anything else with ``impls`` / ``set_impl``: the spatial layers' deformable convs);
    "reference" picks each layer's ``reference_impl``; None changes nothing. Yields how many
    layers were switched."""
    layers = [m for m in model.modules()
              if (isinstance(m, (PointwiseLayer, PointwiseConvOp)) or hasattr(m, "set_impl"))
              and getattr(m, "impls", ())]
    previous = [m.impl for m in layers]
    switched = 0
    try:
        for m in layers if impl is not None else ():
            chosen = m.reference_impl if impl == "reference" else impl
            if chosen in m.impls:
                m.set_impl(chosen)
                switched += 1
        yield switched
    finally:
        for m, old in zip(layers, previous):
            m.set_impl(old)


class PointwiseConvNormAct(ConvNormActivation, PointwiseLayer):
    """``conv (1x1) -> norm -> activation [-> post]``, torchvision's Conv2dNormActivation layout.

    ``conv_layer(in_channels, out_channels, kernel_size, stride, padding, dilation=, groups=,
    bias=)`` builds the conv (an ``nn.Conv2d`` or a ``PointwiseConvOp``). Subclasses may append
    modules after the activation (a channel shuffle).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        groups: int = 1,
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = None,
        conv_layer: Callable[..., nn.Module] = nn.Conv2d,
        bias: Optional[bool] = None,
    ) -> None:
        # In-place where the activation can (ReLU6, SiLU), as torchvision; Sigmoid cannot.
        inplace = True if activation_layer is not None and "inplace" in _parameters(activation_layer) else None
        super().__init__(
            in_channels, out_channels, kernel_size=1, stride=1, padding=0, groups=groups,
            norm_layer=norm_layer, activation_layer=activation_layer, conv_layer=conv_layer,
            bias=bias, inplace=inplace,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels

    @property
    def conv(self) -> nn.Module:
        return self[0]

    def _after_conv(self) -> tuple[Optional[nn.Module], list[nn.Module]]:
        """(the norm right after the conv or None, the modules after it)."""
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
        if isinstance(self.conv, PointwiseConvOp):
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
        return nn.Sequential(to_dense_conv(self.conv), *copy.deepcopy(list(self)[1:]))

    def fuse(self) -> nn.Module:
        norm, rest = self._after_conv()
        # COG and other ops torch lacks run as their dense conv; nn.Conv2d (grouped too) stays.
        conv = to_dense_conv(self.conv) if isinstance(self.conv, PointwiseConvOp) else self.conv
        return nn.Sequential(fold_batchnorm(conv, norm), *copy.deepcopy(rest)).eval()

    def memory_access_cost(self, h: int, w: int) -> int:
        conv = self.conv
        if isinstance(conv, PointwiseConvOp):
            cost = conv.memory_access_cost(h, w)
        else:
            cost = conv_memory_access_cost(conv.in_channels, conv.out_channels, h, w, conv.groups)
        # Norm and activation fold into the conv at inference; post modules (a shuffle) copy.
        _, rest = self._after_conv()
        copies = sum(1 for m in rest if isinstance(m, nn.ChannelShuffle))
        return cost + copies * copy_memory_access_cost(self.out_channels, h, w)
