"""Model complexity of every backbone in every task: parameters, MACs, 1x1-conv memory access
cost and CPU latency, optionally before and after inference fusion.

    python -m benchmarks.complexity                       # all tasks and backbones
    python -m benchmarks.complexity --fused --csv complexity.csv
    python -m benchmarks.complexity --tasks classification --backbones mv2_e2,cog_e2 --no-latency

Models: classifier at 224 px with 1000 classes (the thesis' Table 5.2 setting), SSD-Lite at
300 px with 20 object classes, DeepLabv3 at 480 px, output stride 16, 21 classes.

Columns:
- params / weights KB: trainable parameters, and their fp32 size (4 bytes each / 1024).
- MACs / FLOPs: multiply-accumulates of convolutions and matrix products at batch 1, counted by
  ``torch.utils.flop_counter.FlopCounterMode``; FLOPs = 2 x MACs (its convention). Pooling,
  interpolation, activations and additions are not counted. COG convs are counted as the grouped
  conv they are (``impl="concat"``), not as the block-sparse dense conv some implementations run.
- 1x1 MAC: memory access cost of all 1x1 convs (ShuffleNetV2's MAC, see ``pointwise_conv_mac``
  and ``cog_conv_mac``), in tensor elements at batch 1.
- latency: median ms of the network's forward at batch 1 (eval mode, inference_mode), after
  warm-up; every model of a task is timed interleaved with the others (see
  ``benchmarks.common.sample_latencies_ms``). Detection is timed up to the raw head outputs
  (class logits, box offsets, priors): softmax + NMS cost depends on how many boxes pass the
  score threshold, which for untrained weights says nothing. On a machine shared with other
  jobs use ``--threads 1``: intra-op threads that wait for a busy core inflate multi-thread
  timings many times over.
- with ``--fused``: the same after ``backbones.fuse_for_inference`` (BatchNorm folded, every COG
  conv turned into one dense 1x1 conv), plus MACs and 1x1 MAC of the fused model.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from backbones import ChannelOverlapConv2d, fuse_for_inference, list_backbones
from benchmarks.common import machine_description, markdown_table, median_latencies_ms, write_csv
from errors import ConfigError


@dataclass(frozen=True)
class TaskSetting:
    """How one task's model is built and fed for the complexity table."""

    build: Callable[..., nn.Module]  # build(backbone_spec) -> task module
    image_size: int
    description: str


def _classifier(backbone: Any) -> nn.Module:
    from tasks.classification import ClassificationTask

    return ClassificationTask(backbone=backbone, num_classes=1000)


def _detector(backbone: Any) -> nn.Module:
    from tasks.detection import DetectionTask

    return DetectionTask(backbone=backbone, num_classes=20)


def _segmenter(backbone: Any) -> nn.Module:
    from tasks.segmentation import SegmentationTask

    return SegmentationTask(backbone=backbone, num_classes=21, output_stride=16)


TASKS: dict[str, TaskSetting] = {
    "classification": TaskSetting(_classifier, 224, "classifier, 224 px, 1000 classes"),
    "detection": TaskSetting(_detector, 300, "SSD-Lite, 300 px, 20 classes"),
    "segmentation": TaskSetting(_segmenter, 480, "DeepLabv3, 480 px, OS16, 21 classes"),
}


# --------------------------------------------------------------------------- structure
def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def weights_kb(model: nn.Module) -> float:
    """Size of the trainable parameters stored as fp32, in KB (bytes / 1024)."""
    return count_parameters(model) * 4 / 1024


@contextlib.contextmanager
def cog_impl(model: nn.Module, impl: str | None) -> Iterator[nn.Module]:
    """Temporarily runs every ChannelOverlapConv2d of ``model`` with ``impl`` (None: unchanged)."""
    convs = [m for m in model.modules() if isinstance(m, ChannelOverlapConv2d)]
    previous = [m.impl for m in convs]
    try:
        if impl is not None:
            for m in convs:
                m.impl = impl
        yield model
    finally:
        for m, old in zip(convs, previous):
            m.impl = old


def _example(model: nn.Module, image_size: int) -> Tensor:
    param = next(model.parameters())
    return torch.randn(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)


