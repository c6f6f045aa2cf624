"""Devices, the one clock-aware timer of interleaved runs (``cogsuite.timer``), and their statistics."""
from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.common import machine_description, markdown_table
# The one clock-aware timer, shared with tasks/ (re-exported here for the benchmarks).
from cogsuite.timer import CLOCKS, clock_reader, time_interleaved  # noqa: F401
from errors import ConfigError


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


def time_runs(steps: Mapping[str, Callable[[], Any]], runtime: Runtime, num_steps: int,
              repeats: int, warmup: int, clock: str | None = None) -> dict[str, list[float]]:
    """Seconds per run of ``num_steps`` calls, for every step function, interleaved
    (``time_interleaved``) on ``runtime``'s device. ``clock="cpu"`` reads this process's CPU
    time instead (CPU only): with one torch thread it counts the work done, not the time other
    processes held the cores.
    """
    if num_steps < 1 or repeats < 1 or warmup < 0:
        raise ConfigError(f"need steps >= 1, repeats >= 1, warmup >= 0; got {num_steps}, {repeats}, {warmup}")
    clock = clock or runtime.clock
    if clock not in CLOCKS or (clock == "cpu" and runtime.cuda):
        raise ConfigError(f"clock must be 'wall' or, on the CPU, 'cpu'; got {clock!r} on {runtime.device}")
    return time_interleaved(steps, repeats, warmup, num_steps, clock_reader(clock), runtime.synchronize)


def images_per_second(seconds: Sequence[float], batch_size: int, num_steps: int) -> list[float]:
    return [batch_size * num_steps / s for s in seconds]
