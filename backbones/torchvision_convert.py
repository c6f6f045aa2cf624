"""Maps torchvision ``mobilenet_v2`` / ``efficientnet_b0`` state dicts onto mv2_e6 / efficientnet_b0 keys."""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from errors import CheckpointError

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
        raise CheckpointError(
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
                raise CheckpointError(f"Unexpected torchvision mobilenet_v2 key {key!r}.")
            backbone[f"features.{index}.{table[part]}.{leaf}"] = value
        elif _PLAIN_KEY.match(key):
            backbone[key] = value
        else:
            raise CheckpointError(f"Unexpected torchvision mobilenet_v2 key {key!r}.")
    return backbone, classifier


# ----------------------------------------------------------------------------- efficientnet_b0
# torchvision nests blocks as features.<stage>.<block>.block.<i>; ours are flat (features.1..16)
# with named parts. ``block`` entries with an expansion conv: 0 expand, 1 depthwise, 2 SE, 3 project;
# without one (expand ratio 1) everything shifts down by one.
_EFFNET_WITH_EXPAND = {"0": "expand", "1": "depthwise", "2": "se", "3": "project"}
_EFFNET_WITHOUT_EXPAND = {"0": "depthwise", "1": "se", "2": "project"}
_EFFNET_SE = {"fc1": "reduce.0", "fc2": "expand.0"}
_EFFNET_BLOCK_KEY = re.compile(r"^features\.(\d+)\.(\d+)\.block\.(\d+)\.(.+)$")
_EFFNET_PLAIN_KEY = re.compile(r"^features\.(\d+)\.(\d+\.\w+)$")  # stem (0) and the last conv


def is_torchvision_efficientnet(state_dict: Mapping[str, object]) -> bool:
    """True for a torchvision EfficientNet (V1, MBConv) classifier state dict."""
    return "features.1.0.block.0.0.weight" in state_dict and "classifier.1.weight" in state_dict


def convert_torchvision_efficientnet_b0(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Returns (backbone state dict for efficientnet_b0, classifier state dict).

    Blocks are numbered in order over the stages, so another EfficientNet's state dict converts
    too but does not fit ``efficientnet_b0`` (loading it reports the differences). The classifier
    dict keeps torchvision's ``Sequential(Dropout, Linear)`` keys ("1.weight", "1.bias").
    """
    if not is_torchvision_efficientnet(state_dict):
        raise CheckpointError(
            "Not a torchvision efficientnet state dict: expected keys 'features.1.0.block.0.0.weight' "
            "and 'classifier.1.weight' (as in torchvision.models.efficientnet_b0().state_dict())."
        )
    blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in state_dict if (m := _EFFNET_BLOCK_KEY.match(k))})
    flat_index = {block: n for n, block in enumerate(blocks, start=1)}
    with_expand = {(int(m.group(1)), int(m.group(2))) for k in state_dict
                   if (m := _EFFNET_BLOCK_KEY.match(k)) and m.group(3) == "3"}
    last_stage = max(stage for stage, _ in blocks) + 1
    backbone: dict[str, Tensor] = {}
    classifier: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("classifier."):
            classifier[key[len("classifier."):]] = value
        elif m := _EFFNET_BLOCK_KEY.match(key):
            block = (int(m.group(1)), int(m.group(2)))
            table = _EFFNET_WITH_EXPAND if block in with_expand else _EFFNET_WITHOUT_EXPAND
            part, leaf = table.get(m.group(3)), m.group(4)
            if part is None:
                raise CheckpointError(f"Unexpected torchvision efficientnet key {key!r}.")
            if part == "se":
                module, _, tensor = leaf.partition(".")
                if module not in _EFFNET_SE:
                    raise CheckpointError(f"Unexpected torchvision efficientnet key {key!r}.")
                leaf = f"{_EFFNET_SE[module]}.{tensor}"
            backbone[f"features.{flat_index[block]}.{part}.{leaf}"] = value
        elif (m := _EFFNET_PLAIN_KEY.match(key)) and int(m.group(1)) in (0, last_stage):
            index = 0 if int(m.group(1)) == 0 else len(blocks) + 1
            backbone[f"features.{index}.{m.group(2)}"] = value
        else:
            raise CheckpointError(f"Unexpected torchvision efficientnet key {key!r}.")
    return backbone, classifier
