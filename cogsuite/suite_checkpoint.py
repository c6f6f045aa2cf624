"""Reading this suite's checkpoints without letting them act.

A checkpoint stores the run's config (``cogsuite_config``) so eval.py, the per-class analysis
and the ONNX export can rebuild task, backbone and data from the file alone. Everything here
treats the file as untrusted data:

- it is read with ``torch.load(weights_only=True)`` (``backbones.pretrained.safe_load``), so
  unpickling builds nothing but tensors and plain containers;
- names an older version stored are first renamed through ``cogsuite.legacy_names``;
- every ``_target_`` anywhere in the stored config and hyper-parameters must be on an
  allowlist: the registered task classes at ``model`` (``tasks.registry``), the registered
  datamodules at ``data`` (``data.registry``), and for the
  parts that are only ever read, never instantiated (``trainer``, ``callbacks``, ``logger``),
  Lightning's own trainer / callback / logger classes. Anything else refuses the whole file;
- the only things ever constructed from a checkpoint are the allowlisted task class (from the
  stored ``class_path``, which must be allowlisted too) and the allowlisted datamodule.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from cogsuite.checkpoint_keys import CONFIG_KEY, SUITE_KEY
from cogsuite.instantiate import instantiate_node
from cogsuite.legacy_names import current_name, upgrade_targets
from errors import CheckpointError, ConfigError
from tasks.base import backbone_spec

# Run components are never instantiated from a checkpoint; listed so that checkpoints of runs
# that used Lightning's (or the suite's) callbacks and loggers are accepted.
_RUN_COMPONENT = re.compile(
    r"lightning\.pytorch\.(trainer\.)?Trainer|lightning\.Trainer"
    r"|lightning\.pytorch\.(callbacks|loggers)\.[A-Z]\w*"
    r"|cogsuite\.csv_logger\.[A-Z]\w*|cogsuite\.model_summary\.[A-Z]\w*|benchmarks\.throughput_loop\.BatchTimer"
    r"|cogsuite\.requeue\.RequeueOnSignal|cogsuite\.run_status\.Heartbeat")
RUN_COMPONENT_SECTIONS = ("trainer", "callbacks", "logger")


def task_targets() -> frozenset[str]:
    """The task classes a checkpoint may name: the task registry."""
    from tasks.registry import task_class_paths

    return task_class_paths()


def datamodule_targets() -> frozenset[str]:
    """The datamodules a checkpoint's ``data`` may build: the datamodule registry."""
    from data.registry import datamodule_targets as registered

    return registered()


def _allowed(key: str, target: object) -> bool:
    if not isinstance(target, str):
        return False
    if key == "model._target_":
        return target in task_targets()
    if key == "data._target_":
        return target in datamodule_targets()
    if key.split(".", 1)[0] in RUN_COMPONENT_SECTIONS:
        return _RUN_COMPONENT.fullmatch(target) is not None
    return False


