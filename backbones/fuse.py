"""Inference fusion: every pointwise and spatial layer becomes its own fused form, remaining BNs
are folded."""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .pointwise import PointwiseConvOp, PointwiseLayer, to_dense_conv
from .spatial import SpatialLayer


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Returns a fused deep copy of ``model`` in eval mode; ``model`` itself is untouched.

    - every ``PointwiseLayer`` is replaced by its ``fuse()`` (BatchNorm folded; a COG conv becomes
      one dense 1x1 conv, so a deployed COG network has exactly MobileNetV2's layers);
    - every ``SpatialLayer`` is replaced by its ``fuse()`` (BatchNorm folded into its kxk conv,
      deformable convs included);
    - a bare ``PointwiseConvOp`` becomes its dense conv;
    - every other BatchNorm2d that directly follows a conv inside an ``nn.Sequential`` (stems,
      depthwise convs, heads) is folded into it and replaced by nn.Identity. Only Sequential
      neighbours are fused: elsewhere registration order says nothing about data flow.
    """
    fused = copy.deepcopy(model).eval()
    replaced = _fused_form(fused)
    if replaced is not None:
        return replaced.eval()
    _fuse_children(fused)
    return fused


def _fused_form(module: nn.Module) -> nn.Module | None:
    if isinstance(module, (PointwiseLayer, SpatialLayer)):
        return module.fuse()
    if isinstance(module, PointwiseConvOp):
        return to_dense_conv(module)
    return None


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(norm, nn.BatchNorm2d)
        and norm.running_mean is not None
        and norm.running_var is not None
        and conv.out_channels == norm.num_features
    )


def _fuse_children(module: nn.Module) -> None:
    names = list(module._modules)
    for name in names:
        replaced = _fused_form(module._modules[name])
        if replaced is not None:
            module._modules[name] = replaced
    if isinstance(module, nn.Sequential):
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if _foldable(conv, norm):
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
    for name, child in module.named_children():
        if not isinstance(child, (PointwiseLayer, SpatialLayer)):  # already fused above
            _fuse_children(child)
