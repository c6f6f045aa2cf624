"""Inference fusion: every pointwise and spatial layer becomes its own fused form, remaining BNs
are folded."""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .pointwise import PointwiseConvOp, PointwiseLayer, to_dense_conv
from .pointwise.kgroup import KGroupGraph
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
      neighbours are fused: elsewhere registration order says nothing about data flow;
    - a norm that carries its own modules (timm's ``BatchNormAct2d``: drop, activation) leaves
      them in its place;
    - modules that know their other conv -> norm pairs (``fold_norms_for_inference()``, the timm
      backbone: it records them from the data flow) fold those last.
    """
    fused = copy.deepcopy(model).eval()
    replaced = _fused_form(fused)
    if replaced is not None:
        return replaced.eval()
    _fuse_children(fused)
    for module in list(fused.modules()):
        fold = getattr(module, "fold_norms_for_inference", None)
        if callable(fold):
            fold()
    return fused


def norm_remainder(norm: nn.Module) -> nn.Module:
    """What stays of a folded norm: nothing, or the modules it carries (timm's BatchNormAct2d
    applies its ``drop`` and ``act`` children after normalising)."""
    children = list(norm.children())
    return nn.Sequential(*children) if children else nn.Identity()


def _permutation(shuffle: nn.ChannelShuffle, channels: int) -> torch.Tensor:
    """``perm`` with ``shuffle(x)[:, i] == x[:, perm[i]]``."""
    return shuffle(torch.arange(channels, dtype=torch.float32).reshape(1, channels, 1, 1)).flatten().long()


def _scale_shift(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale + (norm.bias if norm.bias is not None else 0)
    return scale.detach(), shift.detach()


def _permuted_norm(norm: nn.BatchNorm2d, perm: torch.Tensor) -> nn.BatchNorm2d:
    """The norm that, applied before the shuffle ``perm``, equals ``norm`` after it."""
    moved = copy.deepcopy(norm)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            tensor = getattr(moved, name)
            if tensor is not None:
                tensor[perm] = getattr(norm, name).detach().clone()
    return moved


def _linear_chain(module: nn.Module) -> Optional[tuple[nn.Conv2d, Optional[nn.ChannelShuffle]]]:
    """(conv, shuffle or None) when ``module`` is a conv followed only by Identity / one shuffle."""
    if isinstance(module, nn.Conv2d):
        return module, None
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[0], nn.Conv2d):
        rest = list(module)[1:]
        shuffles = [m for m in rest if isinstance(m, nn.ChannelShuffle)]
        if all(isinstance(m, (nn.Identity, nn.ChannelShuffle)) for m in rest) and len(shuffles) <= 1:
            return module[0], (shuffles[0] if shuffles else None)
    return None


def fold_norm_into(producer: nn.Module, norm: nn.Module) -> Optional[tuple[nn.Module, nn.Module]]:
    """(``producer`` with the eval-mode BatchNorm ``norm`` folded in, what replaces ``norm``), or
    None when it cannot be folded. ``producer`` is a conv, a fused pointwise layer (a conv
    followed by Identity and at most one channel shuffle, folded through the permutation), or
    a fused kgroup graph (both grouped convs rescaled: their block structure is kept)."""
    if not isinstance(norm, nn.BatchNorm2d) or norm.running_mean is None or norm.running_var is None:
        return None
    chain = _linear_chain(producer)
    if chain is not None:
        conv, shuffle = chain
        if conv.out_channels != norm.num_features:
            return None
        folded_norm = norm if shuffle is None else _permuted_norm(norm, _permutation(shuffle, conv.out_channels))
        folded = fuse_conv_bn_eval(conv.eval(), folded_norm.eval())
        if isinstance(producer, nn.Conv2d):
            return folded, norm_remainder(norm)
        result = copy.deepcopy(producer)
        result[0] = folded
        return result, norm_remainder(norm)
    if isinstance(producer, KGroupGraph):
        return _fold_into_kgroup(producer, norm)
    return None


def _fold_into_kgroup(graph: KGroupGraph, norm: nn.BatchNorm2d) -> Optional[tuple[nn.Module, nn.Module]]:
    """norm(y + L(P y)) with y = K x: K' = diag(s) K, L' = diag(s) L diag(1 / P s), shift into L's bias."""
    first = _linear_chain(graph.first)
    second = None if graph.second is None else _linear_chain(graph.second)
    if first is None or first[1] is not None or (graph.second is not None and (second is None or second[1])):
        return None
    scale, shift = _scale_shift(norm)
    if graph.second is None:  # y or P y only: a conv followed by a shuffle
        chain = nn.Sequential(graph.first[0] if isinstance(graph.first, nn.Sequential) else graph.first,
                              *( [graph.interleave] if graph.interleave is not None else []))
        folded = fold_norm_into(chain, norm)
        return None if folded is None else (folded[0], folded[1])
    if bool((scale.abs() < 1e-12).any()):
        return None
    k, l_conv = copy.deepcopy(first[0]), copy.deepcopy(second[0])
    perm = (_permutation(graph.interleave, k.out_channels) if graph.interleave is not None
            else torch.arange(k.out_channels))
    in_scale = scale[perm]
    out_per, in_per = l_conv.out_channels // l_conv.groups, l_conv.in_channels // l_conv.groups
    group = torch.arange(l_conv.out_channels) // out_per
    in_index = group[:, None] * in_per + torch.arange(in_per)[None, :]
    with torch.no_grad():
        k.weight.mul_(scale.reshape(-1, 1, 1, 1))
        if k.bias is not None:
            k.bias.mul_(scale)
        l_conv.weight.mul_((scale[:, None] / in_scale[in_index]).reshape(l_conv.weight.shape))
        l_bias = l_conv.bias.detach() * scale if l_conv.bias is not None else torch.zeros_like(scale)
        l_conv.bias = nn.Parameter(l_bias + shift)
    return KGroupGraph(k, copy.deepcopy(graph.interleave), l_conv).eval(), norm_remainder(norm)


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
                module._modules[second] = norm_remainder(norm)
    for name, child in module.named_children():
        if not isinstance(child, (PointwiseLayer, SpatialLayer)):  # already fused above
            _fuse_children(child)
