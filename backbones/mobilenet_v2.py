"""MobileNetV2 and COG-MobileNet (thesis Table 4.3): one layout, registered as mv2_eX / cog_eX.

``features`` is laid out as torchvision's ``mobilenet_v2().features`` (0 stem conv, 1..17
inverted-residual blocks, 18 the 1x1 conv to 1280 channels), so ``mv2_e6`` loads torchvision
weights. Taps: stem(0), stage1(1), stage2(3), stage3(6), stage4(13, role "stride16"),
stage5_expand (the expansion output inside block 14, role "stride16_expansion"), stage5(16),
stage6(17, role "body"), last_conv(18).

Pointwise conv roles for ``pointwise_at``: "expand" and "project" (every block), "last" (the
320 -> 1280 conv). Spatial conv role for ``spatial_at``: "depthwise" (the 3x3 conv of every
block); ``spatial_positions`` are block indices in ``features`` (1..17).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from torch import nn
from torchvision.models._utils import _make_divisible
from torchvision.ops.misc import Conv2dNormActivation

from errors import ConfigError

from .activations import ActivationSpec, resolve_activation
from .base import EXPANSION, OUTPUT, Backbone, FeatureInfo, plan_strides
from .inverted_residual import InvertedResidual
from .pointwise import PointwisePlan
from .pointwise.registry import PointwiseSpec
from .registry import register_backbone
from .spatial import SpatialPlan, SpatialSpec

STEM_CHANNELS = 32
LAST_CHANNELS = 1280
POINTWISE_ROLES = ("expand", "project", "last")
SPATIAL_ROLES = ("depthwise",)

# torchvision's mobilenet_v2 inverted_residual_setting without t: (channels c, repeats n, stride s).
# The first stage always has t=1; every later block uses the backbone's expand_ratio.
STAGES: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1),
    (24, 2, 2),
    (32, 3, 2),
    (64, 4, 2),
    (96, 3, 1),
    (160, 3, 2),
    (320, 1, 1),
)
# Tap name -> (index in ``features``, kind, roles).
TAPS: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "stem": (0, OUTPUT, ()),
    "stage1": (1, OUTPUT, ()),
    "stage2": (3, OUTPUT, ()),
    "stage3": (6, OUTPUT, ()),
    "stage4": (13, OUTPUT, ("stride16",)),
    "stage5_expand": (14, EXPANSION, ("stride16_expansion",)),
    "stage5": (16, OUTPUT, ()),
    "stage6": (17, OUTPUT, ("body",)),
    "last_conv": (18, OUTPUT, ()),
}


class MobileNetV2Backbone(Backbone):
    """MobileNetV2 ``features`` with a pointwise plan.

    Args:
        name: registry name, reported by ``.name`` and stored in checkpoints.
        expand_ratio: t of every block after the first (the first block has t=1).
        pointwise / pointwise_at: the pointwise layer spec and the conv roles it replaces.
        spatial / spatial_at / spatial_positions: the spatial layer spec, the conv roles it
            replaces ("depthwise") and at which blocks (indices in ``features``; None: all).
        expand_first_block: give the t=1 first block an expansion conv too (COG-MobileNet
            does; thesis section 4.3, Table 4.2).
        width_mult: channel multiplier, rounded like torchvision (multiples of 8).
        output_stride: 32, 16 or 8; later stride-2 blocks become stride-1, dilated ones.
        activation: after the stem and last conv norms.
        expand_activation / depthwise_activation: inside the blocks.
    """

    def __init__(
        self,
        name: str = "mobilenet_v2",
        *,
        expand_ratio: float = 6,
        pointwise: PointwiseSpec = "dense",
        pointwise_at: Iterable[str] = ("expand",),
        spatial: SpatialSpec = "depthwise",
        spatial_at: Iterable[str] = SPATIAL_ROLES,
        spatial_positions: Optional[Iterable[int]] = None,
        expand_first_block: bool = False,
        width_mult: float = 1.0,
        output_stride: int = 32,
        activation: ActivationSpec = "relu6",
        expand_activation: ActivationSpec = "relu6",
        depthwise_activation: ActivationSpec = "relu6",
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__(name, output_stride)
        if not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ConfigError(f"width_mult must be > 0, got {width_mult!r}.")
        self.width_mult = width_mult
        plan = PointwisePlan.create(pointwise, pointwise_at, POINTWISE_ROLES)
        outer_act = resolve_activation(activation, "activation")

        blocks = [(c, 1 if stage == 0 else expand_ratio, s if i == 0 else 1)
                  for stage, (c, n, s) in enumerate(STAGES) for i in range(n)]
        strides = plan_strides([2] + [s for _, _, s in blocks] + [1], output_stride)
        spatial_plan = SpatialPlan.create(spatial, spatial_at, SPATIAL_ROLES, spatial_positions,
                                          valid_positions=range(1, len(blocks) + 1))

        in_ch = _make_divisible(STEM_CHANNELS * width_mult, 8)
        layers: list[nn.Module] = [
            Conv2dNormActivation(3, in_ch, stride=2, norm_layer=norm_layer, activation_layer=outer_act)
        ]
        for index, ((channels, t, _), where) in enumerate(zip(blocks, strides[1:]), start=1):
            out_ch = _make_divisible(channels * width_mult, 8)
            layers.append(InvertedResidual(
                in_ch, out_ch, where.stride, t,
                dilation=where.dilation,
                stage_start=where.nominal > 1,
                pointwise=plan,
                spatial=spatial_plan,
                position=index,
                force_expand=expand_first_block,
                expand_activation=expand_activation,
                depthwise_activation=depthwise_activation,
                norm_layer=norm_layer,
                where=f"features.{index}",
            ))
            in_ch = out_ch
        last_ch = _make_divisible(LAST_CHANNELS * max(1.0, width_mult), 8)
        layers.append(plan.build("last", in_ch, last_ch, norm_layer=norm_layer,
                                 activation_layer=outer_act, where=f"features.{len(layers)}"))
        self.features = nn.Sequential(*layers)

        def channels(index: int, kind: str) -> int:
            layer = layers[index]
            return layer.hidden_channels if kind == EXPANSION else layer.out_channels

        def stride_of(index: int, kind: str) -> int:
            # An expansion output comes before its block's (possibly strided) depthwise conv.
            return strides[index - 1 if kind == EXPANSION else index].output_stride

        self.feature_info = [FeatureInfo(tap, channels(i, kind), stride_of(i, kind), i, kind, roles)
                             for tap, (i, kind, roles) in TAPS.items()]
        self.init_weights()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, width_mult={self.width_mult}"


EXPANSION_RATIOS = (2, 4, 6)


def _family(name: str, expand_ratio: int, defaults: dict[str, Any], doc: str):
    def factory(
        *,
        width_mult: float = 1.0,
        output_stride: int = 32,
        pointwise: PointwiseSpec = defaults["pointwise"],
        pointwise_at: Iterable[str] = ("expand",),
        spatial: SpatialSpec = "depthwise",
        spatial_at: Iterable[str] = SPATIAL_ROLES,
        spatial_positions: Optional[Iterable[int]] = None,
        expand_first_block: bool = defaults["expand_first_block"],
        activation: ActivationSpec = "relu6",
        expand_activation: ActivationSpec = defaults["block_activation"],
        depthwise_activation: ActivationSpec = defaults["block_activation"],
    ) -> MobileNetV2Backbone:
        return MobileNetV2Backbone(
            name, expand_ratio=expand_ratio, pointwise=pointwise, pointwise_at=pointwise_at,
            spatial=spatial, spatial_at=spatial_at, spatial_positions=spatial_positions,
            expand_first_block=expand_first_block, width_mult=width_mult,
            output_stride=output_stride, activation=activation,
            expand_activation=expand_activation, depthwise_activation=depthwise_activation,
        )

    factory.__doc__ = doc.format(t=expand_ratio)
    return factory


# mv2_e6 is torchvision's mobilenet_v2().features (ReLU6 everywhere, t=1 first block).
MV2 = {"pointwise": "dense", "expand_first_block": False, "block_activation": "relu6"}
# COG-MobileNet (thesis sections 4.1-4.3): every expansion conv is COG(groups=4, overlap=1) + BN,
# the t=1 first block gets one too (32 -> 32), blocks use SiLU (after the expansion BN and after
# the depthwise BN; whether SiLU follows the expansion BN is ambiguous in the thesis, hence the
# expand_activation option). Stem and last conv stay MobileNetV2's (ReLU6), so a comparison
# measures the block design. With a 1000-class head: 2,175,528 / 2,652,520 / 3,129,512 params.
COG = {"pointwise": {"name": "cog", "groups": 4, "overlap": 1}, "expand_first_block": True,
       "block_activation": "silu"}

for _t in EXPANSION_RATIOS:
    register_backbone(f"mv2_e{_t}")(_family(
        f"mv2_e{_t}", _t, MV2, "MobileNetV2 with expansion ratio {t} after the first block."))
    register_backbone(f"cog_e{_t}")(_family(
        f"cog_e{_t}", _t, COG, "COG-MobileNet with expansion ratio {t} after the first block."))