def count_macs(model: nn.Module, example: Tensor) -> int:
    """Multiply-accumulates of one forward of ``example`` (FlopCounterMode's FLOPs / 2).

    COG convs run their reference grouped implementation while counting, so their MACs are
    those of the compact weight (the block-sparse dense form would count the zeros too).
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with cog_impl(model, "concat"), torch.no_grad(), counter:
            model(example)
    finally:
        model.train(was_training)
    flops = counter.get_total_flops()
    return flops // 2


# --------------------------------------------------------------------------- memory access cost
def pointwise_conv_mac(c_in: int, c_out: int, h: int, w: int, groups: int = 1,
                       h_out: int | None = None, w_out: int | None = None) -> int:
    """Memory access cost of a 1x1 (group) conv, in elements, batch 1.

    ShuffleNetV2 (Ma et al., ECCV 2018), Sec. 2, guideline G1, and Eq. 2 for group convs (G2):
    ``MAC = h*w*(c_in + c_out) + c_in*c_out/g`` -- read the input feature map, write the output
    feature map, read the kernel. A strided conv writes an h_out x w_out map. Bias is ignored,
    as in the paper.
    """
    h_out = h if h_out is None else h_out
    w_out = w if w_out is None else w_out
    return h * w * c_in + h_out * w_out * c_out + c_in * c_out // groups


def cog_conv_mac(c_in: int, c_out: int, h: int, w: int, groups: int, overlap: int) -> int:
    """Memory access cost of a channel-overlapping group conv (ChannelOverlapConv2d), batch 1.

    COG is computed as (see ``backbones.channel_overlap_conv``, impl "concat"): gather the
    ``groups * (1 + overlap)`` input chunks each group sees into one tensor of
    ``k * c_in`` channels (k = 1 + overlap, so every input element is duplicated k times), then
    one grouped 1x1 conv over it. Counted, in elements:

    - concat copy: read ``k*c_in*h*w`` (every chunk read once per group that sees it) and write
      ``k*c_in*h*w`` -- the extra read + write of the duplicated input;
    - grouped 1x1 conv on the duplicated input, ShuffleNetV2 Eq. 2 with ``k*c_in`` input
      channels: ``h*w*(k*c_in + c_out) + k*c_in*c_out/g``.

    Total ``h*w*(3*k*c_in + c_out) + k*c_in*c_out/g``. With overlap 0 the copy is still
    counted; use ``pointwise_conv_mac`` for a plain group conv.
    """
    k = 1 + overlap
    duplicated = k * c_in
    concat_copy = 2 * duplicated * h * w
    return concat_copy + pointwise_conv_mac(duplicated, c_out, h, w, groups)


def _is_pointwise_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)


def pointwise_memory_access(model: nn.Module, example: Tensor) -> int:
    """Sum of ``pointwise_conv_mac`` / ``cog_conv_mac`` over every 1x1 conv that runs in one
    forward of ``example``, per image (forward hooks read the actual channel and spatial sizes;
    the batch dimension is left out). Linear layers are not 1x1 convs and are not counted; a
    1x1 conv that runs twice is counted twice."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        x = inputs[0]
        _, c_in, h, w = x.shape
        if isinstance(module, ChannelOverlapConv2d):
            total += cog_conv_mac(c_in, module.out_channels, h, w, module.groups, module.overlap)
        else:
            total += pointwise_conv_mac(c_in, output.shape[1], h, w, module.groups,
                                        output.shape[2], output.shape[3])

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, ChannelOverlapConv2d) or _is_pointwise_conv(m)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


# --------------------------------------------------------------------------- table rows
def build_model(task: str, backbone: str, width_mult: float = 1.0) -> nn.Module:
    """The task's model with ``backbone`` (random weights), in eval mode."""
    setting = _task_setting(task)
    spec: Any = backbone if width_mult == 1.0 else {"name": backbone, "width_mult": width_mult}
    return setting.build(spec).eval()


