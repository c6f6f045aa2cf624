"""Loading backbone weights from any task checkpoint of this suite or torchvision's mobilenet_v2 /
efficientnet_b0."""
from __future__ import annotations

import json
import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor, nn

from errors import CheckpointError, SuiteFileNotFoundError

from .timm_backbone import TimmBackbone, is_timm_state_dict, load_timm_checkpoint
from .torchvision_convert import (
    convert_torchvision_efficientnet_b0,
    convert_torchvision_mobilenet_v2,
    is_torchvision_efficientnet,
    is_torchvision_mobilenet_v2,
)

log = logging.getLogger("backbones")

BACKBONE_PREFIX = "backbone."
_SHOW = 5  # keys shown per category in error messages


@dataclass
class LoadReport:
    """What ``load_backbone_weights`` did."""

    path: str
    source: str  # "lightning" | "torchvision" | "state_dict" | "timm"
    checkpoint_backbone: Optional[str]  # backbone name recorded in the checkpoint, if any
    loaded: int  # tensors copied into the backbone
    ignored: list[str] = field(default_factory=list)  # checkpoint tensors the backbone lacks
    # timm checkpoints into a backbone with surgery: replaced layers started from the projection
    # of the checkpoint's dense conv, or left newly initialised (paths).
    projected: list[str] = field(default_factory=list)
    newly_initialised: list[str] = field(default_factory=list)


def load_backbone_weights(
    backbone: nn.Module, path: Union[str, Path], strict_arch: bool = True
) -> LoadReport:
    """Copies backbone weights from ``path`` into ``backbone`` (in place).

    ``path`` may hold (a) a Lightning checkpoint of any task here (``state_dict`` keys
    ``backbone.*``, name in ``hyper_parameters["backbone"]``), (b) a torchvision mobilenet_v2
    state dict (fits mv2_e6) or efficientnet_b0 state dict (fits efficientnet_b0), or (c) a plain backbone state dict. Every tensor of ``backbone``
    must be present with the same shape; extra checkpoint tensors are ignored and reported.
    With ``strict_arch`` the backbone name recorded in the checkpoint (if any) must also equal
    ``backbone.name``, even when the shapes match. Output stride does not matter: dilation changes no weights.
    ``path`` may also be a run folder or a folder of runs: see ``checkpoint_in``.
    """
    path = checkpoint_in(path)
    obj = load_safetensors(path) if path.suffix == ".safetensors" else safe_load(path, "backbone checkpoint")
    timm_state = timm_state_dict(backbone, obj)
    if timm_state is not None:  # a timm model's own weights into a timm backbone
        summary = load_timm_checkpoint(backbone, _tensors(timm_state, path), str(path))
        return LoadReport(str(path), "timm", backbone.model_name, summary["loaded"], summary["ignored"],
                          summary["projected"], summary["newly_initialised"])
    source, checkpoint_name, weights = _backbone_weights(obj, path)
    target_name = getattr(backbone, "name", None)
    target = backbone.state_dict()
    missing = [k for k in target if k not in weights]
    mismatched = [k for k in target if k in weights and weights[k].shape != target[k].shape]
    unexpected = [k for k in weights if k not in target]
    if missing or mismatched:
        target_label = repr(target_name) if target_name else type(backbone).__name__
        raise CheckpointError(_mismatch_message(path, checkpoint_name, target_label, target, weights,
                                           missing, mismatched, unexpected))
    if strict_arch and checkpoint_name and target_name and checkpoint_name != target_name:
        raise CheckpointError(
            f"{path} holds weights of backbone {checkpoint_name!r} but the target backbone is "
            f"{target_name!r} (the tensor shapes happen to match); build {checkpoint_name!r} "
            f"instead, or pass strict_arch=False to load anyway."
        )
    backbone.load_state_dict({k: weights[k] for k in target}, strict=True)
    report = LoadReport(str(path), source, checkpoint_name, len(target), unexpected)
    log.info(
        "Loaded %d tensors into backbone %r from %s (%s%s); ignored %d checkpoint tensors%s",
        report.loaded, target_name, path, source,
        f", backbone {checkpoint_name!r}" if checkpoint_name else "",
        len(unexpected), f" e.g. {unexpected[:_SHOW]}" if unexpected else "",
    )
    return report


