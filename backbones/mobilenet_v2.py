"""MobileNetV2 and COG-MobileNet (thesis Table 4.3): one layout, registered as mv2_eX / cog_eX.

``features`` is laid out as torchvision's ``mobilenet_v2().features`` (0 stem conv, 1..17
inverted-residual blocks, 18 the 1x1 conv to 1280 channels), so ``mv2_e6`` loads torchvision
weights. Taps: stem(0), stage1(1), stage2(3), stage3(6), stage4(13, role "stride16"),
stage5_expand (the expansion output inside block 14, role "stride16_expansion"), stage5(16),
stage6(17, role "body"), last_conv(18).

Pointwise conv roles for ``pointwise_at``: "expand" and "project" (every block), "last" (the
320 -> 1280 conv). Spatial conv role for ``spatial_at``: "depthwise" (the 3x3 conv of every
block); ``spatial_positions`` are block indices in ``features`` (1..17).

Seed 003's reductions for 32 px CIFAR-10 are options, not other classes: ``cut_after_block``
keeps Keras' blocks ``block_0 .. block_N`` (12: ``block_12_add``, 2x2x96 at 32 px) and puts the
last 1x1 conv right after it, ``last_channels`` sets that conv's width (the seed's "head width"),
``last_bias`` / ``last_activation`` give it Keras' ``Conv2D`` bias and ReLU, and
``channel_rounding="keras"`` rounds block widths as ``keras.applications.MobileNetV2``
(``backbones/channel_rounding.py``). In a cut backbone the taps after the cut are gone, the cut
block plays "body", and a head asking for a dropped role gets an error naming the cut.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable, Optional

from torch import nn
from torchvision.models._utils import _make_divisible
from torchvision.ops.misc import Conv2dNormActivation

from errors import ConfigError

from .activations import ActivationSpec, resolve_activation
from .base import EXPANSION, OUTPUT, Backbone, FeatureInfo, plan_strides
from .channel_rounding import block_channels, check_channel_rounding
from .options import batch_norm
from .inverted_residual import InvertedResidual
from .pointwise import PointwisePlan
from .pointwise.dense import DensePointwise
from .pointwise.registry import PointwiseSpec, pointwise_spec
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
TAPS_BLOCKS = tuple(range(sum(n for _, n, _ in STAGES)))  # Keras' block_0 .. block_16
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


def _taps(num_blocks: int) -> dict[str, tuple[int, str, tuple[str, ...]]]:
    """TAPS of a backbone keeping ``num_blocks`` blocks: the taps up to the last kept block
    (which gets a tap of its own if it has none, and the "body" role if that was dropped),
    then the last conv."""
    cut = num_blocks  # features index of the last kept block
    if cut == len(TAPS_BLOCKS):
        return dict(TAPS)
    taps = {name: tap for name, tap in TAPS.items() if tap[0] <= cut and name != "last_conv"}
    if not any(i == cut and kind == OUTPUT for i, kind, _ in taps.values()):
        taps[f"block{cut - 1}"] = (cut, OUTPUT, ())
    if not any("body" in roles for _, _, roles in taps.values()):
        name = next(n for n, (i, kind, _) in taps.items() if i == cut and kind == OUTPUT)
        i, kind, roles = taps[name]
        taps[name] = (i, kind, roles + ("body",))
    taps["last_conv"] = (cut + 1, OUTPUT, ())
    return taps


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
        channel_rounding: "torchvision" or "keras" (``backbones.channel_rounding``).
        cut_after_block: keep blocks 0..N only (Keras numbering, 0..16); None keeps all 17.
        last_channels: output channels of the last 1x1 conv; None: 1280 (x width_mult if > 1).
        last_bias: give the last 1x1 conv a bias (Keras ``Conv2D``'s default; seed 003's cut nets).
        last_activation: after the last conv's norm; "same" = ``activation``.
    """

    def __init__(
        self,
        name: str = "mobilenet_v2",
        expand_ratio: float = 6,
        *,
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
        channel_rounding: str = "torchvision",
        cut_after_block: int | None = None,
        last_channels: int | None = None,
        last_bias: bool = False,
        last_activation: ActivationSpec = "same",
        norm_eps: float = 1e-5,
        norm_momentum: float = 0.1,
    ) -> None:
        super().__init__(name, output_stride)
        # Keras' BatchNorm (seed 003): eps 1e-3, momentum 0.999 = 0.001 in PyTorch's convention
        norm_layer = batch_norm(norm_eps, norm_momentum)
        if not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ConfigError(f"width_mult must be > 0, got {width_mult!r}.")
        self.width_mult = width_mult
        check_channel_rounding(channel_rounding)
        plan = PointwisePlan.create(pointwise, pointwise_at, POINTWISE_ROLES)
        outer_act = resolve_activation(activation, "activation")
        last_act = outer_act if last_activation == "same" else resolve_activation(last_activation, "last_activation")

        blocks = [(c, 1 if stage == 0 else expand_ratio, s if i == 0 else 1)
                  for stage, (c, n, s) in enumerate(STAGES) for i in range(n)]
        if cut_after_block is not None:
            if isinstance(cut_after_block, bool) or not isinstance(cut_after_block, int) \
                    or not 0 <= cut_after_block < len(blocks):
                raise ConfigError(f"cut_after_block must be a block number 0..{len(blocks) - 1} "
                                  f"(Keras' block_N), or null to keep all; got {cut_after_block!r}.")
            blocks = blocks[: cut_after_block + 1]
        if last_channels is not None and (isinstance(last_channels, bool)
                                          or not isinstance(last_channels, int) or last_channels < 1):
            raise ConfigError(f"last_channels must be a positive integer or null, got {last_channels!r}.")
        strides = plan_strides([2] + [s for _, _, s in blocks] + [1], output_stride)
        spatial_plan = SpatialPlan.create(spatial, spatial_at, SPATIAL_ROLES, spatial_positions,
                                          valid_positions=range(1, len(blocks) + 1))

        in_ch = _make_divisible(STEM_CHANNELS * width_mult, 8)
        layers: list[nn.Module] = [
            Conv2dNormActivation(3, in_ch, stride=2, norm_layer=norm_layer, activation_layer=outer_act)
        ]
        for index, ((channels, t, _), where) in enumerate(zip(blocks, strides[1:]), start=1):
            out_ch = block_channels(channels, width_mult, channel_rounding)
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
        last_ch = last_channels or _make_divisible(LAST_CHANNELS * max(1.0, width_mult), 8)
        where = f"features.{len(layers)}"
        if last_bias:
            if "last" in plan.at and pointwise_spec(plan.spec)["name"] != "dense":
                raise ConfigError(f"last_bias needs the dense layer at the last conv ({where}); "
                                  "drop 'last' from pointwise_at or set last_bias=false.")
            layers.append(DensePointwise(in_ch, last_ch, norm_layer=norm_layer,
                                         activation_layer=last_act, bias=True))
        else:
            layers.append(plan.build("last", in_ch, last_ch, norm_layer=norm_layer,
                                     activation_layer=last_act, where=where))
        self.features = nn.Sequential(*layers)

        def channels(index: int, kind: str) -> int:
            layer = layers[index]
            return layer.hidden_channels if kind == EXPANSION else layer.out_channels

        def stride_of(index: int, kind: str) -> int:
            # An expansion output comes before its block's (possibly strided) depthwise conv.
            return strides[index - 1 if kind == EXPANSION else index].output_stride

        self.feature_info = [FeatureInfo(tap, channels(i, kind), stride_of(i, kind), i, kind, roles)
                             for tap, (i, kind, roles) in _taps(len(blocks)).items()]
        self._truncated = cut_after_block is not None  # errors for dropped roles say so
        self.init_weights()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, width_mult={self.width_mult}"


