"""MobileNetV1 and gpcMobileNet (seed 002, Table 6.1): one layout, registered as ``mobilenet_v1``
and ``gpc_mobilenet_16`` / ``_32`` / ``_64`` / ``_128``.

MobileNetV1 (Howard et al. 2017, Table 1; the Keras ``MobileNet`` seed 002 trained): a 3x3
stride-2 stem conv with 32 filters, then 13 depthwise-separable blocks (depthwise 3x3 -> BN ->
ReLU6 -> pointwise 1x1 -> BN -> ReLU6) with 64, 128, 128, 256, 256, 512 x 6, 1024, 1024 output
channels. No conv has a bias.

gpcMobileNet (the authors' public code, itsaravindanand/gpc-api ``gpc/mobilenet_v1.py``): every
pointwise conv is the ``kgroup`` layer with ``min_channels_per_group`` 16 / 32 / 64 / 128, with
swish (SiLU) after each of its BNs; the stem and depthwise convs keep ReLU6.

``features``: 0 the stem, 1..13 the blocks. Taps: stem(0), block1(1, stride 2), block3(3, 4),
block5(5, 8), block11(11, 16; roles "stride16" and "stride16_expansion"), block13(13, 32; role
"body", also "last"). MobileNetV1 has no expansion convs, so SSD-Lite's first map is the last
stride-16 block output (512 channels), the map qfgaohao's ``mb1-ssd-lite`` predicts from
(``source_layer_indexes = [12, 14]``: the output of the 11th block and of the last).

Pointwise conv role for ``pointwise_at``: "pointwise" (the 1x1 conv of every block). Spatial conv
role for ``spatial_at``: "depthwise" (the 3x3 conv of every block); ``spatial_positions`` are block
indices in ``features`` (1..13).

Departures from the Keras original, none of which changes a parameter count: convs are initialised
like torchvision's MobileNets (kaiming-normal fan-out; Keras: Glorot-uniform), stride-2 convs pad
symmetrically (Keras pads bottom/right only), BatchNorm uses PyTorch's eps 1e-5 / momentum 0.1 unless
``norm_eps`` / ``norm_momentum`` say otherwise (Keras: 1e-3 / 0.01 in PyTorch's convention), and
``width_mult`` rounds channels to multiples of 8 as torchvision (identical to Keras' ``int(c * alpha)``
at Keras' alphas 0.25, 0.5, 0.75, 1).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Iterable, Optional

from torch import Tensor, nn
from torchvision.models._utils import _make_divisible
from torchvision.ops.misc import Conv2dNormActivation

from .activations import ActivationSpec, resolve_activation
from .base import Backbone, FeatureInfo, plan_strides
from .options import batch_norm, check_width_mult
from .pointwise import PointwisePlan
from .pointwise.registry import PointwiseSpec
from .registry import register_backbone
from .spatial import SpatialPlan, SpatialSpec

STEM_CHANNELS = 32
# (output channels, stride) of the 13 depthwise-separable blocks (MobileNet paper, Table 1).
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)
POINTWISE_ROLES = ("pointwise",)
SPATIAL_ROLES = ("depthwise",)
# Tap name -> (index in ``features``, roles).
TAPS: dict[str, tuple[int, tuple[str, ...]]] = {
    "stem": (0, ()),
    "block1": (1, ()),
    "block3": (3, ()),
    "block5": (5, ()),
    "block11": (11, ("stride16", "stride16_expansion")),
    "block13": (13, ("body",)),
}


class DepthwiseSeparable(nn.Module):
    """depthwise 3x3 conv -> norm -> activation (the spatial plan's "depthwise" role), then the
    pointwise layer (with its own norm and activation) from the plan's "pointwise" role."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        *,
        dilation: int = 1,
        pointwise: PointwisePlan,
        spatial: SpatialPlan,
        position: Optional[int] = None,
        depthwise_activation: Callable[..., nn.Module] | None,
        pointwise_activation: Callable[..., nn.Module] | None,
        norm_layer: Callable[..., nn.Module],
        where: str = "block",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.dilation = dilation
        self.depthwise = spatial.build("depthwise", in_channels, in_channels, position=position,
                                       default="depthwise", kernel_size=3, stride=stride,
                                       dilation=dilation, norm_layer=norm_layer,
                                       activation_layer=depthwise_activation,
                                       where=f"{where} depthwise")
        self.pointwise = pointwise.build("pointwise", in_channels, out_channels, norm_layer=norm_layer,
                                         activation_layer=pointwise_activation, where=f"{where} pointwise")

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}, out={self.out_channels}, stride={self.stride}, "
                f"dilation={self.dilation}")