def load_safetensors(path: Path) -> dict[str, Tensor]:
    """A ``.safetensors`` file (timm's hub format; cannot run code) as a state dict."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        raise SuiteFileNotFoundError(f"backbone checkpoint not found: {path.absolute()}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(str(error))}); "
                              "copy it again or give a torch checkpoint") from error


def timm_state_dict(backbone: nn.Module, obj: object) -> Optional[Mapping[str, object]]:
    """The timm state dict in ``obj`` when ``backbone`` is a timm backbone and ``obj`` is a timm
    model's weights (a state dict, or timm's train checkpoint ``{"state_dict": ...}``)."""
    if not isinstance(obj, Mapping) or not isinstance(backbone, TimmBackbone):
        return None
    state = obj.get("state_dict") if isinstance(obj.get("state_dict"), Mapping) else obj
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    return state if is_timm_state_dict(backbone, state) else None


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6
_PICKLE_MAGIC = b"\x80"  # pickle protocol >= 2: torch.save's legacy format


def safe_load(path: Union[str, Path], what: str = "checkpoint") -> object:
    """``torch.load(path, weights_only=True)`` with one clear ``CheckpointError`` per failure kind.

    A file that is missing, empty, truncated or not a checkpoint at all is named as such; only a
    complete checkpoint that asks for objects other than tensors and plain containers (so that
    unpickling it could run code) is called unsafe. Nothing in the file is ever executed.
    """
    path = Path(path)
    if not path.exists():
        raise SuiteFileNotFoundError(f"{what} not found: {path.absolute()}")
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder; give the path of a .ckpt file")
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise CheckpointError(f"cannot read {what} {path}: {error.strerror or error}") from error
    if size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): an interrupted save or copy; "
                              "use another checkpoint or copy it again")
    if head == _ZIP_MAGIC and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{what} {path} is truncated or corrupt (an incomplete archive of {size} bytes, e.g. "
            "from an interrupted save or copy); use another checkpoint (last.ckpt, best_*.ckpt) "
            "or copy it again")
    if head != _ZIP_MAGIC and not head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(
            f"{what} {path} is not a PyTorch checkpoint: its content is not a torch.save file "
            f"(it starts with bytes {head!r}); the file is corrupt or of another kind")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        # torch names the object it refused: "Unsupported global: GLOBAL x.y" or
        # "unsupported GLOBAL x.y whose module x is blocked"; anything else is a damaged file.
        unsafe = re.search(r"unsupported (?:global|class)\W*(?:GLOBAL\s+)?([\w.]+)", text, re.I)
        if unsafe is None:
            raise CheckpointError(f"{what} {path} is corrupt or not a PyTorch checkpoint: "
                                  f"unpickling failed ({_first_line(text)})") from error
        hint = ""
        if "omegaconf" in text.lower():
            hint = (" It contains OmegaConf objects: store hyper-parameters as plain containers "
                    "(OmegaConf.to_container) when saving.")
        raise CheckpointError(
            f"{what} {path} is not a safe checkpoint: unpickling it would run code or build "
            f"objects other than tensors and plain containers (it names {unsafe.group(1)}; "
            f"torch.load weights_only=True refused it).{hint} Re-save only the weights, e.g. "
            "torch.save(model.state_dict(), path)."
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{what} {path} is corrupt or truncated: torch.load failed "
                              f"({_first_line(str(error))}); use another checkpoint or copy it "
                              "again") from error


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)[:200]


RUN_CHECKPOINT = Path("checkpoints") / "last.ckpt"


RUN_METRICS = "metrics.json"  # written by train.py when a run finishes


def checkpoint_in(path: Union[str, Path]) -> Path:
    """``path`` itself if it is a file; for a run folder its ``checkpoints/last.ckpt``; for a
    folder of runs (e.g. a table row's ``logs/thesis/table5_1/caltech256_cog_e2``) the newest
    **finished** run's (one with ``metrics.json`` that did not diverge, newest by that file's
    time), logged with the run it picked. That is how Table 5.5 starts from the newest Table 5.1
    classifier of its backbone; a run still training (or crashed) is never picked."""
    path = Path(path)
    if not path.exists():
        raise SuiteFileNotFoundError(
            f"backbone checkpoint not found: {path} is neither a checkpoint file nor a run folder; "
            "train the run it comes from first (Table 5.5 starts from the Table 5.1 Caltech-256 "
            "row of the same backbone) or fix backbone.pretrained")
    if not path.is_dir():
        return path
    if (path / RUN_CHECKPOINT).is_file():
        return path / RUN_CHECKPOINT
    runs = [c.parent.parent for c in path.glob(f"*/{RUN_CHECKPOINT.as_posix()}")]
    finished = sorted((r for r in runs if _finished(r)), key=lambda r: ((r / RUN_METRICS).stat().st_mtime, r.name))
    if not finished:
        found = f" ({len(runs)} run(s) there have not finished or diverged)" if runs else ""
        raise SuiteFileNotFoundError(
            f"no finished run under {path}{found} (looked for */{RUN_CHECKPOINT.as_posix()} with "
            f"{RUN_METRICS}): train the run this one starts from first (for Table "
            "5.5: the Table 5.1 Caltech-256 row of the same backbone), or set backbone.pretrained "
            "to a checkpoint file")
    newest = finished[-1]
    skipped = len(runs) - len(finished)
    log.info("backbone.pretrained=%s: loading the newest finished run %s%s", path, newest.name,
             f" ({skipped} unfinished or diverged run(s) there skipped)" if skipped else "")
    return newest / RUN_CHECKPOINT


def _finished(run: Path) -> bool:
    try:
        summary = json.loads((run / RUN_METRICS).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("diverged") is not True


def _backbone_weights(obj: object, path: Path) -> tuple[str, Optional[str], dict[str, Tensor]]:
    """(source, recorded backbone name, backbone state dict) from a loaded checkpoint."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict or state dict.")
    if isinstance(obj.get("state_dict"), Mapping):
        weights = _strip_prefix(obj["state_dict"])
        if not weights:
            prefixes = sorted({k.split(".", 1)[0] for k in obj["state_dict"]})
            raise CheckpointError(
                f"{path} is a Lightning checkpoint without '{BACKBONE_PREFIX}*' weights "
                f"(top-level modules: {prefixes}); the model must keep its backbone at self.backbone."
            )
        return "lightning", _recorded_name(obj.get("hyper_parameters")), _tensors(weights, path)
    if is_torchvision_mobilenet_v2(obj):
        # torchvision's mobilenet_v2 is exactly mv2_e6.
        return "torchvision", "mv2_e6", _tensors(convert_torchvision_mobilenet_v2(obj)[0], path)
    if is_torchvision_efficientnet(obj):
        # torchvision's efficientnet_b0 is exactly efficientnet_b0 (other sizes report mismatches).
        return "torchvision", "efficientnet_b0", _tensors(convert_torchvision_efficientnet_b0(obj)[0], path)
    if any(k.startswith(BACKBONE_PREFIX) for k in obj):  # a task model's state_dict()
        return "state_dict", None, _tensors(_strip_prefix(obj), path)
    return "state_dict", None, _tensors(dict(obj), path)


