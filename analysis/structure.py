"""Structural columns of a run's model: parameters, MACs at the run's input size, and the size
of its saved fp32 state_dict (KiB).

The model is rebuilt from the run's stored ``model`` config (task class, backbone spec,
num_classes, head settings) with random weights, so the numbers are those of what was trained.
Each distinct model is built once per report (a sweep of 60 runs has a handful of models).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate

from analysis.runs import Run, resolved
from benchmarks.complexity import count_macs, count_parameters, on_meta_device, saved_state_dict_kib

# Model settings that do not change the network (training and evaluation only).
_NOT_STRUCTURAL = ("optimizer", "scheduler", "class_names", "label_smoothing")


@dataclass(frozen=True)
class Structure:
    params: int
    macs: int
    kib: float
    image_size: int


def input_size(run: Run) -> int | None:
    """The square input side the run trained at: ``data.image_size`` (``crop_size`` for
    segmentation), else the top-level ``image_size``."""
    for key in ("data.image_size", "data.crop_size", "image_size"):
        value = resolved(run.config, key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class StructureCache:
    """Structure per distinct model; failures are remembered as messages, not raised."""

    def __init__(self) -> None:
        self._cache: dict[str, Structure | str] = {}
        self.builds = 0

    def get(self, run: Run) -> Structure | str:
        """The run's Structure, or a message saying why it could not be computed."""
        model_cfg = resolved(run.config, "model")
        size = input_size(run)
        if not isinstance(model_cfg, dict) or size is None:
            return "the stored config has no resolvable model settings or input size"
        model_cfg = _without_weights(model_cfg)
        key = json.dumps({"model": {k: v for k, v in model_cfg.items() if k not in _NOT_STRUCTURAL},
                          "image_size": size}, sort_keys=True, default=str)
        if key not in self._cache:
            self._cache[key] = self._measure(model_cfg, size)
        return self._cache[key]

    def _measure(self, model_cfg: dict[str, Any], size: int) -> Structure | str:
        self.builds += 1
        try:
            model = instantiate(model_cfg)
        except Exception as exc:  # noqa: BLE001 - e.g. a backbone this version does not have
            return f"cannot rebuild the model: {type(exc).__name__}: {exc}"
        meta = on_meta_device(model)
        example = torch.empty(1, 3, size, size, device="meta")
        return Structure(params=count_parameters(model), macs=count_macs(meta, example),
                         kib=saved_state_dict_kib(model), image_size=size)


def _without_weights(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The model config with random initialisation: no pretrained checkpoint is loaded."""
    cfg = dict(model_cfg)
    if isinstance(cfg.get("backbone"), dict):
        cfg["backbone"] = {**cfg["backbone"], "pretrained": None}
    return cfg