def _targets(node: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every (dotted key, value) of a ``_target_`` entry in nested mappings and lists."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, Mapping):
        for name, value in node.items():
            child = f"{key}.{name}" if key else str(name)
            if name == "_target_":
                found.append((child, value))
            else:
                found.extend(_targets(value, child))
    elif isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
        for index, value in enumerate(node):
            found.extend(_targets(value, f"{key}[{index}]"))
    return found


def check_targets(config: Any, path: str | Path, section: str = "") -> None:
    """Raise CheckpointError if ``config`` names a ``_target_`` outside the allowlist."""
    refused = [(key, target) for key, target in _targets(config, section)
               if not _allowed(key, target)]
    if refused:
        shown = ", ".join(f"{key}={target!r}" for key, target in refused[:3])
        raise CheckpointError(
            f"refusing checkpoint {path}: its stored config names objects this suite does not "
            f"build from a checkpoint ({shown}). A checkpoint may only describe this suite's "
            "tasks and datamodules; this file was not written by train.py or was altered.")


def read_suite_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely, check that train.py wrote it, and check its stored config."""
    from backbones.pretrained import safe_load

    checkpoint = safe_load(path, "checkpoint")
    if not isinstance(checkpoint, dict) or SUITE_KEY not in checkpoint or CONFIG_KEY not in checkpoint:
        keys = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path} is not a checkpoint written by this suite's train.py (no '{SUITE_KEY}' / "
            f"'{CONFIG_KEY}' entries; found {keys}). Use checkpoints from "
            "logs/<task>/runs/<run>/checkpoints/ (a backbone from another file: backbone.pretrained=PATH).")
    info, config = checkpoint[SUITE_KEY], checkpoint[CONFIG_KEY]
    if not isinstance(info, Mapping) or not isinstance(config, Mapping):
        raise CheckpointError(f"{path}: malformed '{SUITE_KEY}' / '{CONFIG_KEY}' entries")
    # Names an older version stored are read as this version spells them (one table).
    info = checkpoint[SUITE_KEY] = {**info, "class_path": current_name(info.get("class_path"))}
    config = checkpoint[CONFIG_KEY] = upgrade_targets(config)
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint[key] = upgrade_targets(checkpoint[key])
    if info.get("class_path") not in task_targets():
        raise CheckpointError(
            f"refusing checkpoint {path}: it names the model class {info.get('class_path')!r}, "
            f"not one of this suite's tasks ({', '.join(sorted(task_targets()))}).")
    stored_target = (config.get("model") or {}).get("_target_")
    if stored_target is not None and stored_target != info["class_path"]:
        raise CheckpointError(f"refusing checkpoint {path}: its model class {info['class_path']!r} "
                              f"differs from its stored config's {stored_target!r}")
    check_targets(config, path)
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        check_targets(checkpoint.get(key) or {}, path, section=key)
    if not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{path} holds no model weights ('state_dict')")
    return checkpoint


def task_class(checkpoint: Mapping[str, Any]) -> type[L.LightningModule]:
    """The task class named by a checkpoint already checked by ``read_suite_checkpoint``."""
    class_path = checkpoint[SUITE_KEY]["class_path"]
    if class_path not in task_targets():  # read_suite_checkpoint refused it; never import it
        raise CheckpointError(f"model class {class_path!r} is not one of this suite's tasks")
    module_name, _, class_name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


def build_task(checkpoint: Mapping[str, Any], path: str | Path) -> L.LightningModule:
    """The trained task model: the allowlisted class built from the stored hyper-parameters,
    then the stored weights loaded strictly."""
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    if "backbone" not in hparams:
        raise CheckpointError(f"{path} stores no backbone in its hyper-parameters")
    # The checkpoint already holds the trained backbone: do not load `pretrained` again.
    spec = backbone_spec(hparams["backbone"])
    spec["pretrained"] = None
    hparams["backbone"] = spec
    cls = task_class(checkpoint)
    try:
        model = cls(**hparams)
    except (TypeError, ConfigError) as error:
        raise CheckpointError(f"{path}: its stored settings do not build a {cls.__name__} of this "
                              f"version of the suite: {error}") from error
    model.on_load_checkpoint(dict(checkpoint))
    check_weights_fit(model, checkpoint, path)
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model


def check_weights_fit(model: L.LightningModule, checkpoint: Mapping[str, Any], path: str | Path,
                      advice: str = "") -> None:
    """Raise CheckpointError (with the first mismatched keys) unless the stored weights fit."""
    stored, target = checkpoint["state_dict"], model.state_dict()
    missing = [k for k in target if k not in stored]
    unexpected = [k for k in stored if k not in target]
    shapes = [f"{k}: checkpoint {tuple(stored[k].shape)} vs model {tuple(target[k].shape)}"
              for k in target if k in stored and hasattr(stored[k], "shape")
              and tuple(stored[k].shape) != tuple(target[k].shape)]
    if not (missing or unexpected or shapes):
        return
    info = checkpoint.get(SUITE_KEY) or {}
    lines = [f"{path} ({info.get('task', '?')} model, backbone {info.get('backbone', '?')!r}) does "
             f"not fit the model built here ({type(model).__name__}):"]
    for label, items in (("with different shapes", shapes), ("missing", missing),
                         ("unexpected", unexpected)):
        if items:
            lines.append(f"  {len(items)} {label}: {items[:3]}")
    if advice:
        lines.append(advice)
    raise CheckpointError("\n".join(lines))


def check_resumable(checkpoint: Mapping[str, Any], model: L.LightningModule, path: str | Path) -> None:
    """Training can resume from ``checkpoint`` with ``model``: same task class, same weights layout."""
    info = checkpoint[SUITE_KEY]
    stored = checkpoint[CONFIG_KEY]
    stored_backbone = (stored.get("backbone") or {}).get("name", info.get("backbone"))
    advice = (f"Resume with that run's settings, e.g. task={stored.get('task_name', info.get('task'))} "
              f"backbone={stored_backbone}, or start a new run without ckpt_path "
              "(backbone.pretrained=PATH reuses only its backbone).")
    own_class = f"{type(model).__module__}.{type(model).__qualname__}"
    if info["class_path"] != own_class:
        raise CheckpointError(f"cannot resume from {path}: it is a {info.get('task')} checkpoint "
                              f"but this run trains {getattr(model, 'task_name', own_class)}. {advice}")
    check_weights_fit(model, checkpoint, path, advice)
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise CheckpointError(f"cannot resume from {path}: it holds weights only, no training "
                              "state (optimizer, epoch); use backbone.pretrained=PATH to start "
                              "from its backbone")


def instantiate_data(data_cfg: DictConfig | Mapping[str, Any], path: str | Path) -> L.LightningDataModule:
    """Instantiate a datamodule config that came from a checkpoint, after checking its target."""
    container = OmegaConf.to_container(data_cfg, resolve=True) if OmegaConf.is_config(data_cfg) else data_cfg
    check_targets({"data": container}, path)
    return instantiate_node(OmegaConf.create(container), "data")


def rebase_data_paths(data: Any, moves: Sequence[tuple[str, str]]) -> Any:
    """``data`` with every string path under an old root moved under its new root.

    ``moves`` are (old root, new root) pairs, e.g. the stored ``paths.data_dir`` and the one
    given on the command line; deeper old roots win (``.../datasets/synthetic`` before
    ``.../datasets``). Used so ``eval.py ckpt_path=X paths.data_dir=NEW`` reads from NEW although
    the checkpoint stores resolved, absolute data roots.
    """
    ordered = sorted(((Path(old), Path(new)) for old, new in moves),
                     key=lambda pair: len(pair[0].parts), reverse=True)

    def move(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, str) and value:
            for old, new in ordered:
                candidate = Path(value)
                if candidate.parts[:len(old.parts)] == old.parts:
                    return str(new.joinpath(*candidate.parts[len(old.parts):]))
        return value

    return move(data)
