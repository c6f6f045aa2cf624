"""Classification head: global average pooling, dropout, linear (torchvision MobileNetV2's classifier)."""
from __future__ import annotations

import math

from torch import Tensor, nn

from errors import ConfigError

# Linear-layer init, as the torchvision model of each family does it:
#   "normal": N(0, 0.01) (MobileNetV2/V3), "uniform": U(+-1/sqrt(num_classes)) (EfficientNet).
CLASSIFIER_INITS = ("normal", "uniform")


class ClassificationHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.2, init: str = "normal") -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if init not in CLASSIFIER_INITS:
            raise ConfigError(f"unknown classifier init {init!r}; choose one of {CLASSIFIER_INITS}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_channels, num_classes)
        self.out_channels = num_classes
        # torchvision's init for the classifier, so mv2_e6 matches mobilenet_v2 from scratch too.
        if init == "normal":
            nn.init.normal_(self.fc.weight, 0, 0.01)
        else:
            bound = 1.0 / math.sqrt(num_classes)
            nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.dropout(self.pool(features).flatten(1)))
