"""Inference fusion: fold BatchNorm into the preceding conv, turn COG convs into dense convs."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .channel_overlap_conv import ChannelOverlapConv2d


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Returns a fused deep copy of ``model`` in eval mode; ``model`` itself is untouched.

    - every ChannelOverlapConv2d becomes one dense 1x1 nn.Conv2d with the block-sparse weight,
      so a deployed COG network has exactly MobileNetV2's layers;
    - every BatchNorm2d that directly follows a conv inside an ``nn.Sequential`` (as in
      torchvision's Conv2dNormActivation and our blocks) is folded into it and replaced by
      nn.Identity. Only Sequential neighbours are fused: elsewhere registration order says
      nothing about data flow.
    """
    fused = copy.deepcopy(model).eval()
    if isinstance(fused, ChannelOverlapConv2d):
        return to_dense_conv(fused).eval()
    _fuse_children(fused)
    return fused


def to_dense_conv(cog: ChannelOverlapConv2d) -> nn.Conv2d:
    """A dense 1x1 nn.Conv2d computing the same function as ``cog``."""
    weight = cog.weight
    conv = nn.Conv2d(
        cog.in_channels, cog.out_channels, kernel_size=1, bias=cog.bias is not None,
        device=weight.device, dtype=weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(cog.dense_weight())
        if cog.bias is not None:
            conv.bias.copy_(cog.bias)
    return conv.train(cog.training)


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
        if isinstance(module._modules[name], ChannelOverlapConv2d):
            module._modules[name] = to_dense_conv(module._modules[name])
    if isinstance(module, nn.Sequential):
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if _foldable(conv, norm):
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
    for child in module.children():
        _fuse_children(child)
