"""Training and inference throughput (images/s) of the task models against torchvision's own.

    python -m benchmarks.throughput                                   # all tasks, thesis sizes
    python -m benchmarks.throughput --quick                           # small sizes, a quick look
    python -m benchmarks.throughput --tasks classification --backbones mv2_e6,cog_e6 --csv out.csv
    python -m benchmarks.throughput --data --no-models                # data pipeline alone
    python -m benchmarks.throughput --cog-impls                       # COG implementations, whole models
    python -m benchmarks.throughput --loop                            # train.py epoch vs raw step

What one step is:
- training: the task's own ``training_step`` (loss, metric updates; ``self.log`` is a no-op
  without a Trainer), ``backward``, the task's optimizer (``tasks.base.build_optimizer`` with the
  task's ``optimizer`` settings: AdamW for classification/segmentation, SGD for detection; the
  per-iteration lr schedule is left out, it costs microseconds) and ``zero_grad``; model in train
  mode. The torchvision references use their own loss (cross-entropy; SSD's built-in MultiBox
  loss) with the same optimizer settings.
- inference: eval mode under ``torch.inference_mode``; for detection forward + post-processing
  (ours: ``DetectionTask.detect``, torchvision: its eval-mode forward, which includes NMS).

References: ``mobilenet_v2`` (the same architecture as ``mv2_e6``),
``ssdlite320_mobilenet_v3_large`` (resize set to our input size, so both see the same pixels) and
``deeplabv3_mobilenet_v3_large`` (aux_loss=False), all from scratch (no weights).

CPU runs fp32; CUDA runs bf16 autocast with channels_last and synchronises around every timed
run. Each run is ``--steps`` steps after ``--warmup`` steps; all models of a task alternate run
by run (the order rotating each repeat) so machine noise hits them alike. Tables give the median
over ``--repeats`` runs; a ratio is the median of the per-repeat ratios. On a shared CPU machine
use ``--threads 1 --clock cpu``: wall time there mostly measures the other processes, and
several intra-op threads stall each other when the cores are oversubscribed, while the CPU time
of a one-thread process counts the work itself.

Other modes:
- ``--data``: ``dataset[i]`` (read, decode, training augmentation) images/s in one process, on a
  synthetic set written by data/synthetic.py's writers, read by the task's real datamodule.
- ``--cog-impls``: whole-model training steps of cog_* backbones with every
  ``ChannelOverlapConv2d`` implementation, plus ``torch.compile`` of the fastest (given up after
  ``--compile-timeout`` seconds), checked against the ``auto`` table.
- ``--loop``: real ``train.py`` fits on ``data=synthetic`` (validation and test off) with a
  ``BatchTimer`` callback, alternating with raw-step measurements on the same model and batch
  (raw, fit, raw, fit, ..., raw); each fit is compared to the raw rate around it.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.apply_func import move_data_to_device
import torch
from torch import Tensor, nn

from benchmarks.common import machine_description, markdown_table, write_csv
from errors import ConfigError, exit_on_user_error
from tasks.registry import get_task, list_tasks

BACKBONES = ("mv2_e2", "cog_e2", "mv2_e6", "cog_e6")


@dataclass(frozen=True)
class Size:
    image_size: int
    batch_size: int


# Every task registered in tasks/ (tasks.registry) with the settings its TaskSpec gives: the
# benchmark models' classes (an ImageNet-size classifier, thesis Table 5.2; VOC for the rest),
# the thesis sizes and the --quick ones (CPU smoke runs), and its torchvision reference.
TASKS = tuple(list_tasks())
REFERENCE_LABEL = {task: get_task(task).reference_label for task in TASKS}
NUM_CLASSES = {task: get_task(task).num_classes for task in TASKS}
THESIS_SIZES = {task: Size(get_task(task).image_size, get_task(task).batch_size) for task in TASKS}
QUICK_SIZES = {task: Size(*get_task(task).quick_size) for task in TASKS}

# Training without a Trainer: the tasks' self.log calls are no-ops that warn; the warning is noise.
warnings.filterwarnings("ignore", message=r".*self\.log\(\)` but the `self\.trainer` reference.*")


# ----------------------------------------------------------------------------------------------
# Statistics of interleaved runs
# ----------------------------------------------------------------------------------------------
def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of run-by-run ratios of two interleaved series (noise in a run hits both)."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(f"paired_ratio needs two equally long non-empty series, got "
                         f"{len(numerator)} and {len(denominator)} values")
    if any(d <= 0 for d in denominator):
        raise ValueError("paired_ratio: the denominator series holds a non-positive value")
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def spread_percent(values: Sequence[float]) -> float:
    """(max - min) / median in percent: how noisy the repeats were."""
    return 100.0 * (max(values) - min(values)) / statistics.median(values)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table from positional rows (benchmarks.common.markdown_table takes mappings)."""
    return markdown_table([dict(zip(headers, row)) for row in rows], headers)


def describe_machine(device: torch.device) -> str:
    load = ""
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        load = f"; load average {os.getloadavg()[0]:.1f} at start"
    return machine_description(device) + load


