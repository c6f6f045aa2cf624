"""DeepLabv3 head: ASPP on the backbone's last feature map, then a 3x3 conv and a 1x1 classifier."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.ops import Conv2dNormActivation

from errors import ConfigError

# Rates of the DeepLabv3 paper at output stride 16; they scale with the feature resolution.
ATROUS_RATES_OS16 = (6, 12, 18)


def atrous_rates_for(output_stride: int, rates_at_os16: Sequence[int] = ATROUS_RATES_OS16) -> tuple[int, ...]:
    """ASPP rates for a backbone of this output stride: as given at 16, doubled at 8."""
    if output_stride not in (8, 16):
        raise ConfigError(
            f"DeepLabv3 needs a backbone of output stride 16 or 8, got {output_stride}; "
            "set backbone.output_stride=16 (default) or 8"
        )
    return tuple(int(r) * 16 // output_stride for r in rates_at_os16)


class DeepLabV3Head(nn.Module):
    """ASPP (1x1, three atrous 3x3, image pooling) -> 1x1 projection -> 3x3 conv -> 1x1 classifier.

    Same layout as torchvision's ``DeepLabHead``, with the projection dropout and width settable.
    Returns logits at the feature resolution; ``forward(features, output_size)`` upsamples them
    bilinearly to ``output_size`` (the input image size).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        atrous_rates: Sequence[int] = ATROUS_RATES_OS16,
        channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes must count background too (>= 2), got {num_classes}")
        self.atrous_rates = tuple(int(r) for r in atrous_rates)
        self.aspp = ASPP(in_channels, self.atrous_rates, channels)
        # torchvision fixes the projection dropout at 0.5; the DeepLabv3 setting here is 0.1.
        self.aspp.project[-1] = nn.Dropout(dropout)
        self.conv = Conv2dNormActivation(channels, channels, kernel_size=3, activation_layer=nn.ReLU)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        logits = self.classifier(self.conv(self.aspp(features)))
        if output_size is not None:
            logits = F.interpolate(logits, size=tuple(output_size), mode="bilinear", align_corners=False)
        return logits
