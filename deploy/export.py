"""ONNX export of a task model of this suite, checked with onnxruntime against PyTorch.

    python -m deploy.export ckpt_path=logs/.../checkpoints/best_epoch042.ckpt
    python -m deploy.export --ckpt PATH [--no-fuse] [--opset 17] [--image-size N] [--out F.onnx]
                            [--decode-boxes]

What is exported (input ``images`` [B, 3, H, W], B dynamic, H and W fixed at ``--image-size``):
- classification: ``logits`` [B, classes];
- segmentation: ``logits`` [B, classes, H, W] at the input size (bilinear upsampling included);
- detection (SSD-Lite): the network up to ``cls_logits`` [B, P, classes + 1] (column 0 =
  background) and ``box_regression`` [B, P, 4] (SSD offsets against the priors); with
  ``--decode-boxes`` instead ``scores`` (softmax) and ``boxes`` (xyxy pixels, clipped to the
  image), the priors baked in as a constant. Non-maximum suppression is not exported: the
  per-class top-k + NMS of ``heads.ssd_lite.postprocess_detections`` has data-dependent shapes
  and stays with the caller (run it on the decoded outputs, e.g. with torchvision's
  ``batched_nms``).

With ``--fuse`` (default) the model is exported after ``backbones.fuse_for_inference``
(BatchNorm folded, every pointwise layer in its fused form: a COG conv is one dense 1x1 conv).
Without it, pointwise layers with several implementations are exported in their reference form
(COG: the grouped "concat" form; its block-sparse "dense" form builds its weight with an indexed
write that ONNX export does not support).

Channel shuffles (``group_shuffle``, ``kgroup``'s interleave) are exported as reshape -> transpose
-> reshape: the exporter has no symbolic for ``aten::channel_shuffle``.

Check: the ONNX model runs in onnxruntime on a seeded random batch of 2 and each output is
compared with the original (unfused) PyTorch model's. It passes when
``max|onnx - torch| <= 1e-3 * max(1, max|torch|)`` (1e-3 relative to the output's scale);
otherwise the export fails with ``OnnxMismatchError`` (exit status 1).

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): the torch.export-based
exporter needs the extra ``onnxscript`` package.
"""
from __future__ import annotations

import argparse
import copy
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from backbones import fuse_for_inference
from backbones.pointwise import using_impl
from errors import ConfigError, exit_on_user_error

RELATIVE_TOLERANCE = 1e-3
DEFAULT_OPSET = 17