# ----------------------------------------------------------------------------------------------
# Devices, precision and timing
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Runtime:
    """Where and how models run: CPU fp32, or CUDA with bf16 autocast and channels_last."""

    device: torch.device
    clock: str = "wall"  # "cpu": process CPU seconds instead of wall seconds (see time_runs)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def unit(self) -> str:
        return "img/s" if self.clock == "wall" else "img/CPU-s"

    @property
    def precision(self) -> str:
        return "bf16-autocast+channels_last" if self.cuda else "fp32"

    def autocast(self):
        if self.cuda:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def place_model(self, model: nn.Module) -> nn.Module:
        if self.cuda:
            return model.to(self.device, memory_format=torch.channels_last)
        return model.to(self.device)

    def place_images(self, images: Tensor) -> Tensor:
        images = images.to(self.device)
        return images.contiguous(memory_format=torch.channels_last) if self.cuda else images


def resolve_devices(spec: str, cpu_clock: str = "wall") -> list[Runtime]:
    """``auto`` = CPU, plus CUDA when present; else a comma list of cpu / cuda[:i]. CPU runtimes
    read ``cpu_clock``; CUDA always the wall clock."""
    names = ["cpu", "cuda"] if spec == "auto" else [s.strip() for s in spec.split(",") if s.strip()]
    runtimes = []
    for name in names:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            if spec == "auto":
                continue
            raise SystemExit(f"error: --device {name} asked for, but torch sees no CUDA device; "
                             "use --device cpu")
        if device.type not in ("cpu", "cuda"):
            raise SystemExit(f"error: --device takes cpu, cuda or auto, got {name!r}")
        runtimes.append(Runtime(device, cpu_clock if device.type == "cpu" else "wall"))
    return runtimes


def oversubscribed() -> bool:
    """More runnable processes than cores while torch runs several intra-op threads."""
    if not hasattr(os, "getloadavg") or torch.get_num_threads() < 2:
        return False
    return os.getloadavg()[0] > (os.cpu_count() or 1)


CLOCKS = ("wall", "cpu")


def time_runs(steps: Mapping[str, Callable[[], Any]], runtime: Runtime, num_steps: int,
              repeats: int, warmup: int, clock: str | None = None) -> dict[str, list[float]]:
    """Seconds per run of ``num_steps`` calls, for every step function, interleaved.

    Each function gets ``warmup`` untimed calls first; then every repeat times each function
    once, the order rotated by one per repeat so no function always runs right after another
    (as ``benchmarks.common.sample_latencies_ms``, which reads only the wall clock).
    ``clock="cpu"`` reads this process's CPU time instead (CPU only): with one torch thread it
    counts the work done, not the time other processes held the cores.
    """
    if num_steps < 1 or repeats < 1 or warmup < 0:
        raise ConfigError(f"need steps >= 1, repeats >= 1, warmup >= 0; got {num_steps}, {repeats}, {warmup}")
    clock = clock or runtime.clock
    if clock not in CLOCKS or (clock == "cpu" and runtime.cuda):
        raise ConfigError(f"clock must be 'wall' or, on the CPU, 'cpu'; got {clock!r} on {runtime.device}")
    read = time.perf_counter if clock == "wall" else time.process_time
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            runtime.synchronize()
            start = read()
            for _ in range(num_steps):
                steps[name]()
            runtime.synchronize()
            seconds[name].append(read() - start)
    return seconds


def images_per_second(seconds: Sequence[float], batch_size: int, num_steps: int) -> list[float]:
    return [batch_size * num_steps / s for s in seconds]


# ----------------------------------------------------------------------------------------------
# Models, batches and step functions per task
# ----------------------------------------------------------------------------------------------
def build_task_model(task: str, backbone: str | Mapping[str, Any],
                     num_classes: int | None = None) -> L.LightningModule:
    """Our LightningModule of ``task`` with its default (thesis) settings."""
    return get_task(task).build(backbone, num_classes)


def build_reference_model(task: str, image_size: int, num_classes: int | None = None) -> nn.Module:
    """torchvision's closest model for ``task``, from scratch."""
    spec = get_task(task)
    return spec.reference_model(image_size, spec.num_classes if num_classes is None else num_classes)


def make_batch(task: str, size: Size, runtime: Runtime, num_classes: int | None = None,
               seed: int = 0) -> tuple[Tensor, Any]:
    """A random training batch in the task's batch format (see ARCHITECTURE.md)."""
    spec = get_task(task)
    gen = torch.Generator().manual_seed(seed)
    images, target = spec.make_batch(size.batch_size, size.image_size,
                                     spec.num_classes if num_classes is None else num_classes, gen)
    return runtime.place_images(images), move_data_to_device(target, runtime.device)


def task_optimizer(model: L.LightningModule) -> torch.optim.Optimizer:
    """The optimizer ``configure_optimizers`` builds, without the lr schedule (needs a Trainer)."""
    from tasks.base import build_optimizer
    return build_optimizer(model, **dict(model.hparams.get("optimizer") or {}))


def ours_loss(model: L.LightningModule, batch: tuple[Tensor, Any]) -> Tensor:
    out = model.training_step(batch, 0)
    return out["loss"] if isinstance(out, Mapping) else out


def reference_loss(task: str, model: nn.Module, batch: tuple[Tensor, Any]) -> Tensor:
    return get_task(task).reference_loss(model, batch)


def ours_inference(task: str, model: L.LightningModule, images: Tensor) -> Any:
    return get_task(task).inference(model, images)


def reference_inference(task: str, model: nn.Module, images: Tensor) -> Any:
    return get_task(task).reference_inference(model, images)