def on_meta_device(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device: forwards propagate shapes only, no arithmetic."""
    return copy.deepcopy(model).to("meta")


def structural_row(task: str, backbone: str, model: nn.Module, image_size: int) -> dict[str, Any]:
    """Parameters, size, MACs, FLOPs and 1x1-conv memory access cost of one model.

    Counted on a meta-device copy: MACs and memory access depend on shapes only.
    """
    model = on_meta_device(model)
    example = _example(model, image_size)
    macs = count_macs(model, example)
    return {
        "task": task,
        "backbone": backbone,
        "image_size": image_size,
        "params": count_parameters(model),
        "weights_kb": weights_kb(model),
        "macs": macs,
        "flops": 2 * macs,
        "pw_mac": pointwise_memory_access(model, example),
    }


def complexity_table(
    tasks: Sequence[str],
    backbones: Sequence[str],
    *,
    latency: bool = True,
    fused: bool = False,
    repeats: int = 10,
    warmup: int = 3,
    width_mult: float = 1.0,
    latency_cog_impl: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> list[dict[str, Any]]:
    """One row per (task, backbone): structural columns, and latency columns when asked.

    All models of one task are timed interleaved (unfused and fused side by side), so machine
    drift affects COG and MobileNetV2 alike.
    """
    rows: list[dict[str, Any]] = []
    for task in tasks:
        setting = _task_setting(task)
        models: dict[str, nn.Module] = {}
        task_rows: dict[str, dict[str, Any]] = {}
        for name in backbones:
            log(f"{task} · {name}: counting")
            model = build_model(task, name, width_mult)
            row = structural_row(task, name, model, setting.image_size)
            if latency_cog_impl is not None:
                for m in model.modules():
                    if isinstance(m, ChannelOverlapConv2d):
                        m.impl = latency_cog_impl
            models[name] = model
            if fused:
                fused_model = fuse_for_inference(model)
                counted = structural_row(task, name, fused_model, setting.image_size)
                row["macs_fused"] = counted["macs"]
                row["pw_mac_fused"] = counted["pw_mac"]
                models[f"{name}+fused"] = fused_model
            task_rows[name] = row
        if latency:
            log(f"{task}: timing {len(models)} models interleaved, {repeats} repeats")
            example = _example(next(iter(models.values())), setting.image_size)
            calls = {key: _forward_call(model, example) for key, model in models.items()}
            with torch.inference_mode():
                medians = median_latencies_ms(calls, repeats=repeats, warmup=warmup,
                                              device=example.device)
            for name, row in task_rows.items():
                row["latency_ms"] = medians[name]
                if fused:
                    row["latency_fused_ms"] = medians[f"{name}+fused"]
        rows.extend(task_rows.values())
        models.clear()
    return rows


def _forward_call(model: nn.Module, example: Tensor) -> Callable[[], Any]:
    def call() -> Any:
        return model(example)

    return call


_PAIR = re.compile(r"^(?P<family>cog|mv2)_e(?P<expansion>\d+)$")


def latency_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """COG / MobileNetV2 latency ratios per task and expansion factor, unfused and fused
    (for every ``cog_eX`` whose ``mv2_eX`` is in ``rows`` with latencies)."""
    by_key: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        match = _PAIR.match(row["backbone"])
        if match and "latency_ms" in row:
            by_key[(row["task"], match["family"], int(match["expansion"]))] = row
    ratios = []
    for (task, family, expansion), cog in sorted(by_key.items()):
        mv2 = by_key.get((task, "mv2", expansion))
        if family != "cog" or mv2 is None:
            continue
        entry = {"task": task, "expansion": expansion,
                 "mv2_ms": mv2["latency_ms"], "cog_ms": cog["latency_ms"],
                 "ratio": cog["latency_ms"] / mv2["latency_ms"]}
        if "latency_fused_ms" in cog and "latency_fused_ms" in mv2:
            entry.update(mv2_fused_ms=mv2["latency_fused_ms"], cog_fused_ms=cog["latency_fused_ms"],
                         ratio_fused=cog["latency_fused_ms"] / mv2["latency_fused_ms"])
        ratios.append(entry)
    return ratios


# --------------------------------------------------------------------------- printing
COLUMNS = ("task", "backbone", "image_size", "params", "weights_kb", "macs", "flops", "pw_mac",
           "latency_ms", "macs_fused", "pw_mac_fused", "latency_fused_ms")
HEADERS = {
    "image_size": "px", "params": "params", "weights_kb": "weights KB (fp32)",
    "macs": "MMACs", "flops": "MFLOPs (=2xMACs)", "pw_mac": "1x1 MAC (M elem.)",
    "latency_ms": "latency ms", "macs_fused": "fused MMACs",
    "pw_mac_fused": "fused 1x1 MAC (M elem.)", "latency_fused_ms": "fused latency ms",
}
MILLIONS = ("macs", "flops", "pw_mac", "macs_fused", "pw_mac_fused")
RATIO_COLUMNS = ("task", "expansion", "mv2_ms", "cog_ms", "ratio", "mv2_fused_ms", "cog_fused_ms",
                 "ratio_fused")
RATIO_HEADERS = {"expansion": "e", "mv2_ms": "MV2 ms", "cog_ms": "COG ms", "ratio": "COG/MV2",
                 "mv2_fused_ms": "MV2 fused ms", "cog_fused_ms": "COG fused ms",
                 "ratio_fused": "COG/MV2 fused"}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    present = [c for c in COLUMNS if any(c in row for row in rows)]
    shown = [{**row, **{c: row[c] / 1e6 for c in MILLIONS if c in row}} for row in rows]
    formats = {"weights_kb": ",.1f", **{c: ",.1f" for c in MILLIONS},
               "latency_ms": ".2f", "latency_fused_ms": ".2f", "image_size": "d"}
    return markdown_table(shown, present, HEADERS, formats)


def format_ratios(ratios: Sequence[dict[str, Any]]) -> str:
    present = [c for c in RATIO_COLUMNS if any(c in r for r in ratios)]
    formats = {c: ".2f" for c in present if c.endswith("_ms")}
    formats.update(ratio=".3f", ratio_fused=".3f", expansion="d")
    return markdown_table(ratios, present, RATIO_HEADERS, formats)


# --------------------------------------------------------------------------- command line
def _task_setting(task: str) -> TaskSetting:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return TASKS[task]


def _names(text: str, valid: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {unknown or text!r}; choose a comma-separated list of: {', '.join(valid)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.complexity",
        description="Parameters, MACs, 1x1-conv memory access cost and CPU latency per task and backbone.")
    parser.add_argument("--tasks", type=lambda s: _names(s, list(TASKS), "task"), default=list(TASKS),
                        help=f"comma-separated, default all: {','.join(TASKS)}")
    parser.add_argument("--backbones", type=lambda s: _names(s, list_backbones(), "backbone"),
                        default=list_backbones(), help="comma-separated registry names, default all")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per model (median kept)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per model first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (1 on a machine shared with other jobs)")
    parser.add_argument("--csv", default=None, help="write the table to this CSV file")
    parser.add_argument("--no-latency", action="store_true", help="structural columns only")
    parser.add_argument("--fused", action="store_true",
                        help="also time each model after backbones.fuse_for_inference")
    parser.add_argument("--cog-impl", default=None, choices=("concat", "roll", "dense"),
                        help="COG implementation for unfused latency (default: the model's, 'auto')")
    parser.add_argument("--width-mult", type=float, default=1.0,
                        help="backbone width multiplier (1.0 = the thesis models)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.width_mult <= 0:
        parser.error("--width-mult must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    rows = complexity_table(
        args.tasks, args.backbones, latency=not args.no_latency, fused=args.fused,
        repeats=args.repeats, warmup=args.warmup, width_mult=args.width_mult,
        latency_cog_impl=args.cog_impl, log=log,
    )
    print(f"\n{machine_description()}")
    for task in args.tasks:
        print(f"- {task}: {TASKS[task].description}" + (
            f", width_mult {args.width_mult}" if args.width_mult != 1.0 else ""))
    print("MACs/FLOPs: conv + matmul at batch 1 (FlopCounterMode; FLOPs = 2 x MACs). "
          "1x1 MAC: ShuffleNetV2 memory access cost of the 1x1 convs, "
          "h*w*(c_in+c_out) + c_in*c_out/g; COG: h*w*(3*k*c_in + c_out) + k*c_in*c_out/g, "
          "k = 1 + overlap (concat copy included).")
    if not args.no_latency:
        impl = args.cog_impl or "model default (auto)"
        print(f"Latency: batch 1, eval, inference_mode, {args.warmup} warm-up + median of "
              f"{args.repeats} interleaved runs; unfused COG impl: {impl}.")
    print()
    print(format_table(rows))
    ratios = latency_ratios(rows)
    if ratios:
        print("\nCOG / MobileNetV2 latency ratio per expansion factor (same run, interleaved):\n")
        print(format_ratios(ratios))
    if args.csv:
        path = write_csv(args.csv, rows, [c for c in COLUMNS if any(c in r for r in rows)])
        print(f"\nwritten: {path}")
    return rows


if __name__ == "__main__":
    from tasks.runtime import exit_on_user_error

    exit_on_user_error(main)()  # bad input: one line, exit status 2