class OnnxMismatchError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance."""


@dataclass
class ExportReport:
    path: Path
    output_names: list[str]
    fused: bool
    opset: int
    # Per output: max |onnxruntime - torch| and the tolerance it was held to.
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)
    # Per output: max |fused torch - original torch| (only when fused).
    fused_max_abs_diff: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"exported: {self.path} (opset {self.opset}, {'fused' if self.fused else 'not fused'})"]
        for name in self.output_names:
            line = (f"  {name}: max |onnxruntime - torch| = {self.max_abs_diff[name]:.3g} "
                    f"(tolerance {self.tolerance[name]:.3g})")
            if name in self.fused_max_abs_diff:
                line += f"; max |fused - unfused torch| = {self.fused_max_abs_diff[name]:.3g}"
            lines.append(line)
        return "\n".join(lines)


# --------------------------------------------------------------------------- exportable modules
class ReshapeChannelShuffle(nn.Module):
    """``nn.ChannelShuffle(groups)`` as reshape -> transpose -> reshape (ShuffleNet's own
    formulation): the same permutation, in operations the TorchScript ONNX exporter supports."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        channels, height, width = x.shape[1:]
        x = x.reshape(-1, self.groups, channels // self.groups, height, width).transpose(1, 2)
        return x.reshape(-1, channels, height, width)


def with_exportable_shuffles(model: nn.Module) -> nn.Module:
    """``model``, or a copy of it with every ``nn.ChannelShuffle`` a ``ReshapeChannelShuffle``."""
    if not any(isinstance(m, nn.ChannelShuffle) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ChannelShuffle):
                setattr(parent, name, ReshapeChannelShuffle(child.groups))
    return model


class SSDLiteExport(nn.Module):
    """An SSD-Lite detector's network without post-processing, returning plain tensors.

    ``decode_boxes=False``: (cls_logits, box_regression). ``decode_boxes=True``: (scores,
    boxes): softmax scores and boxes decoded against the priors of ``image_size`` (a constant
    buffer) in xyxy pixels, clipped to the image (``postprocess_detections`` clips before NMS only
    with ``clip_boxes=True``; the thesis' predictor does not).
    """

    def __init__(self, detector: nn.Module, image_size: Sequence[int], decode_boxes: bool = False) -> None:
        super().__init__()
        self.detector = detector
        self.decode_boxes = decode_boxes
        self.image_size = (int(image_size[0]), int(image_size[1]))
        param = next(detector.parameters())
        with torch.no_grad():
            probe = torch.zeros(1, 3, *self.image_size, device=param.device, dtype=param.dtype)
            self.register_buffer("priors", detector(probe).priors.clone(), persistent=False)

    @property
    def output_names(self) -> list[str]:
        return ["scores", "boxes"] if self.decode_boxes else ["cls_logits", "box_regression"]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        output = self.detector(images)
        if not self.decode_boxes:
            return output.cls_logits, output.box_regression
        from torchvision.ops import clip_boxes_to_image

        from heads.priors import box_coder

        regression = output.box_regression
        priors = self.priors.unsqueeze(0).expand_as(regression)
        boxes = box_coder().decode_single(regression.reshape(-1, 4), priors.reshape(-1, 4))
        boxes = clip_boxes_to_image(boxes, self.image_size).reshape(regression.shape)
        return torch.softmax(output.cls_logits, dim=-1), boxes


def exportable(model: nn.Module, example: Tensor, decode_boxes: bool = False) -> tuple[nn.Module, list[str]]:
    """``model`` as a module returning tensors, and its output names: a task whose output is not
    one tensor names its wrapper in its TaskSpec (``export``); other models return logits."""
    from hydra.utils import get_class

    from tasks.registry import task_for_class

    spec = task_for_class(type(model))
    if spec is not None and spec.export:
        wrapped = get_class(spec.export)(model, example.shape[-2:], decode_boxes)
        return wrapped.eval(), wrapped.output_names
    if decode_boxes:
        raise ConfigError("--decode-boxes applies to detection models only")
    with torch.no_grad():
        output = model.eval()(example)
    if isinstance(output, Tensor):
        return model, ["logits"]
    raise TypeError(f"cannot export a model returning {type(output).__name__}; expected logits "
                    "(or a task whose TaskSpec names an export wrapper)")


# --------------------------------------------------------------------------- export + check
def _as_tuple(output: Any) -> tuple[Tensor, ...]:
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


def export_onnx(
    model: nn.Module,
    example: Tensor,
    path: str | Path,
    *,
    fuse: bool = True,
    opset: int = DEFAULT_OPSET,
    decode_boxes: bool = False,
    check: bool = True,
    check_batch: int = 2,
    seed: int = 0,
) -> ExportReport:
    """Exports a task module (classification, detection or segmentation) to ONNX at ``path``.

    ``example`` fixes the image size (its batch size does not matter: the batch axis is
    dynamic). ``model`` itself is left as it was (fusion works on a copy). With ``check`` the
    ONNX model is run in onnxruntime on a seeded random batch of ``check_batch`` images and
    compared with ``model``; see the module docstring for the tolerance.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        original, names = exportable(model, example, decode_boxes)
        deployed = exportable(fuse_for_inference(model), example, decode_boxes)[0] if fuse else original
        deployed = with_exportable_shuffles(deployed)
        with using_impl(deployed, "reference"), torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                deployed, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=["images"], output_names=names,
                dynamic_axes={name: {0: "batch"} for name in ["images", *names]},
            )
        report = ExportReport(path, names, fuse, opset)
        if check:
            generator = torch.Generator().manual_seed(seed)
            images = torch.randn(check_batch, *example.shape[1:], generator=generator).to(example)
            _check(report, original, deployed if fuse else None, images)
    finally:
        model.train(was_training)
    return report


def run_onnxruntime(path: str | Path, images: Tensor) -> list[Any]:
    """Outputs of the ONNX model at ``path`` for ``images`` on onnxruntime's CPU provider."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images.detach().cpu().numpy()})


def _check(report: ExportReport, original: nn.Module, fused: nn.Module | None, images: Tensor) -> None:
    with torch.no_grad():
        reference = [t.detach().cpu() for t in _as_tuple(original(images))]
        fused_out = [t.detach().cpu() for t in _as_tuple(fused(images))] if fused is not None else None
    onnx_out = run_onnxruntime(report.path, images)
    failures = []
    for index, name in enumerate(report.output_names):
        ref = reference[index]
        got = torch.from_numpy(onnx_out[index])
        if got.shape != ref.shape:
            failures.append(f"{name}: onnxruntime shape {tuple(got.shape)} != torch {tuple(ref.shape)}")
            continue
        tolerance = RELATIVE_TOLERANCE * max(1.0, ref.abs().max().item())
        diff = (got - ref).abs().max().item()
        report.max_abs_diff[name], report.tolerance[name] = diff, tolerance
        if fused_out is not None:
            report.fused_max_abs_diff[name] = (fused_out[index] - ref).abs().max().item()
        if not diff <= tolerance:  # also catches NaN
            failures.append(f"{name}: max |onnxruntime - torch| = {diff:.3g} > tolerance {tolerance:.3g}")
    if failures:
        raise OnnxMismatchError(f"ONNX model {report.path} does not reproduce PyTorch: " + "; ".join(failures))


# --------------------------------------------------------------------------- checkpoints
def load_checkpoint_model(ckpt_path: str | Path) -> tuple[nn.Module, str, dict[str, Any]]:
    """(task module in eval mode, task name, stored run config) of a checkpoint of this suite,
    loaded safely: weights_only, and only this suite's task classes are built from it."""
    from cogsuite.checkpoint_keys import SUITE_KEY
    from cogsuite.suite_checkpoint import CONFIG_KEY, build_task, read_suite_checkpoint

    checkpoint = read_suite_checkpoint(ckpt_path)
    task = checkpoint[SUITE_KEY]["task"]
    return build_task(checkpoint, ckpt_path).eval(), task, checkpoint[CONFIG_KEY]


def trained_image_size(task: str, config: dict[str, Any]) -> int:
    """The image (crop) size the checkpoint was trained at, else the task's default."""
    data = config.get("data") or {}
    for value in (data.get("image_size"), data.get("crop_size"), config.get("image_size")):
        if isinstance(value, int) and value > 0:
            return value
    from tasks.registry import get_task

    return get_task(task).image_size


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.export",
        description="Export a checkpoint of this suite to ONNX and check it with onnxruntime.")
    parser.add_argument("ckpt_path", nargs="?", help="ckpt_path=PATH (or --ckpt PATH)")
    parser.add_argument("--ckpt", help="checkpoint path")
    parser.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                        help="fold BN and COG convs before export (default: on)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--image-size", type=int, default=None,
                        help="square input size (default: the size the checkpoint was trained at)")
    parser.add_argument("--out", help="ONNX file (default: the checkpoint path with .onnx)")
    parser.add_argument("--decode-boxes", action="store_true",
                        help="detection: export softmax scores and decoded boxes instead of raw outputs")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    args = parser.parse_args(argv)
    positional = args.ckpt_path
    if positional is not None:
        key, sep, value = positional.partition("=")
        if sep and key.lstrip("+") != "ckpt_path":
            parser.error(f"unknown argument {positional!r}; the only KEY=VALUE form is ckpt_path=PATH")
        positional = value if sep else positional
        if args.ckpt and args.ckpt != positional:
            parser.error("give the checkpoint once: ckpt_path=PATH or --ckpt PATH")
        args.ckpt = positional
    if not args.ckpt:
        parser.error("no checkpoint: pass ckpt_path=PATH or --ckpt PATH")
    if args.image_size is not None and args.image_size < 32:
        parser.error("--image-size must be at least 32 (the backbone downsamples by 32)")
    return args


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> ExportReport:
    args = parse_args(argv)
    try:
        model, task, config = load_checkpoint_model(args.ckpt)
        size = args.image_size or trained_image_size(task, config)
        out = Path(args.out) if args.out else Path(args.ckpt).with_suffix(".onnx")
        example = torch.zeros(1, 3, size, size)
        report = export_onnx(model, example, out, fuse=args.fuse, opset=args.opset,
                             decode_boxes=args.decode_boxes, check=not args.no_check)
    except OnnxMismatchError as exc:  # not bad input: the exported graph computes something else
        print(f"\nFAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"{task} model, input [B, 3, {size}, {size}]")
    if args.no_check:
        print(f"exported: {report.path} (not checked)")
    else:
        print(report.summary() + f"\ncheck passed (tolerance {RELATIVE_TOLERANCE:g} x max(1, max|torch|))")
    return report


if __name__ == "__main__":
    main()
