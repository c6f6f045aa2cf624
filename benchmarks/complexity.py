"""Model complexity of every backbone in every task: parameters, MACs, 1x1-conv memory access
cost and CPU latency, optionally before and after inference fusion.

    python -m benchmarks.complexity                       # all tasks and backbones
    python -m benchmarks.complexity --fused --csv complexity.csv
    python -m benchmarks.complexity --tasks classification --backbones mv2_e2,cog_e2 --no-latency
    python -m benchmarks.complexity --tasks classification --backbones mv2_e2 \
        --pointwise dense group:groups=4 group_shuffle:groups=4 cog:overlap=2 kgroup
    python -m benchmarks.complexity --backbones cog_e2 --set expand_first_block=false pointwise_at=[expand,project]
    python -m benchmarks.complexity --tasks classification --backbones mv2_e6 --num-classes 10 \
        --image-size 32 --set width_mult=0.9 cut_after_block=12 last_channels=1000 last_bias=true

Models: classifier at 224 px with 1000 classes (the thesis' Table 5.2 setting), SSD-Lite at
300 px with 20 object classes, DeepLabv3 at 480 px, output stride 16, 21 classes.

Columns:
- params / weights KB: trainable parameters, and their fp32 size (4 bytes each / 1024).
- Keras total: params + BatchNorm moving means and variances, Keras' "Total params" (seed 003).
- model KiB (C classes): the thesis' "Model size (KB)" (Tables 5.1, 5.2): the size of
  ``torch.save(state_dict)`` in fp32 -- parameters, BatchNorm running statistics and counters,
  and the file's structure -- of the classifier with C classes, / 1024 (``--classes``, default 5, 101, 257: Flowers, Caltech-101,
  Caltech-256). Classification rows only.
- MACs / FLOPs: multiply-accumulates of convolutions and matrix products at batch 1, counted by
  ``torch.utils.flop_counter.FlopCounterMode``; FLOPs = 2 x MACs (its convention). Pooling,
  interpolation, activations and additions are not counted. Pointwise layers run their
  ``reference_impl`` while counting (COG: the grouped conv it is, not the block-sparse dense conv
  some implementations run).
- 1x1 MAC: memory access cost of all 1x1 convs (ShuffleNetV2's MAC), in tensor elements at
  batch 1: each pointwise layer counts its own (``PointwiseLayer.memory_access_cost``: COG
  includes its concat copy, a channel shuffle its copy), other 1x1 convs ``conv_memory_access_cost``.
- latency: median ms of the network's forward at batch 1 (eval mode, inference_mode), after
  warm-up; every model of a task is timed interleaved with the others (see
  ``benchmarks.common.sample_latencies_ms``). Detection is timed up to the raw head outputs
  (class logits, box offsets, priors): softmax + NMS cost depends on how many boxes pass the
  score threshold, which for untrained weights says nothing. On a machine shared with other
  jobs use ``--threads 1``: intra-op threads that wait for a busy core inflate multi-thread
  timings many times over.
- with ``--fused``: the same after ``backbones.fuse_for_inference`` (BatchNorm folded, every
  pointwise layer in its fused form: COG as one dense 1x1 conv), plus MACs and 1x1 MAC of the
  fused model.

Rows are labelled by backbone name, plus ``+pointwise`` and ``key=value`` settings when
``--pointwise`` / ``--set`` change them.
"""
from __future__ import annotations

import argparse
import io
import copy
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import yaml

from errors import ConfigError, exit_on_user_error
from backbones import backbone_overrides, fuse_for_inference, list_backbones, list_pointwise
from backbones.pointwise import (
    conv_memory_access_cost, copy_memory_access_cost, pointwise_spec, using_impl
)
from benchmarks.common import machine_description, markdown_table, median_latencies_ms, write_csv
from tasks.registry import TaskSpec, get_task, list_tasks


# Every registered task (tasks.registry): its TaskSpec builds the model (``build``) and gives the
# input size and the one-line description of the table.
TASKS = tuple(list_tasks())


# --------------------------------------------------------------------------- structure
def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def keras_total_parameters(model: nn.Module) -> int:
    """Keras' "Total params": the trainable parameters plus every BatchNorm's moving mean and
    variance (Keras counts them as non-trainable weights; PyTorch keeps them as buffers, and
    ``num_batches_tracked`` has no Keras twin). Seed 003's tables report this number."""
    stats = sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None)
    return count_parameters(model) + stats


def weights_kb(model: nn.Module) -> float:
    """Size of the trainable parameters stored as fp32, in KB (bytes / 1024)."""
    return count_parameters(model) * 4 / 1024


def _example(model: nn.Module, image_size: int) -> Tensor:
    param = next(model.parameters())
    return torch.randn(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)


