"""Backbones: MobileNetV2 / COG-MobileNet families, the COG conv, weight loading and fusion."""
from . import families as _families  # noqa: F401  (registers the backbones)
from .channel_overlap_conv import ChannelOverlapConv2d
from .fuse import fuse_for_inference
from .inverted_residual import InvertedResidual
from .mobilenet import MobileNetBackbone
from .pretrained import LoadReport, load_backbone_weights
from .registry import FeatureInfo, create_backbone, list_backbones, register_backbone
from .torchvision_convert import convert_torchvision_mobilenet_v2

__all__ = [
    "ChannelOverlapConv2d",
    "FeatureInfo",
    "InvertedResidual",
    "LoadReport",
    "MobileNetBackbone",
    "convert_torchvision_mobilenet_v2",
    "create_backbone",
    "fuse_for_inference",
    "list_backbones",
    "load_backbone_weights",
    "register_backbone",
]
