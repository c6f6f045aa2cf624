"""EfficientNet-B0 and kEffNet-B0 (seed 004, Tables 1-2): one layout, registered as
``efficientnet_b0`` and ``keffnet_b0``.

EfficientNet-B0 is torchvision's ``efficientnet_b0`` layer for layer (stem 3x3 stride 2 to 32
channels, 16 MBConv blocks with squeeze-excitation, a 1x1 conv 320 -> 1280; SiLU everywhere,
BatchNorm eps 1e-5 / momentum 0.1, stochastic depth 0.2 * block / 16, torchvision's init), so
``convert_torchvision_efficientnet_b0`` loads its weights with identical outputs.

kEffNet-B0 (the authors' k-neural-api ``kEfficientNetB0(kType=2)``, seed 004 section 3) replaces
every pointwise conv with ``kgroup`` (at least 16 input channels per group): the expansion and
projection convs, both squeeze-excitation convs (no BN, with bias, swish / sigmoid) and the
320 -> 1280 conv. As in the authors' code, the projection and 320 -> 1280 convs have no activation
inside their kgroup, and there is no swish after the 320 -> 1280 conv (``last_activation=None``).

``features``: 0 the stem, 1..16 the blocks, 17 the 1x1 conv to 1280 channels. Taps: stem(0),
stage1(1), stage2(3), stage3(5), stage4(8), stage5(11, 112 ch, role "stride16"), stage6_expand
(the expansion output inside block 12, the first stride-32 block: 672 ch, role
"stride16_expansion", the map torchvision's SSDLite takes from MobileNetV3, the expansion of the
first C5 block), stage6(15), stage7(16, 320 ch, role "body"), top_conv(17, 1280 ch).

Pointwise conv roles for ``pointwise_at``: "expand", "project", "last" (the 320 -> 1280 conv);
the squeeze-excitation convs take ``se_pointwise``. Spatial conv role for ``spatial_at``:
"depthwise" (the 3x3 / 5x5 conv of every block); ``spatial_positions`` are block indices in
``features`` (1..16). Their widths (block input / 4: 4 to 48
channels at width 1) suit few group layers, so they are configured apart.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Iterable, Optional

from torch import nn
from torchvision.models._utils import _make_divisible
from torchvision.ops.misc import Conv2dNormActivation

from errors import ConfigError

from .activations import ActivationSpec, resolve_activation
from .base import EXPANSION, OUTPUT, Backbone, FeatureInfo, plan_strides
from .mbconv import MBConv
from .options import batch_norm, check_width_mult
from .pointwise import PointwisePlan, pointwise_spec
from .pointwise.registry import PointwiseSpec
from .registry import register_backbone
from .spatial import SpatialPlan, SpatialSpec

STEM_CHANNELS = 32
POINTWISE_ROLES = ("expand", "project", "last")
SPATIAL_ROLES = ("depthwise",)
# EfficientNet-B0 (Tan & Le 2019, Table 1; torchvision's _efficientnet_conf("efficientnet_b0")):
# (expand ratio, kernel, stride, output channels, repeats).
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
LAST_CONV_MULTIPLIER = 4  # the 1x1 conv after the blocks: 4 x 320 = 1280 (torchvision)
# Tap name -> (index in ``features``, kind, roles).
TAPS: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "stem": (0, OUTPUT, ()),
    "stage1": (1, OUTPUT, ()),
    "stage2": (3, OUTPUT, ()),
    "stage3": (5, OUTPUT, ()),
    "stage4": (8, OUTPUT, ()),
    "stage5": (11, OUTPUT, ("stride16",)),
    "stage6_expand": (12, EXPANSION, ("stride16_expansion",)),
    "stage6": (15, OUTPUT, ()),
    "stage7": (16, OUTPUT, ("body",)),
    "top_conv": (17, OUTPUT, ()),
}


class EfficientNetBackbone(Backbone):
    """EfficientNet-B0 ``features`` with a pointwise plan (see the module docstring).

    Args:
        name: registry name, reported by ``.name`` and stored in checkpoints.
        pointwise / pointwise_at: the pointwise layer spec and the conv roles it replaces
            ("expand", "project", "last").
        se_pointwise: the pointwise layer of both squeeze-excitation convs.
        spatial / spatial_at / spatial_positions: the spatial layer spec, the conv roles it
            replaces ("depthwise") and at which blocks (indices in ``features``; None: all).
        width_mult: channel multiplier, rounded like torchvision (multiples of 8).
        output_stride: 32, 16 or 8; later stride-2 blocks become stride-1, dilated ones.
        activation: after the stem, expansion and depthwise norms and the SE reduce conv.
        last_activation: after the 320 -> 1280 conv's norm (EfficientNet: SiLU; kEffNet: none).
        stochastic_depth_prob: drop probability of the last block's residual branch; block b of
            16 uses ``stochastic_depth_prob * b / 16``.
        norm_eps / norm_momentum: BatchNorm settings (PyTorch convention).
    """

    default_classifier_dropout = 0.2  # torchvision's and Keras' EfficientNet-B0
    classifier_init = "uniform"  # torchvision's EfficientNet: U(+-1/sqrt(num_classes)) linear weights

    def __init__(
        self,
        name: str = "efficientnet_b0",
        *,
        pointwise: PointwiseSpec = "dense",
        pointwise_at: Iterable[str] = ("expand",),
        se_pointwise: PointwiseSpec = "dense",
        spatial: SpatialSpec = "depthwise",
        spatial_at: Iterable[str] = SPATIAL_ROLES,
        spatial_positions: Optional[Iterable[int]] = None,
        width_mult: float = 1.0,
        output_stride: int = 32,
        activation: ActivationSpec = "silu",
        last_activation: ActivationSpec = "silu",
        stochastic_depth_prob: float = 0.2,
        norm_eps: float = 1e-5,
        norm_momentum: float = 0.1,
    ) -> None:
        super().__init__(name, output_stride)
        self.width_mult = check_width_mult(width_mult)
        if not 0.0 <= stochastic_depth_prob < 1.0:
            raise ConfigError(f"stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob!r}.")
        plan = PointwisePlan.create(pointwise, pointwise_at, POINTWISE_ROLES)
        se_spec = pointwise_spec(se_pointwise)
        norm_layer = batch_norm(norm_eps, norm_momentum)
        act = resolve_activation(activation, "activation")
        last_act = resolve_activation(last_activation, "last_activation")

        def channels(c: int) -> int:
            return _make_divisible(c * width_mult, 8)

        blocks = [(t, k, s if i == 0 else 1, channels(c))
                  for t, k, s, c, n in STAGES for i in range(n)]
        strides = plan_strides([2] + [s for _, _, s, _ in blocks] + [1], output_stride)
        spatial_plan = SpatialPlan.create(spatial, spatial_at, SPATIAL_ROLES, spatial_positions,
                                          valid_positions=range(1, len(blocks) + 1))

        in_ch = channels(STEM_CHANNELS)
        layers: list[nn.Module] = [
            Conv2dNormActivation(3, in_ch, kernel_size=3, stride=2, norm_layer=norm_layer, activation_layer=act)
        ]
        for index, ((t, k, _, out_ch), where) in enumerate(zip(blocks, strides[1:]), start=1):
            layers.append(MBConv(
                in_ch, out_ch, k, where.stride, t,
                dilation=where.dilation,
                stage_start=where.nominal > 1,
                stochastic_depth_prob=stochastic_depth_prob * (index - 1) / len(blocks),
                pointwise=plan,
                se_pointwise=se_spec,
                spatial=spatial_plan,
                position=index,
                activation_layer=act,
                norm_layer=norm_layer,
                where=f"features.{index}",
            ))
            in_ch = out_ch
        layers.append(plan.build("last", in_ch, LAST_CONV_MULTIPLIER * in_ch, norm_layer=norm_layer,
                                 activation_layer=last_act, where=f"features.{len(layers)}"))
        self.features = nn.Sequential(*layers)

        def tap_channels(index: int, kind: str) -> int:
            layer = layers[index]
            return layer.hidden_channels if kind == EXPANSION else layer.out_channels

        def tap_stride(index: int, kind: str) -> int:
            # An expansion output comes before its block's (possibly strided) depthwise conv.
            return strides[index - 1 if kind == EXPANSION else index].output_stride

        self.feature_info = [FeatureInfo(tap, tap_channels(i, kind), tap_stride(i, kind), i, kind, roles)
                             for tap, (i, kind, roles) in TAPS.items()]
        self.init_weights()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, width_mult={self.width_mult}"


# A variant is the backbone class with its name and defaults bound (its overrides are the class'
# keyword arguments; backbones.backbone_overrides reads them from the partial's signature).
# EfficientNet-B0, torchvision's efficientnet_b0 layout; 4,020,358 params with a 10-class head.
register_backbone("efficientnet_b0")(partial(EfficientNetBackbone, "efficientnet_b0"))

# kEffNet-B0: EfficientNet-B0 with kgroup (16 input channels per group at least) at every pointwise
# conv, no activation after the 320 -> 1280 conv; 639,702 params with a 10-class head.
KGROUP_16 = {"name": "kgroup", "min_channels_per_group": 16}
register_backbone("keffnet_b0")(partial(
    EfficientNetBackbone, "keffnet_b0", pointwise=KGROUP_16, pointwise_at=POINTWISE_ROLES,
    se_pointwise=KGROUP_16, last_activation=None))
