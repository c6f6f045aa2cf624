"""How a width multiplier turns a layer's nominal channel count into a built one.

Two rules, both rounding to the nearest multiple of 8 (never below 8, never more than 10% down):

- ``torchvision``: ``_make_divisible(c * alpha, 8)`` (torchvision's MobileNetV2).
- ``keras``: ``_make_divisible(int(c * alpha), 8)`` (``keras.applications.MobileNetV2``'s
  inverted-residual blocks truncate first: ``pointwise_conv_filters = int(filters * alpha)``).
  The stem (``_make_divisible(32 * alpha, 8)``) and the last conv (1280 unless alpha > 1) round
  as torchvision in both.

The two agree at Keras' published alphas (0.35 ... 1.4) and at seed 003's 0.9; they differ where
the truncated value falls below the 10% floor, e.g. alpha 0.56: 64 channels -> 40 (torchvision)
vs 32 (Keras), or alpha 1.12: 16 -> 24 vs 16. A search over alpha (seed 003 tuned it) therefore
needs the rule of the framework it reproduces.
"""
from __future__ import annotations

from torchvision.models._utils import _make_divisible

from errors import ConfigError

CHANNEL_ROUNDING = ("torchvision", "keras")


def check_channel_rounding(rule: str) -> str:
    if rule not in CHANNEL_ROUNDING:
        raise ConfigError(f"channel_rounding must be one of {CHANNEL_ROUNDING}, got {rule!r}.")
    return rule


def block_channels(channels: int, width_mult: float, rule: str = "torchvision") -> int:
    """Output channels of a block with ``channels`` nominal channels at ``width_mult``."""
    scaled = channels * width_mult
    return _make_divisible(int(scaled) if check_channel_rounding(rule) == "keras" else scaled, 8)
