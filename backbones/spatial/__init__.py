"""Spatial (kxk) layers a network may use in place of its default kxk conv, chosen by name: the
twin of ``backbones.pointwise``.

    from backbones.spatial import list_spatial, build_spatial, SpatialPlan
    list_spatial()  # ['deform', 'deform_depthwise', 'depthwise', 'depthwise_separable', 'standard']

A new layer is one module in this folder that subclasses ``SpatialLayer`` (usually
``SpatialConvNormAct``) and registers itself with ``@register_spatial("name")``: every module here
is imported (and so registered) below.
"""
import importlib
import pkgutil

from .base import (
    SpatialConvNormAct,
    SpatialLayer,
    ZeroInitConv2d,
    conv_output_size,
    dense_kernel,
    is_kernel_module,
    spatial_conv_memory_access_cost,
    to_dense_kxk_conv,
)
from .registry import (
    SpatialPlan,
    SpatialSpec,
    build_spatial,
    list_spatial,
    register_spatial,
    spatial_options,
    spatial_spec,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .deform import DeformDepthwiseSpatial, DeformSpatial  # noqa: E402
from .deform_conv import DeformableConv2d, deform_conv2d_grid_sample  # noqa: E402
from .depthwise import DepthwiseSpatial  # noqa: E402
from .depthwise_separable import DepthwiseSeparableSpatial  # noqa: E402
from .standard import StandardSpatial  # noqa: E402

__all__ = [
    "DeformDepthwiseSpatial",
    "DeformSpatial",
    "DeformableConv2d",
    "DepthwiseSeparableSpatial",
    "DepthwiseSpatial",
    "SpatialConvNormAct",
    "SpatialLayer",
    "SpatialPlan",
    "SpatialSpec",
    "StandardSpatial",
    "ZeroInitConv2d",
    "build_spatial",
    "conv_output_size",
    "deform_conv2d_grid_sample",
    "dense_kernel",
    "is_kernel_module",
    "list_spatial",
    "register_spatial",
    "spatial_conv_memory_access_cost",
    "spatial_options",
    "spatial_spec",
    "to_dense_kxk_conv",
]