def count_macs(model: nn.Module, example: Tensor) -> int:
    """Multiply-accumulates of one forward of ``example`` (FlopCounterMode's FLOPs / 2).

    Pointwise layers run their reference implementation while counting, so COG's MACs are
    those of its compact weight (the block-sparse dense form would count the zeros too).
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with using_impl(model, "reference"), torch.no_grad(), counter:
            model(example)
    finally:
        model.train(was_training)
    flops = counter.get_total_flops()
    return flops // 2


def saved_state_dict_kib(model: nn.Module) -> float:
    """KiB that ``torch.save(model.state_dict())`` takes in fp32: the weights, BatchNorm
    statistics and the file's own structure.

    This is what the thesis' "Model size (KB)" column measures: MobileNetV2 e2 / e6 with 5
    classes give 4,172 / 8,952 KiB here against its 4,180 / 8,960 (Table 5.1, Flowers).
    """
    state = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes / 1024


# --------------------------------------------------------------------------- memory access cost
def _is_pointwise_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)


def pointwise_memory_access(model: nn.Module, example: Tensor) -> int:
    """ShuffleNetV2 memory access cost of every 1x1 conv that runs in one forward of
    ``example``, per image, in elements: a module that knows its own cost (a ``PointwiseLayer``,
    a bare ``PointwiseConvOp``, a fused kgroup graph: ``memory_access_cost(h, w)``, e.g. COG's
    concat copy or kgroup's interleave and sum) counts itself and everything inside it; every
    other 1x1 ``nn.Conv2d`` ``conv_memory_access_cost`` and every other channel shuffle a copy
    (forward hooks read the actual sizes; batch left out). Linear layers are not counted; a layer that runs twice is counted twice."""
    total = 0
    layers, inside = [], set()
    for m in model.modules():  # parents come before their children
        if id(m) not in inside and callable(getattr(m, "memory_access_cost", None)):
            layers.append(m)
            inside.update(id(c) for c in m.modules() if c is not m)

    def layer_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += module.memory_access_cost(inputs[0].shape[2], inputs[0].shape[3])

    def conv_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        _, c_in, h, w = inputs[0].shape
        _, c_out, h_out, w_out = output.shape
        if (h_out, w_out) == (h, w):
            total += conv_memory_access_cost(c_in, c_out, h, w, module.groups)
        else:  # a strided 1x1 conv writes a smaller map than it reads
            total += h * w * c_in + h_out * w_out * c_out + c_in * c_out // module.groups

    def shuffle_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += copy_memory_access_cost(*output.shape[1:])

    handles = [m.register_forward_hook(layer_hook) for m in layers]
    handles += [m.register_forward_hook(conv_hook) for m in model.modules()
                if _is_pointwise_conv(m) and id(m) not in inside]
    # A channel shuffle left on its own (a fused group_shuffle layer) is a copy.
    handles += [m.register_forward_hook(shuffle_hook) for m in model.modules()
                if isinstance(m, nn.ChannelShuffle) and id(m) not in inside]
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
@dataclass(frozen=True)
class ModelChoice:
    """One backbone to measure: a registry name plus overrides (pointwise layer, settings)."""

    backbone: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": self.backbone, **dict(self.overrides)}

    @property
    def label(self) -> str:
        parts = [self.backbone]
        for key, value in self.overrides:
            if key == "pointwise":
                options = ",".join(f"{k}={v}" for k, v in value.items() if k != "name")
                parts.append(f"+{value['name']}" + (f"({options})" if options else ""))
            else:
                parts.append(f" {key}={value}")
        return "".join(parts)


def build_model(task: str, choice: ModelChoice | str, width_mult: float = 1.0,
                num_classes: int | None = None) -> nn.Module:
    """The task's model with the chosen backbone (random weights), in eval mode."""
    choice = ModelChoice(choice) if isinstance(choice, str) else choice
    setting = _task_setting(task)
    spec = choice.spec if width_mult == 1.0 else {**choice.spec, "width_mult": width_mult}
    model = setting.build(spec) if num_classes is None else setting.build(spec, num_classes)
    return model.eval()


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
        "params_keras_total": keras_total_parameters(model),
        "weights_kb": weights_kb(model),
        "macs": macs,
        "flops": 2 * macs,
        "pw_mac": pointwise_memory_access(model, example),
    }


