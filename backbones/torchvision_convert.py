"""Maps torchvision ``mobilenet_v2`` state dicts onto MobileNetBackbone (mv2_e6) keys."""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

# torchvision block layout -> ours. With an expansion conv, ``conv`` is
# [expand ConvBNAct, depthwise ConvBNAct, project Conv2d, project BN]; without one (t=1) the
# first entry is missing and everything shifts down by one.
_WITH_EXPAND = {"0.0": "expand.0", "0.1": "expand.1", "1.0": "depthwise.0", "1.1": "depthwise.1",
                "2": "project.0", "3": "project.1"}
_WITHOUT_EXPAND = {"0.0": "depthwise.0", "0.1": "depthwise.1", "1": "project.0", "2": "project.1"}
_BLOCK_KEY = re.compile(r"^features\.(\d+)\.conv\.(\d+(?:\.\d+)?)\.(\w+)$")
_PLAIN_KEY = re.compile(r"^features\.(\d+)\.(\d+)\.(\w+)$")  # stem (0) and last conv (18)


def is_torchvision_mobilenet_v2(state_dict: Mapping[str, object]) -> bool:
    """True for a torchvision mobilenet_v2 (classifier) state dict."""
    return "features.1.conv.0.0.weight" in state_dict and "classifier.1.weight" in state_dict


def convert_torchvision_mobilenet_v2(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Returns (backbone state dict for mv2_e6, classifier state dict).

    The classifier dict keeps torchvision's ``Sequential(Dropout, Linear)`` keys ("1.weight",
    "1.bias"), so it loads into ``nn.Sequential(nn.Dropout(p), nn.Linear(1280, num_classes))``.
    """
    if not is_torchvision_mobilenet_v2(state_dict):
        raise ValueError(
            "Not a torchvision mobilenet_v2 state dict: expected keys 'features.1.conv.0.0.weight' "
            "and 'classifier.1.weight' (as in torchvision.models.mobilenet_v2().state_dict())."
        )
    blocks_with_expand = {
        int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k)) and m.group(2) == "3"
    }
    backbone: dict[str, Tensor] = {}
    classifier: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("classifier."):
            classifier[key[len("classifier."):]] = value
        elif m := _BLOCK_KEY.match(key):
            index, part, leaf = int(m.group(1)), m.group(2), m.group(3)
            table = _WITH_EXPAND if index in blocks_with_expand else _WITHOUT_EXPAND
            if part not in table:
                raise ValueError(f"Unexpected torchvision mobilenet_v2 key {key!r}.")
            backbone[f"features.{index}.{table[part]}.{leaf}"] = value
        elif _PLAIN_KEY.match(key):
            backbone[key] = value
        else:
            raise ValueError(f"Unexpected torchvision mobilenet_v2 key {key!r}.")
    return backbone, classifier