def train_step_fn(model: nn.Module, loss_fn: Callable[[], Tensor], optimizer: torch.optim.Optimizer,
                  runtime: Runtime) -> Callable[[], None]:
    def step() -> None:
        if not model.training:  # the top flag only: a recursive .train() per step is not free
            model.train()
        with runtime.autocast():
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def inference_step_fn(model: nn.Module, infer: Callable[[], Any], runtime: Runtime) -> Callable[[], None]:
    def step() -> None:
        if model.training:
            model.eval()
        with torch.inference_mode(), runtime.autocast():
            infer()
    return step


@dataclass
class Entry:
    """One model under test with its training and inference step functions."""

    label: str
    train: Callable[[], None]
    infer: Callable[[], None]
    model: nn.Module = field(repr=False)


def ours_entry(task: str, backbone: str | Mapping[str, Any], batch: tuple[Tensor, Any],
               runtime: Runtime, label: str | None = None) -> Entry:
    model = runtime.place_model(build_task_model(task, backbone))
    optimizer = task_optimizer(model)
    name = label or (backbone if isinstance(backbone, str) else backbone["name"])
    return Entry(name, train_step_fn(model, lambda: ours_loss(model, batch), optimizer, runtime),
                 inference_step_fn(model, lambda: ours_inference(task, model, batch[0]), runtime), model)


def reference_entry(task: str, size: Size, batch: tuple[Tensor, Any], runtime: Runtime,
                    optimizer_settings: Mapping[str, Any]) -> Entry:
    from tasks.base import build_optimizer

    model = runtime.place_model(build_reference_model(task, size.image_size))
    optimizer = build_optimizer(model, **dict(optimizer_settings))
    return Entry(REFERENCE_LABEL[task],
                 train_step_fn(model, lambda: reference_loss(task, model, batch), optimizer, runtime),
                 inference_step_fn(model, lambda: reference_inference(task, model, batch[0]), runtime),
                 model)


# ----------------------------------------------------------------------------------------------
# Mode 1: models (ours vs torchvision), training and inference
# ----------------------------------------------------------------------------------------------
@dataclass
class ModelResult:
    task: str
    label: str
    runtime: Runtime
    size: Size
    train_ips: list[float]
    infer_ips: list[float]


def benchmark_task(task: str, backbones: Sequence[str], size: Size, runtime: Runtime,
                   steps: int, repeats: int, warmup: int) -> list[ModelResult]:
    torch.manual_seed(0)
    batch = make_batch(task, size, runtime)
    entries = [ours_entry(task, name, batch, runtime) for name in backbones]
    settings = dict(entries[0].model.hparams.get("optimizer") or {}) if entries else \
        dict(build_task_model(task, "mv2_e2").hparams.get("optimizer") or {})
    entries.append(reference_entry(task, size, batch, runtime, settings))
    results = {}
    for mode in ("train", "infer"):
        seconds = time_runs({e.label: getattr(e, mode) for e in entries}, runtime, steps, repeats, warmup)
        results[mode] = {k: images_per_second(v, size.batch_size, steps) for k, v in seconds.items()}
    return [ModelResult(task, e.label, runtime, size, results["train"][e.label], results["infer"][e.label])
            for e in entries]


def ratio_rows(results: Sequence[ModelResult]) -> list[list[Any]]:
    """Ratio rows: mv2_e6 / torchvision mobilenet_v2 (classification), every model / its
    torchvision reference, and COG / MV2 at the same expansion."""
    by_key = {(r.runtime.device.type, r.task, r.label): r for r in results}
    rows: list[list[Any]] = []

    def add(what: str, target: str, a: ModelResult, b: ModelResult) -> None:
        rows.append([a.runtime.device.type, a.task, what,
                     paired_ratio(a.train_ips, b.train_ips), paired_ratio(a.infer_ips, b.infer_ips), target])

    for (device, task, label), result in by_key.items():
        if label == REFERENCE_LABEL[task]:
            continue
        reference = by_key.get((device, task, REFERENCE_LABEL[task]))
        if reference is not None:
            same = label == get_task(task).reference_backbone if task in TASKS else False
            target = ">= 1.0 (same architecture)" if same else ""
            add(f"{label} / {reference.label}", target, result, reference)
    for (device, task, label), result in by_key.items():
        if label.startswith("cog_"):
            mv2 = by_key.get((device, task, "mv2_" + label[len("cog_"):]))
            if mv2 is not None:
                add(f"{label} / {mv2.label}", "train >= 1.0", result, mv2)
    return rows


def report_models(results: Sequence[ModelResult], steps: int) -> list[dict[str, Any]]:
    csv_rows = []
    groups: dict[tuple[str, str], list[ModelResult]] = {}
    for r in results:
        groups.setdefault((r.runtime.device.type, r.task), []).append(r)
    for (device, task), group in groups.items():
        size, runtime = group[0].size, group[0].runtime
        reference = next((r for r in group if r.label == REFERENCE_LABEL[task]), None)
        print(f"\n### {task} · {device} {runtime.precision} · {size.image_size} px, batch {size.batch_size}"
              f"{'' if runtime.clock == 'wall' else ' · CPU-time clock'}\n")
        rows = []
        for r in group:
            train, infer = statistics.median(r.train_ips), statistics.median(r.infer_ips)
            vs_train = paired_ratio(r.train_ips, reference.train_ips) if reference else math.nan
            vs_infer = paired_ratio(r.infer_ips, reference.infer_ips) if reference else math.nan
            rows.append([r.label, train, f"±{spread_percent(r.train_ips) / 2:.0f}%", infer,
                         f"±{spread_percent(r.infer_ips) / 2:.0f}%", vs_train, vs_infer])
            for mode, values in (("train", r.train_ips), ("infer", r.infer_ips)):
                csv_rows.append({
                    "kind": "model", "task": task, "model": r.label, "mode": mode, "device": device,
                    "precision": runtime.precision, "clock": runtime.clock, "image_size": size.image_size,
                    "batch_size": size.batch_size, "steps": steps, "repeats": len(values),
                    "images_per_s_median": statistics.median(values), "images_per_s_min": min(values),
                    "images_per_s_max": max(values),
                    "vs_reference": vs_train if mode == "train" else vs_infer,
                })
        print(table(["model", f"train {runtime.unit}", "train ±", f"infer {runtime.unit}", "infer ±",
                     "train ÷ tv", "infer ÷ tv"], rows))
    rows = ratio_rows(results)
    if rows:
        print("\n### ratios (median of per-repeat ratios)\n")
        print(table(["device", "task", "ratio", "train", "inference", "target"], rows))
    csv_rows += [{"kind": "ratio", "device": device, "task": task, "model": what,
                  "train_ratio": train, "infer_ratio": infer} for device, task, what, train, infer, _ in rows]
    return csv_rows


