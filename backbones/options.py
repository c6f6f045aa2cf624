"""Checks of the overrides several families share (width, BatchNorm settings)."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

from torch import nn

from errors import ConfigError


def check_width_mult(width_mult: Any) -> float:
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
        raise ConfigError(f"width_mult must be > 0, got {width_mult!r}.")
    return float(width_mult)


def batch_norm(eps: float, momentum: float) -> Callable[..., nn.Module]:
    """``nn.BatchNorm2d`` with these settings (PyTorch's momentum convention: 1 - Keras')."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0 \
            or isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 < momentum <= 1:
        raise ConfigError(f"norm_eps must be > 0 and norm_momentum in (0, 1], got {eps!r} and {momentum!r} "
                          "(PyTorch's convention: Keras' momentum 0.99 is 0.01 here).")
    return partial(nn.BatchNorm2d, eps=float(eps), momentum=float(momentum))
