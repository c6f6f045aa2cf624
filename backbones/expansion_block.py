"""What MobileNetV2's ``InvertedResidual`` and EfficientNet's ``MBConv`` share.

Both are: optional 1x1 expansion -> depthwise conv -> (block-specific middle) -> 1x1 projection
[+ residual]. The expansion output is a feature of its own: SSD-Lite reads the one before the
stride-16 -> 32 depthwise conv (``backbones.base.Backbone.forward_features`` asks a layer for
``expansion_output`` / ``forward_with_expansion``). The shape bookkeeping (stride, dilation,
stage start, residual rule) and that interface live here once; each block builds its layers
and says how its pieces combine in ``forward_with_expansion``.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from errors import ConfigError


class ExpansionBlock(nn.Module):
    """Base of the expand-depthwise-project blocks; subclasses set ``expand`` (or leave it None),
    build their other layers and implement ``forward_with_expansion``."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, stride: int,
                 dilation: int, stage_start: Optional[bool]) -> None:
        super().__init__()
        name = type(self).__name__
        if stride not in (1, 2):
            raise ConfigError(f"{name}: stride must be 1 or 2, got {stride}.")
        if dilation < 1:
            raise ConfigError(f"{name}: dilation must be >= 1, got {dilation}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.stride = stride
        self.dilation = dilation
        # A stride-2 block turned into a dilated stride-1 one (output-stride control) keeps its
        # structure: still a stage start, still no residual.
        self.stage_start = stride > 1 if stage_start is None else bool(stage_start)
        self._is_cn = self.stage_start  # name torchvision's detection/segmentation helpers use
        self.use_res_connect = stride == 1 and in_channels == out_channels and not self.stage_start
        self.expand: Optional[nn.Module] = None

    def expansion_output(self, x: Tensor) -> Tensor:
        """The depthwise conv's input: the expansion output, or ``x`` when there is none."""
        return x if self.expand is None else self.expand(x)

    def forward_with_expansion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (block output, expansion output); SSD-Lite taps the latter."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_expansion(x)[0]

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, hidden={self.hidden_channels}, out={self.out_channels}, "
            f"stride={self.stride}, dilation={self.dilation}, residual={self.use_res_connect}"
        )