EXPANSION_RATIOS = (2, 4, 6)


# A variant is the backbone class with its name, expansion ratio and defaults bound (its overrides
# are the class' keyword arguments; backbones.backbone_overrides reads them from the partial's
# signature). mv2_eT: MobileNetV2 with expansion ratio T after the first block; mv2_e6 is
# torchvision's mobilenet_v2().features (ReLU6 everywhere, t=1 first block).
# COG-MobileNet (thesis sections 4.1-4.3): every expansion conv is COG(groups=4, overlap=1) + BN,
# the t=1 first block gets one too (32 -> 32), blocks use SiLU (after the expansion BN and after
# the depthwise BN; whether SiLU follows the expansion BN is ambiguous in the thesis, hence the
# expand_activation option). Stem and last conv stay MobileNetV2's (ReLU6), so a comparison
# measures the block design. With a 1000-class head: 2,175,528 / 2,652,520 / 3,129,512 params.
COG = {"pointwise": {"name": "cog", "groups": 4, "overlap": 1}, "expand_first_block": True,
       "expand_activation": "silu", "depthwise_activation": "silu"}

for _t in EXPANSION_RATIOS:
    register_backbone(f"mv2_e{_t}")(partial(MobileNetV2Backbone, f"mv2_e{_t}", _t))
    register_backbone(f"cog_e{_t}")(partial(MobileNetV2Backbone, f"cog_e{_t}", _t, **COG))