# ----------------------------------------------------------------------------------------------
# Mode 2: data pipeline alone (decode + augmentation, one process)
# ----------------------------------------------------------------------------------------------
def synthetic_train_dataset(task: str, root: Path, image_size: int, source_size: int, count: int):
    """The task's training dataset (real reader + training transform) on a synthetic set of
    ``count`` images of about ``source_size`` px, written with data/synthetic.py's writers."""
    from data.synthetic_datamodule import synthetic_datamodule

    classes = 8
    if task == "classification":
        generator = {"images_per_class": max(2, math.ceil(count / classes / 0.9)), "image_size": source_size}
        num_classes = classes
    elif task == "detection":
        generator = {"num_train": count, "num_test": 2, "image_size": source_size, "num_classes": classes}
        num_classes = classes
    else:
        generator = {"num_train": count, "num_val": 2, "image_size": source_size, "num_classes": classes}
        num_classes = classes + 1  # + background
    datamodule = synthetic_datamodule(task, root, batch_size=2, num_workers=0, image_size=image_size,
                                      num_classes=num_classes, generator=generator)
    datamodule.setup("fit")
    return datamodule.train_dataloader().dataset


def benchmark_data(task: str, root: Path, image_size: int, source_size: int, count: int,
                   repeats: int, clock: str = "wall") -> list[float]:
    """Images/s of ``dataset[i]`` (read + decode + augment + to tensor), one pass per repeat;
    ``clock="cpu"`` divides by this process's CPU seconds instead."""
    dataset = synthetic_train_dataset(task, root, image_size, source_size, count)
    read = time.perf_counter if clock == "wall" else time.process_time
    n = min(count, len(dataset))
    for i in range(min(3, n)):  # warm-up: imports, first-call caches
        dataset[i]
    rates = []
    for _ in range(repeats):
        start = read()
        for i in range(n):
            dataset[i]
        rates.append(n / (read() - start))
    return rates


def report_data(args: argparse.Namespace, sizes: Mapping[str, Size],
                results: Sequence[ModelResult]) -> list[dict[str, Any]]:
    import cv2

    rows, csv_rows = [], []
    with tempfile.TemporaryDirectory(prefix="throughput-data-") as tmp:
        root = Path(args.synthetic_dir) if args.synthetic_dir else Path(tmp)
        for task in args.tasks:
            size = sizes[task]
            rates = benchmark_data(task, root / f"data-{args.data_source_size}", size.image_size,
                                   args.data_source_size, args.data_images, args.repeats, args.clock)
            median = statistics.median(rates)
            # Data workers one training process needs to keep the fastest model measured fed.
            trains = [statistics.median(r.train_ips) for r in results if r.task == task]
            needed = f"{max(trains) / median:.2f}" if trains else "-"
            rows.append([task, f"{size.image_size}", median, f"±{spread_percent(rates) / 2:.0f}%", needed])
            csv_rows.append({"kind": "data", "task": task, "clock": args.clock, "image_size": size.image_size,
                             "source_size": args.data_source_size, "repeats": len(rates),
                             "images_per_s_median": median, "images_per_s_min": min(rates),
                             "images_per_s_max": max(rates)})
    print(f"\n### data pipeline alone · one process · synthetic images of ~{args.data_source_size} px, "
          f"training transform (cv2 threads: {cv2.getNumThreads()})\n")
    unit = "img/s" if args.clock == "wall" else "img/CPU-s"
    print(table(["task", "out px", f"{unit} per worker", "spread", "workers for fastest model"], rows))
    return csv_rows


# ----------------------------------------------------------------------------------------------
# Mode 3: COG implementations on whole models
# ----------------------------------------------------------------------------------------------
def pointwise_layers_with_impls(model: nn.Module) -> list[nn.Module]:
    """The pointwise layers of ``model`` that offer several implementations (COG)."""
    from backbones.pointwise import PointwiseLayer

    return [m for m in model.modules() if isinstance(m, PointwiseLayer) and m.impls]


def set_pointwise_impl(model: nn.Module, impl: str) -> int:
    """Set ``impl`` on every pointwise layer of ``model`` offering it; returns how many."""
    layers = [m for m in pointwise_layers_with_impls(model) if impl in m.impls]
    for layer in layers:
        layer.set_impl(impl)
    return len(layers)