def _strip_prefix(state: Mapping[str, object]) -> dict[str, object]:
    return {k[len(BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}


def _recorded_name(hparams: object) -> Optional[str]:
    spec = hparams.get("backbone") if isinstance(hparams, Mapping) else None
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        return spec["name"]
    return None


def _tensors(state: Mapping[str, object], path: Path) -> dict[str, Tensor]:
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries {bad[:_SHOW]} are not tensors; expected a state dict.")
    # Weights from a run that diverged: loading them would only make the new run diverge, with
    # a message blaming its own learning rate or data.
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise CheckpointError(
            f"refusing backbone weights from {path}: {len(nonfinite)} tensor(s) hold NaN or infinite values "
            f"(e.g. {nonfinite[:_SHOW]}), so the run that wrote them had diverged; use a checkpoint from "
            "before it diverged or another run")
    return dict(state)


def _mismatch_message(path, checkpoint_name, target_label, target, weights, missing, mismatched,
                      unexpected) -> str:
    recorded = repr(checkpoint_name) if checkpoint_name else "name not recorded"
    lines = [f"{path} (backbone {recorded}) does not fit backbone {target_label}:"]
    if missing:
        lines.append(f"  {len(missing)} missing: {missing[:_SHOW]}")
    if mismatched:
        shown = [f"{k}: checkpoint {tuple(weights[k].shape)} vs backbone {tuple(target[k].shape)}"
                 for k in mismatched[:_SHOW]]
        lines.append(f"  {len(mismatched)} with different shapes: {shown}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected: {unexpected[:_SHOW]}")
    if missing and not mismatched and not unexpected:
        lines.append("  If the checkpoint's backbone was truncated (e.g. segmentation keeps up to "
                     "'stage6'), truncate the target the same way before loading.")
    return "\n".join(lines)
