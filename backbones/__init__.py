"""Backbones: a registry of families built on one contract (``backbones.base.Backbone``), the
pointwise-layer registry (``backbones.pointwise``), weight loading and inference fusion."""
from . import mobilenet_v2 as _mobilenet_v2  # noqa: F401  (registers mv2_eX / cog_eX)
from . import mobilenet_v1 as _mobilenet_v1  # noqa: F401  (registers mobilenet_v1 / gpc_mobilenet_N)
from . import efficientnet as _efficientnet  # noqa: F401  (registers efficientnet_b0 / keffnet_b0)
from . import simple_cnn as _simple_cnn  # noqa: F401  (registers simple_cnn / simple_dsc / simple_deform)
from . import timm_backbone as _timm_backbone  # noqa: F401  (registers timm: any timm model)
from .base import ROLES, Backbone, FeatureInfo, plan_strides
from .fuse import fuse_for_inference
from .efficientnet import EfficientNetBackbone
from .expansion_block import ExpansionBlock
from .inverted_residual import InvertedResidual
from .mbconv import MBConv
from .mobilenet_v1 import MobileNetV1Backbone
from .mobilenet_v2 import MobileNetV2Backbone
from .pointwise import (
    ChannelOverlapConv2d,
    PointwiseLayer,
    build_pointwise,
    list_pointwise,
    register_pointwise,
)
from .pretrained import LoadReport, load_backbone_weights
from .timm_backbone import TimmBackbone
from .registry import backbone_overrides, create_backbone, list_backbones, register_backbone
from .torchvision_convert import convert_torchvision_efficientnet_b0, convert_torchvision_mobilenet_v2

__all__ = [
    "Backbone",
    "ChannelOverlapConv2d",
    "EfficientNetBackbone",
    "FeatureInfo",
    "ExpansionBlock",
    "InvertedResidual",
    "LoadReport",
    "MBConv",
    "MobileNetV1Backbone",
    "MobileNetV2Backbone",
    "PointwiseLayer",
    "ROLES",
    "TimmBackbone",
    "backbone_overrides",
    "build_pointwise",
    "convert_torchvision_efficientnet_b0",
    "convert_torchvision_mobilenet_v2",
    "create_backbone",
    "fuse_for_inference",
    "list_backbones",
    "list_pointwise",
    "load_backbone_weights",
    "plan_strides",
    "register_backbone",
    "register_pointwise",
]
