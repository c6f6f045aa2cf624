"""Seed 001's three dog-breed networks (DogBreedClassificationCNN / DSC / DeformableCNN): one
seven-conv layout whose 3x3 convs come from the spatial-conv registry, registered as
``simple_cnn``, ``simple_dsc`` and ``simple_deform``.

The layout (the seed's appendix, 224 px input): seven 3x3 convs with padding 1, 3 -> 32 -> 32 ->
64 -> 64 -> 128 -> 128 -> 256 channels, stride 2 on the odd layers (1, 3, 5, 7), every conv with a
bias and followed by BatchNorm and ReLU; then the classification head's global average pooling and
one linear layer (no dropout). The variants differ only in the spatial layer at some positions
(indices of ``features``, the seed's layer numbers minus one; layer 1, the 3-channel stem, is
always a standard conv, as in the seed's three nets):

- ``simple_cnn``: ``standard`` everywhere, 585,383 parameters with 7 classes;
- ``simple_dsc``: ``depthwise_separable`` at layers 2-7 ("the middle six", positions 1..6): a
  depthwise 3x3 conv + BN + ReLU then a 1x1 conv + BN + ReLU, both with bias; 74,663;
- ``simple_deform``: ``deform`` at every other layer, 2, 4 and 6 (positions 1, 3, 5): a separate
  3x3 offset conv with bias predicting 18 offsets (no modulation mask), zero-initialised; 621,725.

The seed's model ends in LogSoftmax and trains with NLLLoss; NLL of log-softmax is cross-entropy
of the logits, so the suite's logits + ``F.cross_entropy`` is the same loss and the same
predictions (argmax), with the softmax left to the loss.

Taps: conv1..conv7 (``features[0..6]``, strides 2, 2, 4, 4, 8, 8, 16). The net ends at stride 16,
so conv7 plays "last", "body" and "stride16": DeepLabv3 runs on it (output stride 16, or 8 with
conv7 dilated). SSD-Lite needs a stride-32 map after its stride-16 one; this net has none, and
asking for it ("stride16_expansion") is an error that says so.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Iterable, Optional

from torch import nn

from errors import ConfigError

from .activations import ActivationSpec, resolve_activation
from .base import Backbone, FeatureInfo, plan_strides
from .options import batch_norm
from .registry import register_backbone
from .spatial import SpatialPlan, SpatialSpec, build_spatial

# (output channels, stride) of the seed's seven 3x3 convs.
LAYERS: tuple[tuple[int, int], ...] = ((32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2))
SPATIAL_ROLES = ("conv",)


class SimpleCNNBackbone(Backbone):
    """Seven 3x3 conv + BN + ReLU layers, each built by the spatial plan (module docstring).

    Args:
        spatial / spatial_at / spatial_positions: the spatial layer, the roles it replaces
            ("conv", layers 2-7) and at which layers (indices of ``features``, 1..6; None: all).
            Layers not selected, and the stem, are ``standard`` convs.
        width_mult: multiplies every layer's channels (rounded, at least 1).
        output_stride: 32 or 16 leave the net as it is (it ends at 16); 8 dilates conv7.
        bias: every conv has a bias (the seed's PyTorch ``nn.Conv2d`` default).
        activation: after every norm.
    """

    default_classifier_dropout = 0.0  # the seed's head: pooling and one linear layer
    native_output_stride = 16  # four stride-2 convs: output_stride 32 leaves the net at 16

    def __init__(
        self,
        name: str = "simple_cnn",
        *,
        spatial: SpatialSpec = "standard",
        spatial_at: Iterable[str] = SPATIAL_ROLES,
        spatial_positions: Optional[Iterable[int]] = None,
        width_mult: float = 1.0,
        output_stride: int = 32,
        bias: bool = True,
        activation: ActivationSpec = "relu",
        norm_eps: float = 1e-5,
        norm_momentum: float = 0.1,
    ) -> None:
        super().__init__(name, output_stride)
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ConfigError(f"width_mult must be > 0, got {width_mult!r}.")
        self.width_mult = float(width_mult)
        plan = SpatialPlan.create(spatial, spatial_at, SPATIAL_ROLES, spatial_positions,
                                  valid_positions=range(1, len(LAYERS)))
        act = resolve_activation(activation, "activation")
        norm_layer = batch_norm(norm_eps, norm_momentum)
        strides = plan_strides([s for _, s in LAYERS], output_stride)
        layers: list[nn.Module] = []
        in_ch = 3
        for index, ((channels, _), where) in enumerate(zip(LAYERS, strides)):
            out_ch = max(1, round(channels * width_mult))
            build = build_spatial if index == 0 else partial(plan.build, "conv", position=index,
                                                             default="standard")
            spec = ("standard",) if index == 0 else ()
            layers.append(build(*spec, in_ch, out_ch, kernel_size=3, stride=where.stride,
                                dilation=where.dilation, bias=bias, norm_layer=norm_layer,
                                activation_layer=act,
                                where=f"features.{index} (the seed's layer {index + 1})"))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        last = len(LAYERS) - 1
        self.feature_info = [
            FeatureInfo(f"conv{i + 1}", layers[i].out_channels, strides[i].output_stride, i,
                        roles=("body", "stride16") if i == last else ())
            for i in range(len(LAYERS))
        ]
        self.init_weights()

    def feature_for(self, role: str) -> FeatureInfo:
        if role == "stride16_expansion":
            raise ConfigError(
                f"backbone {self.name!r} cannot feed SSD-Lite: its seven convs end at stride 16 and "
                "SSD-Lite predicts from a stride-16 map and a later stride-32 one, which this net does "
                "not have. Use it for classification or segmentation (DeepLabv3).")
        return super().feature_for(role)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, width_mult={self.width_mult}"


# A variant is the backbone class with its name and defaults bound (its overrides are the class'
# keyword arguments; backbones.backbone_overrides reads them from the partial's signature).
# DogBreedClassificationCNN: seven standard 3x3 convs.
register_backbone("simple_cnn")(partial(SimpleCNNBackbone, "simple_cnn", spatial="standard"))
# DogBreedClassificationDSC: layers 2-7 depthwise separable.
register_backbone("simple_dsc")(partial(SimpleCNNBackbone, "simple_dsc", spatial="depthwise_separable",
                                        spatial_positions=(1, 2, 3, 4, 5, 6)))
# DogBreedClassificationDeformableCNN: layers 2, 4, 6 deformable.
register_backbone("simple_deform")(partial(SimpleCNNBackbone, "simple_deform", spatial="deform",
                                           spatial_positions=(1, 3, 5)))