def check_impls_agree(model: nn.Module, images: Tensor, impls: Sequence[str], runtime: Runtime) -> float:
    """Largest relative output difference between the implementations (eval mode, same weights)."""
    outputs = []
    model.eval()
    with torch.inference_mode(), runtime.autocast():
        for impl in impls:
            set_pointwise_impl(model, impl)
            out = model(images[:2])
            outputs.append((out[0] if isinstance(out, tuple) else out).float())
    scale = outputs[0].abs().max().clamp(min=1e-12)
    return max(float((o - outputs[0]).abs().max() / scale) for o in outputs[1:])


class CompileTimeout(Exception):
    """Compilation ran past --compile-timeout."""


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` or an exception in its cause/context chain is a ``kind``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise CompileTimeout in the main thread after ``seconds`` (POSIX SIGALRM; elsewhere no limit).

    torch.compile on CPU builds C++ kernels and can take many minutes on a small machine; the
    benchmark reports that instead of hanging.
    """
    import signal
    import threading

    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise CompileTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def benchmark_cog_impls(task: str, backbone: str, size: Size, runtime: Runtime, steps: int,
                        repeats: int, warmup: int, try_compile: bool,
                        compile_timeout: float = 900.0) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    batch = make_batch(task, size, runtime)
    model = runtime.place_model(build_task_model(task, backbone))
    layers = pointwise_layers_with_impls(model)
    if not layers:
        raise SystemExit(f"error: {backbone} has no pointwise layer with several implementations; "
                         "--cog-impls needs e.g. cog_* backbones")
    impls = tuple(layers[0].impls)
    auto = layers[0].resolved_impl(runtime.device) if layers[0].impl == "auto" else layers[0].impl
    difference = check_impls_agree(model, batch[0], impls, runtime)
    optimizer = task_optimizer(model)
    raw_step = train_step_fn(model, lambda: ours_loss(model, batch), optimizer, runtime)

    current = [None]

    def with_impl(impl: str) -> Callable[[], None]:
        def step() -> None:
            if current[0] != impl:  # switch once per timed run, not on every step
                set_pointwise_impl(model, impl)
                current[0] = impl
            raw_step()
        return step

    seconds = time_runs({impl: with_impl(impl) for impl in impls}, runtime, steps, repeats, warmup)
    ips = {k: images_per_second(v, size.batch_size, steps) for k, v in seconds.items()}
    best = max(ips, key=lambda k: statistics.median(ips[k]))
    rows = [{"impl": impl, "images_per_s": ips[impl], "vs_best_eager": paired_ratio(ips[impl], ips[best])}
            for impl in impls]

    compile_note = "not tried (--no-compile)"
    if try_compile:
        compiled = copy.deepcopy(model)
        set_pointwise_impl(compiled, best)
        compiled.compile()  # compiles __call__ in place: training_step's self(images) runs it
        compiled_optimizer = task_optimizer(compiled)
        compiled_step = train_step_fn(compiled, lambda: ours_loss(compiled, batch), compiled_optimizer,
                                      runtime)
        start = time.perf_counter()
        try:
            with time_limit(compile_timeout):
                compiled_step()
                runtime.synchronize()
        except Exception as exc:  # noqa: BLE001 - any compiler failure is a result to report
            if caused_by(exc, CompileTimeout):  # torch._dynamo may wrap it in its own error
                compile_note = (f"gave up: the first compiled training step (compilation) did not "
                                f"finish within {compile_timeout:.0f} s (--compile-timeout)")
            else:
                compile_note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        else:
            compile_seconds = time.perf_counter() - start
            seconds = time_runs({best: with_impl(best), "compile": compiled_step}, runtime, steps,
                                repeats, warmup)
            pair = {k: images_per_second(v, size.batch_size, steps) for k, v in seconds.items()}
            rows.append({"impl": f"torch.compile({best})", "images_per_s": pair["compile"],
                         "vs_best_eager": paired_ratio(pair["compile"], pair[best])})
            compile_note = f"first compiled step (compilation) took {compile_seconds:.0f} s"

    print(f"\n### COG implementations · {task} {backbone} · {runtime.device.type} {runtime.precision} · "
          f"{size.image_size} px, batch {size.batch_size} (training step)"
          f"{'' if runtime.clock == 'wall' else ' · CPU-time clock'}\n")
    print(table(["impl", f"train {runtime.unit}", "spread", "÷ best eager"],
                [[r["impl"], statistics.median(r["images_per_s"]),
                  f"±{spread_percent(r['images_per_s']) / 2:.0f}%", r["vs_best_eager"]] for r in rows]))
    print(f"\nfastest eager: {best}; `auto` on {runtime.device.type} selects: {auto}"
          + ("" if auto == best else "  <-- the auto table disagrees with this measurement"))
    print(f"largest relative output difference between impls: {difference:.2e}")
    print(f"torch.compile: {compile_note}")
    return [{"kind": "cog_impl", "task": task, "model": backbone, "mode": "train", "impl": r["impl"],
             "device": runtime.device.type, "precision": runtime.precision, "clock": runtime.clock,
             "image_size": size.image_size,
             "batch_size": size.batch_size, "steps": steps, "repeats": len(r["images_per_s"]),
             "images_per_s_median": statistics.median(r["images_per_s"]),
             "images_per_s_min": min(r["images_per_s"]), "images_per_s_max": max(r["images_per_s"]),
             "vs_best_eager": r["vs_best_eager"], "auto_impl": auto} for r in rows]


# ----------------------------------------------------------------------------------------------
# Mode 4: a real train.py run vs the raw step
# ----------------------------------------------------------------------------------------------
class BatchTimer(L.Callback):
    """Timestamps every training batch start/end and epoch start, on the wall clock and on the
    process CPU clock (``time.process_time``: all threads of this process, not the data workers);
    writes them as JSON at the end of training.

    Usable from a config: ``+callbacks.batch_timer._target_=benchmarks.throughput.BatchTimer``
    ``+callbacks.batch_timer.output=timing.json``. On CUDA it synchronises at every mark, which
    stops the host from queueing ahead across batches: the loop it measures is, if anything,
    slightly slower than an untimed one.
    """

    def __init__(self, output: str) -> None:
        self.output = output
        self.epochs: list[dict[str, Any]] = []

    @staticmethod
    def _marks(pl_module: L.LightningModule) -> tuple[float, float]:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter(), time.process_time()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        wall, cpu = self._marks(pl_module)
        self.epochs.append({"start": wall, "cpu_start": cpu, "batches": []})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        wall, cpu = self._marks(pl_module)
        self.epochs[-1]["batches"].append({"start": wall, "cpu_start": cpu, "images": int(batch[0].shape[0])})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        wall, cpu = self._marks(pl_module)
        self.epochs[-1]["batches"][-1].update(end=wall, cpu_end=cpu)

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.output).write_text(json.dumps({"epochs": self.epochs}))


@dataclass
class LoopTiming:
    images: int
    wall_seconds: float  # from the first timed batch start to the last batch end, per epoch
    step_seconds: float  # sum over timed batches of batch end - batch start
    gap_seconds: float  # wall - step: data fetch and everything between two batches

    @property
    def wall_ips(self) -> float:
        return self.images / self.wall_seconds

    @property
    def step_ips(self) -> float:
        return self.images / self.step_seconds


def summarise_loop(epochs: Sequence[Mapping[str, Any]], skip_first: int, clock: str = "wall") -> LoopTiming:
    """Steady throughput of the epochs: the first ``skip_first`` batches of the first epoch are
    warm-up; later epochs count from their epoch start (their first data fetch included).
    ``clock`` "wall" reads the ``start``/``end`` marks, "cpu" the ``cpu_start``/``cpu_end`` ones."""
    if clock not in ("wall", "cpu"):
        raise ConfigError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    begin, end = ("start", "end") if clock == "wall" else ("cpu_start", "cpu_end")
    images = wall = step = 0.0
    for number, epoch in enumerate(epochs):
        batches = [b for b in epoch["batches"] if end in b]
        if number == 0:
            batches = batches[skip_first:]
            start = batches[0][begin] if batches else None
        else:
            start = epoch[begin]
        if not batches:
            continue
        images += sum(b["images"] for b in batches)
        wall += batches[-1][end] - start
        step += sum(b[end] - b[begin] for b in batches)
    if images == 0:
        raise ConfigError(f"no timed batches: the epochs are not longer than the {skip_first} warm-up batches")
    return LoopTiming(int(images), wall, step, wall - step)


def compose_train_config(overrides: Sequence[str]):
    """``configs/train.yaml`` composed with ``overrides`` as train.py would (no Hydra run dir)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    config_dir = str(Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(version_base="1.3", config_dir=config_dir):
        return compose("train", overrides=list(overrides))


def loop_overrides(task: str, backbone: str, size: Size, steps_per_epoch: int, epochs: int,
                   synthetic_dir: Path, output_dir: Path, timer_output: Path, runtime: Runtime,
                   num_workers: int | None) -> list[str]:
    count = steps_per_epoch * size.batch_size
    if task == "classification":
        # The held-out 10 % of every class is not trained on; 8 classes in the synthetic set.
        generator = [f"synthetic.generator.images_per_class={math.ceil(count / 8 / 0.9) + 1}"]
    else:
        generator = [f"synthetic.generator.num_train={count}"]
    overrides = [
        f"task={task}", "data=synthetic", f"backbone={backbone}",
        f"paths.synthetic_dir={synthetic_dir}", f"paths.output_dir={output_dir}", f"paths.log_dir={output_dir}",
        f"batch_size={size.batch_size}", f"synthetic.image_size={size.image_size}", *generator,
        f"trainer.max_epochs={epochs}", "++trainer.limit_val_batches=0", "test=false",
        "++synthetic.warmup_epochs=0",  # lr warm-up (segmentation) must fit in a short run
        f"trainer.accelerator={'gpu' if runtime.cuda else 'cpu'}",
        "+callbacks.batch_timer._target_=benchmarks.throughput.BatchTimer",
        f"+callbacks.batch_timer.output={timer_output}",
    ]
    if num_workers is not None:
        overrides.append(f"num_workers={num_workers}")
    return overrides


def raw_step_for(cfg, runtime: Runtime, num_batches: int = 8) -> tuple[Callable[[], None], int]:
    """The raw training step on the model and real batches of ``cfg`` (as train.py builds them:
    same model settings, datamodule, batch and image size); returns it and the batch size.

    The step cycles over the first ``num_batches`` batches: training on one batch over and over
    memorises it, and the vanishing loss and gradients can turn into denormal floats, which are
    slow on CPUs and would make the raw step look slower than real training.
    """
    import itertools

    from hydra.utils import instantiate

    torch.manual_seed(0)
    datamodule = instantiate(cfg.data, num_workers=0)
    datamodule.setup("fit")
    batches = []
    for images, target in itertools.islice(datamodule.train_dataloader(), num_batches):
        if isinstance(target, Tensor):
            target = target.to(runtime.device)
        else:
            target = [{k: v.to(runtime.device) for k, v in t.items()} for t in target]
        batches.append((runtime.place_images(images), target))
    model = runtime.place_model(instantiate(cfg.model))
    cycle = itertools.cycle(batches)
    step = train_step_fn(model, lambda: ours_loss(model, next(cycle)), task_optimizer(model), runtime)
    return step, int(batches[0][0].shape[0])


def benchmark_loop(task: str, backbone: str, size: Size, runtime: Runtime, args) -> dict[str, Any]:
    """``--loop-repeats`` real train.py fits alternating with raw-step measurements
    (raw, fit, raw, fit, ..., raw); each fit is compared to the mean of the raw rates measured
    right before and after it, so a change of machine load hits both sides alike."""
    from omegaconf import open_dict

    from train import train

    fits: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="throughput-loop-") as tmp:
        tmp = Path(tmp)
        synthetic_dir = Path(args.synthetic_dir) if args.synthetic_dir else tmp / "synthetic"

        def config(number: int):
            cfg = compose_train_config(loop_overrides(
                task, backbone, size, args.loop_steps, args.loop_epochs, synthetic_dir,
                tmp / f"run{number}", tmp / f"batch_timing{number}.json", runtime, args.num_workers))
            with open_dict(cfg):
                cfg.trainer.enable_model_summary = False
            return cfg

        cfg = config(0)
        raw_step, batch_size = raw_step_for(cfg, runtime)

        def measure_raw() -> tuple[float, float]:
            """(median wall images/s, images per process-CPU second) of the raw step."""
            cpu = time.process_time()
            seconds = time_runs({"raw": raw_step}, runtime, args.steps, args.repeats, 0, clock="wall")["raw"]
            cpu = time.process_time() - cpu
            images = batch_size * args.steps * args.repeats
            return statistics.median(images_per_second(seconds, batch_size, args.steps)), images / cpu

        for _ in range(args.warmup):
            raw_step()
        raw, raw_cpu = zip(*[measure_raw()])
        raw, raw_cpu = list(raw), list(raw_cpu)
        for number in range(args.loop_repeats):
            cfg = config(number)
            start = time.perf_counter()
            train(cfg)
            fit_seconds = time.perf_counter() - start
            epochs = json.loads((tmp / f"batch_timing{number}.json").read_text())["epochs"]
            timing = summarise_loop(epochs, args.loop_skip)
            cpu_timing = summarise_loop(epochs, args.loop_skip, clock="cpu")
            wall_rate, cpu_rate = measure_raw()
            raw.append(wall_rate)
            raw_cpu.append(cpu_rate)
            around, around_cpu = (raw[-2] + raw[-1]) / 2, (raw_cpu[-2] + raw_cpu[-1]) / 2
            fits.append({"raw_around": around, "loop": timing.wall_ips, "step_only": timing.step_ips,
                         "ratio": timing.wall_ips / around, "step_only_ratio": timing.step_ips / around,
                         "cpu_ratio": cpu_timing.wall_ips / around_cpu,
                         "cpu_step_only_ratio": cpu_timing.step_ips / around_cpu,
                         "gap_share": timing.gap_seconds / timing.wall_seconds,
                         "images": timing.images, "fit_seconds": fit_seconds})

    ratio = statistics.median(f["ratio"] for f in fits)
    workers = int(cfg.num_workers)
    print(f"\n### train.py loop vs raw step · {task} {backbone} · {runtime.device.type} {runtime.precision} · "
          f"{size.image_size} px, batch {size.batch_size}, num_workers {workers}\n")
    print(table(
        ["fit", "raw step img/s (mean before/after)", "train.py epoch img/s", "epoch ÷ raw",
         "inside steps img/s", "steps ÷ raw", "between batches", "timed images"],
        [[k + 1, f["raw_around"], f["loop"], f["ratio"], f["step_only"], f["step_only_ratio"],
          f"{100 * f['gap_share']:.1f}%", f["images"]] for k, f in enumerate(fits)]))
    print(f"\nraw step img/s in order measured: {', '.join(f'{r:.2f}' for r in raw)}")
    print("process CPU time (this process's threads, not the data workers; robust to other load "
          "when torch runs one thread): train.py epoch ÷ raw = "
          + ", ".join(f"{f['cpu_ratio']:.3f}" for f in fits) + "; inside steps ÷ raw = "
          + ", ".join(f"{f['cpu_step_only_ratio']:.3f}" for f in fits))
    verdict = "meets" if ratio >= 0.8 else "MISSES"
    print(f"target train.py >= 0.8 x raw step: {verdict} (median ratio {ratio:.2f})")
    return {
        "kind": "loop", "task": task, "model": backbone, "device": runtime.device.type,
        "precision": runtime.precision, "image_size": size.image_size, "batch_size": size.batch_size,
        "num_workers": workers, "fits": len(fits), "loop_ratio": ratio,
        "step_only_ratio": statistics.median(f["step_only_ratio"] for f in fits),
        "cpu_time_ratio": statistics.median(f["cpu_ratio"] for f in fits),
        "cpu_time_step_only_ratio": statistics.median(f["cpu_step_only_ratio"] for f in fits),
        "gap_share": statistics.median(f["gap_share"] for f in fits),
        "raw_images_per_s": statistics.median(raw),
        "loop_images_per_s": statistics.median(f["loop"] for f in fits),
    }


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def _choices(value: str, valid: Sequence[str], what: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in valid]
    if unknown or not chosen:
        raise SystemExit(f"error: unknown {what} {unknown or value!r}; valid: {', '.join(valid)}")
    return chosen


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma list of %(default)s")
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="comma list (default %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (cpu, + cuda if present), cpu, cuda")
    parser.add_argument("--quick", action="store_true", help="small images and batches (CPU smoke run)")
    parser.add_argument("--batch-size", type=int, help="override every task's batch size")
    parser.add_argument("--image-size", type=int, help="override every task's image size")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed run (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default %(default)s)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="CPU timings: wall seconds (default) or this process's CPU seconds, "
                             "which on a shared machine with --threads 1 count work, not waiting")
    parser.add_argument("--csv", help="write all measurements to this CSV file")
    parser.add_argument("--no-models", action="store_true", help="skip the ours-vs-torchvision model timing")
    parser.add_argument("--data", action="store_true", help="also time the data pipeline alone")
    parser.add_argument("--data-images", type=int, default=48, help="images per data pass (default %(default)s)")
    parser.add_argument("--data-source-size", type=int, default=400,
                        help="side of the synthetic source images for --data (default %(default)s, ~VOC)")
    parser.add_argument("--cog-impls", action="store_true",
                        help="only: time whole-model training steps per ChannelOverlapConv2d impl")
    parser.add_argument("--no-compile", action="store_true", help="--cog-impls without torch.compile")
    parser.add_argument("--compile-timeout", type=float, default=900.0,
                        help="--cog-impls: give up compiling after this many seconds (default %(default)s)")
    parser.add_argument("--loop", action="store_true", help="only: train.py epoch vs raw step")
    parser.add_argument("--loop-repeats", type=int, default=3,
                        help="--loop: train.py fits, each between two raw-step measurements (default %(default)s)")
    parser.add_argument("--loop-epochs", type=int, default=1, help="--loop: epochs per fit (default %(default)s)")
    parser.add_argument("--loop-steps", type=int, default=20, help="training steps per epoch for --loop")
    parser.add_argument("--loop-skip", type=int, default=3, help="warm-up batches not counted in --loop")
    parser.add_argument("--num-workers", type=int, help="--loop: data workers (default: the config's)")
    parser.add_argument("--synthetic-dir", help="where --loop/--data write the synthetic set (default: temp)")
    args = parser.parse_args(argv)
    args.tasks = _choices(args.tasks, TASKS, "task")
    from backbones import list_backbones
    args.backbones = _choices(args.backbones, list_backbones(), "backbone")
    for name in ("steps", "repeats", "batch_size", "image_size", "loop_steps", "loop_epochs", "loop_repeats",
                 "data_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1, got {value}")
    return args


def task_size(task: str, args: argparse.Namespace) -> Size:
    base = (QUICK_SIZES if args.quick else THESIS_SIZES)[task]
    return Size(args.image_size or base.image_size, args.batch_size or base.batch_size)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runtimes = resolve_devices(args.device, args.clock)
    sizes = {task: task_size(task, args) for task in args.tasks}
    quick = " (--quick: reduced image and batch sizes, not the thesis settings)" if args.quick else ""
    print("# throughput" + quick)
    for runtime in runtimes:
        print(f"{runtime.device.type}: {describe_machine(runtime.device)}; {runtime.precision}")
        if runtime.cuda:
            torch.backends.cudnn.benchmark = True
    print(f"steps per run {args.steps}, repeats {args.repeats}, warm-up steps {args.warmup}")
    if oversubscribed():
        print("warning: the machine's load exceeds its cores; multi-threaded CPU timings collapse "
              "when threads wait on each other at every op (measured 10x slower on a loaded 2-core "
              "machine): prefer --threads 1 --clock cpu on a shared machine")
    if args.clock == "cpu" and torch.get_num_threads() > 1:
        print("note: --clock cpu with several torch threads also counts their spin-waiting; "
              "use --threads 1 for CPU-time numbers that mean work done")
    csv_rows: list[dict[str, Any]] = []

    if args.cog_impls:
        cog = [b for b in args.backbones if b.startswith("cog_")] or ["cog_e2", "cog_e6"]
        for runtime in runtimes:
            for task in args.tasks:
                for backbone in cog:
                    csv_rows += benchmark_cog_impls(task, backbone, sizes[task], runtime, args.steps,
                                                    args.repeats, args.warmup, not args.no_compile,
                                                    args.compile_timeout)
    elif args.loop:
        runtime = next((r for r in runtimes if r.cuda), runtimes[0])  # train.py's device: GPU if any
        for task in args.tasks:
            for backbone in args.backbones:
                csv_rows.append(benchmark_loop(task, backbone, sizes[task], runtime, args))
    else:
        results: list[ModelResult] = []
        if not args.no_models:
            for runtime in runtimes:
                for task in args.tasks:
                    print(f"... {task} on {runtime.device.type}", file=sys.stderr, flush=True)
                    results += benchmark_task(task, args.backbones, sizes[task], runtime,
                                              args.steps, args.repeats, args.warmup)
            csv_rows += report_models(results, args.steps)
        if args.data:
            csv_rows += report_data(args, sizes, results)
    if args.csv:
        write_csv(args.csv, csv_rows)
        print(f"\nwrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main)())  # bad input: one line, exit status 2
