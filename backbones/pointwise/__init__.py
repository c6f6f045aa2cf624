"""Pointwise (1x1) layers a block may use in place of a dense 1x1 conv, chosen by name.

    from backbones.pointwise import list_pointwise, build_pointwise
    list_pointwise()  # ['cog', 'dense', 'group', 'group_shuffle', 'kgroup']

A new layer is one module in this folder that subclasses ``PointwiseLayer`` (usually
``PointwiseConvNormAct``) and registers itself with ``@register_pointwise("name")``: every module
here is imported (and so registered) below, and every backbone family, fusion, export, the
complexity benchmark and the configs (``backbone.pointwise.name=...``) then handle it.
"""
import importlib
import pkgutil

from .base import (
    PointwiseConvNormAct,
    PointwiseConvOp,
    PointwiseLayer,
    conv_memory_access_cost,
    copy_memory_access_cost,
    dense_weight,
    is_conv_weight_module,
    to_dense_conv,
    using_impl,
)
from .registry import (
    PointwisePlan,
    build_pointwise,
    list_pointwise,
    pointwise_options,
    pointwise_spec,
    register_pointwise,
)

# Importing the layer modules registers them: every module of this package.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .dense import DensePointwise  # noqa: E402
from .group import GroupPointwise, GroupShufflePointwise  # noqa: E402
from .cog import ChannelOverlapConv2d, ChannelOverlapPointwise  # noqa: E402
from .kgroup import KGroupPointwise  # noqa: E402

__all__ = [
    "ChannelOverlapConv2d",
    "ChannelOverlapPointwise",
    "DensePointwise",
    "GroupPointwise",
    "GroupShufflePointwise",
    "KGroupPointwise",
    "PointwiseConvNormAct",
    "PointwiseConvOp",
    "PointwiseLayer",
    "PointwisePlan",
    "build_pointwise",
    "conv_memory_access_cost",
    "copy_memory_access_cost",
    "dense_weight",
    "is_conv_weight_module",
    "list_pointwise",
    "pointwise_options",
    "pointwise_spec",
    "register_pointwise",
    "to_dense_conv",
    "using_impl",
]
