"""Building objects from Hydra config nodes, with config mistakes as one-line user errors."""
from __future__ import annotations

import inspect
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from errors import ConfigError, ConfigTypeError


def _failed_at_call(error: BaseException) -> bool:
    """True for a TypeError raised while binding arguments to the target (an unknown or missing
    config key), not from inside the target's code."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == "_call_target"


def instantiate_node(node: DictConfig, where: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` where a config key the target does not take becomes a
    ConfigTypeError naming the valid keys, and Lightning's MisconfigurationException (its
    bad-argument error) a ConfigError."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, TypeError) and _failed_at_call(cause):
            raise ConfigTypeError(f"{where}: {cause}{_valid_keys(node)}") from exc
        if isinstance(cause, MisconfigurationException):
            raise ConfigError(f"{where}: {cause}") from exc
        raise


def _valid_keys(node: DictConfig) -> str:
    try:
        from hydra.utils import get_method

        parameters = inspect.signature(get_method(node._target_)).parameters
    except Exception:  # noqa: BLE001 - the list is a courtesy; the error stands without it
        return ""
    names = [n for n, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return f" (valid keys: {', '.join(names)})" if names else ""