class MobileNetV1Backbone(Backbone):
    """MobileNetV1 ``features`` with a pointwise plan (see the module docstring).

    Args:
        name: registry name, reported by ``.name`` and stored in checkpoints.
        pointwise / pointwise_at: the pointwise layer spec and the conv roles it replaces
            ("pointwise").
        spatial / spatial_at / spatial_positions: the spatial layer spec, the conv roles it
            replaces ("depthwise") and at which blocks (indices in ``features``; None: all).
        width_mult: channel multiplier (Keras' alpha), rounded to multiples of 8.
        output_stride: 32, 16 or 8; later stride-2 depthwise convs become dilated stride-1 ones.
        activation: after the stem's norm.
        depthwise_activation / pointwise_activation: inside the blocks.
        norm_eps / norm_momentum: BatchNorm settings (PyTorch convention).
    """

    # Keras MobileNet's default classifier dropout (seed 002 does not state the rate it used).
    default_classifier_dropout = 1e-3

    def __init__(
        self,
        name: str = "mobilenet_v1",
        *,
        pointwise: PointwiseSpec = "dense",
        pointwise_at: Iterable[str] = POINTWISE_ROLES,
        spatial: SpatialSpec = "depthwise",
        spatial_at: Iterable[str] = SPATIAL_ROLES,
        spatial_positions: Optional[Iterable[int]] = None,
        width_mult: float = 1.0,
        output_stride: int = 32,
        activation: ActivationSpec = "relu6",
        depthwise_activation: ActivationSpec = "relu6",
        pointwise_activation: ActivationSpec = "relu6",
        norm_eps: float = 1e-5,
        norm_momentum: float = 0.1,
    ) -> None:
        super().__init__(name, output_stride)
        self.width_mult = check_width_mult(width_mult)
        plan = PointwisePlan.create(pointwise, pointwise_at, POINTWISE_ROLES)
        norm_layer = batch_norm(norm_eps, norm_momentum)
        stem_act = resolve_activation(activation, "activation")
        depthwise_act = resolve_activation(depthwise_activation, "depthwise_activation")
        pointwise_act = resolve_activation(pointwise_activation, "pointwise_activation")

        strides = plan_strides([2] + [s for _, s in BLOCKS], output_stride)
        spatial_plan = SpatialPlan.create(spatial, spatial_at, SPATIAL_ROLES, spatial_positions,
                                          valid_positions=range(1, len(BLOCKS) + 1))
        in_ch = _make_divisible(STEM_CHANNELS * width_mult, 8)
        layers: list[nn.Module] = [
            Conv2dNormActivation(3, in_ch, stride=2, norm_layer=norm_layer, activation_layer=stem_act)
        ]
        for index, ((channels, _), where) in enumerate(zip(BLOCKS, strides[1:]), start=1):
            out_ch = _make_divisible(channels * width_mult, 8)
            layers.append(DepthwiseSeparable(
                in_ch, out_ch, where.stride, dilation=where.dilation, pointwise=plan,
                spatial=spatial_plan, position=index,
                depthwise_activation=depthwise_act, pointwise_activation=pointwise_act,
                norm_layer=norm_layer, where=f"features.{index}",
            ))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.feature_info = [
            FeatureInfo(tap, layers[i].out_channels, strides[i].output_stride, i, roles=roles)
            for tap, (i, roles) in TAPS.items()
        ]
        self.init_weights()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, width_mult={self.width_mult}"


# A variant is the backbone class with its name and defaults bound (its overrides are the class'
# keyword arguments; backbones.backbone_overrides reads them from the partial's signature).
# MobileNetV1 (Keras MobileNet layout): ReLU6 after every BN; 3,217,226 params with a 10-class head.
register_backbone("mobilenet_v1")(partial(MobileNetV1Backbone, "mobilenet_v1"))

# gpcMobileNet: gpc-api's gpcType 1/2/3/4 = kgroup with at least 16/32/64/128 input channels per group.
GPC_MIN_CHANNELS_PER_GROUP = (16, 32, 64, 128)
for _min_cpg in GPC_MIN_CHANNELS_PER_GROUP:
    # gpcMobileNet: kgroup(min_channels_per_group) pointwise convs and SiLU after them (the
    # depthwise convs keep ReLU6).
    register_backbone(f"gpc_mobilenet_{_min_cpg}")(partial(
        MobileNetV1Backbone, f"gpc_mobilenet_{_min_cpg}",
        pointwise={"name": "kgroup", "min_channels_per_group": _min_cpg}, pointwise_activation="silu"))
