"""The registered backbone families: MobileNetV2 eX and COG-MobileNet eX (X = expansion ratio)."""
from __future__ import annotations

from .inverted_residual import ActivationSpec
from .mobilenet import MobileNetBackbone
from .registry import register_backbone

EXPANSION_RATIOS = (2, 4, 6)


def _mobilenet_v2(name: str, expand_ratio: int):
    def factory(*, width_mult: float = 1.0, output_stride: int = 32) -> MobileNetBackbone:
        # mv2_e6 is torchvision's mobilenet_v2().features (ReLU6 everywhere, t=1 first block).
        return MobileNetBackbone(
            name,
            expand_ratio=expand_ratio,
            expansion="dense",
            width_mult=width_mult,
            output_stride=output_stride,
        )

    factory.__doc__ = f"MobileNetV2 with expansion ratio {expand_ratio} after the first block."
    return factory


def _cog_mobilenet(name: str, expand_ratio: int):
    def factory(
        *,
        width_mult: float = 1.0,
        output_stride: int = 32,
        expand_activation: ActivationSpec = "silu",
        cog_impl: str = "auto",
    ) -> MobileNetBackbone:
        # Every expansion conv is ChannelOverlapConv2d(groups=4, overlap=1) + BN; the t=1 first
        # block gets one as well (32->32), which is what makes the parameter counts
        # 2,175,528 / 2,652,520 / 3,129,512 (with a 1000-class head) come out exactly.
        # Blocks use SiLU as MobileViT's MV2 block does; whether SiLU follows the COG expansion
        # BN is ambiguous in the thesis, so it is the `expand_activation` override.
        # Stem and last conv stay exactly MobileNetV2's (ReLU6): only the blocks differ from
        # mv2_eX, so a comparison measures the block design (activations have no parameters,
        # so this choice does not change the counts).
        return MobileNetBackbone(
            name,
            expand_ratio=expand_ratio,
            expansion="cog",
            expand_first_block=True,
            width_mult=width_mult,
            output_stride=output_stride,
            activation="relu6",
            expand_activation=expand_activation,
            depthwise_activation="silu",
            cog_groups=4,
            cog_overlap=1,
            cog_impl=cog_impl,
        )

    factory.__doc__ = f"COG-MobileNet with expansion ratio {expand_ratio} after the first block."
    return factory


for _t in EXPANSION_RATIOS:
    register_backbone(f"mv2_e{_t}")(_mobilenet_v2(f"mv2_e{_t}", _t))
    register_backbone(f"cog_e{_t}")(_cog_mobilenet(f"cog_e{_t}", _t))