def complexity_table(
    tasks: Sequence[str],
    backbones: Sequence[ModelChoice | str],
    *,
    latency: bool = True,
    fused: bool = False,
    repeats: int = 10,
    warmup: int = 3,
    width_mult: float = 1.0,
    latency_impl: str | None = None,
    size_classes: Sequence[int] = (),
    num_classes: int | None = None,
    image_size: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> list[dict[str, Any]]:
    """One row per (task, backbone choice): structural columns, and latency columns when asked.

    All models of one task are timed interleaved (unfused and fused side by side), so machine
    drift affects COG and MobileNetV2 alike. ``size_classes``: classification rows also get the
    thesis' model size (``saved_state_dict_kib``) with that many classes, one column per count.
    ``num_classes`` / ``image_size`` replace the task's defaults (seed 003: 10 classes, 32 px).
    """
    rows: list[dict[str, Any]] = []
    choices = [ModelChoice(c) if isinstance(c, str) else c for c in backbones]
    for task in tasks:
        setting = _task_setting(task)
        models: dict[str, nn.Module] = {}
        task_rows: dict[str, dict[str, Any]] = {}
        for choice in choices:
            name = choice.label
            log(f"{task} · {name}: counting")
            try:
                model = build_model(task, choice, width_mult, num_classes=num_classes)
            except ConfigError as error:
                # A backbone the task cannot use (seed 001's stride-16 nets in SSD-Lite): no row.
                log(f"{task} · {name}: skipped: {error}")
                continue
            row = structural_row(task, name, model, image_size or setting.image_size)
            if setting.model_size_by_classes:
                for classes in size_classes:
                    sized = build_model(task, choice, width_mult, num_classes=classes)
                    row[f"model_kib_{classes}"] = saved_state_dict_kib(sized)
            if latency_impl is not None:
                model.backbone.set_pointwise_impl(latency_impl)
            models[name] = model
            if fused:
                fused_model = fuse_for_inference(model)
                counted = structural_row(task, name, fused_model, image_size or setting.image_size)
                row["macs_fused"] = counted["macs"]
                row["pw_mac_fused"] = counted["pw_mac"]
                models[f"{name}+fused"] = fused_model
            task_rows[name] = row
        if latency:
            log(f"{task}: timing {len(models)} models interleaved, {repeats} repeats")
            example = _example(next(iter(models.values())), image_size or setting.image_size)
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
COLUMNS = ("task", "backbone", "image_size", "params", "params_keras_total", "weights_kb", "macs", "flops", "pw_mac",
           "latency_ms", "macs_fused", "pw_mac_fused", "latency_fused_ms")
HEADERS = {
    "image_size": "px", "params": "params", "params_keras_total": "Keras total (+BN stats)", "weights_kb": "weights KB (fp32)",
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


def table_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """COLUMNS present in ``rows``, with the model-size columns after ``weights_kb``."""
    sizes = sorted({k for row in rows for k in row if k.startswith("model_kib_")},
                   key=lambda k: int(k.rsplit("_", 1)[1]))
    present = [c for c in COLUMNS if any(c in row for row in rows)]
    at = present.index("weights_kb") + 1 if "weights_kb" in present else len(present)
    return present[:at] + sizes + present[at:]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    present = table_columns(rows)
    shown = [{**row, **{c: row[c] / 1e6 for c in MILLIONS if c in row}} for row in rows]
    headers = {**HEADERS, **{c: f"model KiB ({c.rsplit('_', 1)[1]} cl.)" for c in present
                             if c.startswith("model_kib_")}}
    formats = {"weights_kb": ",.1f", **{c: ",.1f" for c in MILLIONS},
               **{c: ",.0f" for c in present if c.startswith("model_kib_")},
               "latency_ms": ".2f", "latency_fused_ms": ".2f", "image_size": "d"}
    return markdown_table(shown, present, headers, formats)


def format_ratios(ratios: Sequence[dict[str, Any]]) -> str:
    present = [c for c in RATIO_COLUMNS if any(c in r for r in ratios)]
    formats = {c: ".2f" for c in present if c.endswith("_ms")}
    formats.update(ratio=".3f", ratio_fused=".3f", expansion="d")
    return markdown_table(ratios, present, RATIO_HEADERS, formats)


# --------------------------------------------------------------------------- command line
def _task_setting(task: str) -> TaskSpec:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return get_task(task)


def _names(text: str, valid: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {unknown or text!r}; choose a comma-separated list of: {', '.join(valid)}")
    return names


def _pointwise_choice(text: str) -> dict[str, Any]:
    """``name[:key=value,key=value]`` -> a pointwise spec (values parsed as YAML scalars)."""
    name, _, options = text.partition(":")
    spec: dict[str, Any] = {"name": name.strip()}
    for item in filter(None, (o.strip() for o in options.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"pointwise option {item!r} is not key=value")
        spec[key.strip()] = yaml.safe_load(value)
    try:
        return pointwise_spec(spec)
    except (ConfigError, TypeError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set takes key=value, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def model_choices(backbones: Sequence[str], pointwise: Sequence[dict[str, Any]] | None,
                  settings: Sequence[tuple[str, Any]]) -> list[ModelChoice]:
    """Every backbone x every pointwise choice, with the ``--set`` overrides, checked against
    what each backbone accepts."""
    choices = []
    for backbone in backbones:
        valid = backbone_overrides(backbone)
        unknown = sorted({k for k, _ in settings} - set(valid))
        if unknown:
            raise ConfigError(f"backbone {backbone!r} does not accept {unknown}; valid: {valid}")
        for spec in pointwise or [None]:
            overrides = ([("pointwise", spec)] if spec else []) + list(settings)
            choices.append(ModelChoice(backbone, tuple(overrides)))
    return choices


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.complexity",
        description="Parameters, MACs, 1x1-conv memory access cost and CPU latency per task and backbone.")
    parser.add_argument("--tasks", type=lambda s: _names(s, list(TASKS), "task"), default=list(TASKS),
                        help=f"comma-separated, default all: {','.join(TASKS)}")
    parser.add_argument("--backbones", type=lambda s: _names(s, list_backbones(), "backbone"),
                        default=list_backbones(), help="comma-separated registry names, default all")
    parser.add_argument("--pointwise", type=_pointwise_choice, nargs="+", default=None,
                        metavar="NAME[:K=V,...]",
                        help=f"pointwise layer(s) for every backbone, e.g. 'group:groups=4' "
                             f"'cog:overlap=2' (one row each); registered: {', '.join(list_pointwise())}")
    parser.add_argument("--set", type=_setting, nargs="+", default=[], metavar="KEY=VALUE",
                        dest="settings",
                        help="backbone overrides for every row, e.g. expand_first_block=false "
                             "pointwise_at=[expand,project] (values are YAML)")
    parser.add_argument("--classes", type=lambda s: [int(c) for c in s.split(",") if c.strip()],
                        default=[5, 101, 257],
                        help="classification model-size columns for these class counts "
                             "(default 5,101,257: the thesis' Flowers, Caltech-101, Caltech-256)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of every model (default: the task's, 1000/20/21)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input size in px (default: the task's, 224/300/480; seed 003: 32)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per model (median kept)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per model first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (1 on a machine shared with other jobs)")
    parser.add_argument("--csv", default=None, help="write the table to this CSV file")
    parser.add_argument("--no-latency", action="store_true", help="structural columns only")
    parser.add_argument("--fused", action="store_true",
                        help="also time each model after backbones.fuse_for_inference")
    parser.add_argument("--impl", "--cog-impl", default=None, dest="impl",
                        choices=("concat", "roll", "dense", "reference"),
                        help="pointwise implementation for unfused latency, for layers that have "
                             "it (COG: concat|roll|dense; reference = each layer's own); default: "
                             "the model's ('auto')")
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


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    choices = model_choices(args.backbones, args.pointwise, args.settings)
    rows = complexity_table(
        args.tasks, choices, latency=not args.no_latency, fused=args.fused,
        repeats=args.repeats, warmup=args.warmup, width_mult=args.width_mult,
        latency_impl=args.impl, size_classes=args.classes, num_classes=args.num_classes,
        image_size=args.image_size, log=log,
    )
    print(f"\n{machine_description()}")
    for task in args.tasks:
        print(f"- {task}: {get_task(task).description}" + (
            f", width_mult {args.width_mult}" if args.width_mult != 1.0 else ""))
    print("MACs/FLOPs: conv + matmul at batch 1 (FlopCounterMode; FLOPs = 2 x MACs). "
          "1x1 MAC: ShuffleNetV2 memory access cost of the 1x1 convs, "
          "h*w*(c_in+c_out) + c_in*c_out/g per conv; COG: h*w*(3*k*c_in + c_out) + k*c_in*c_out/g, "
          "k = 1 + overlap (concat copy included); a channel shuffle adds 2*c*h*w. "
          "Model KiB: torch.save(state_dict) in fp32 incl. BN statistics, classifier with that many classes.")
    if not args.no_latency:
        impl = args.impl or "model default (auto)"
        print(f"Latency: batch 1, eval, inference_mode, {args.warmup} warm-up + median of "
              f"{args.repeats} interleaved runs; unfused COG impl: {impl}.")
    print()
    print(format_table(rows))
    ratios = latency_ratios(rows)
    if ratios:
        print("\nCOG / MobileNetV2 latency ratio per expansion factor (same run, interleaved):\n")
        print(format_ratios(ratios))
    if args.csv:
        path = write_csv(args.csv, rows, table_columns(rows))
        print(f"\nwritten: {path}")
    return rows


if __name__ == "__main__":
    main()
