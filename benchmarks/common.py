"""Shared benchmark helpers: latency timing, markdown tables, CSV files, a machine description."""
from __future__ import annotations

import csv
import os
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from errors import ConfigError

Row = Mapping[str, Any]


def _synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_latency_ms(
    fn: Callable[[], Any], repeats: int = 10, warmup: int = 3,
    device: torch.device | str | None = None,
) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    The median, not the mean: on a shared machine a few runs are slowed by other processes.
    """
    return statistics.median(sample_latencies_ms({"fn": fn}, repeats, warmup, device)["fn"])


def sample_latencies_ms(
    fns: Mapping[str, Callable[[], Any]], repeats: int = 10, warmup: int = 3,
    device: torch.device | str | None = None,
) -> dict[str, list[float]]:
    """Times several callables interleaved: each round runs every one once, so slow drift of the
    machine (other processes, clock changes) hits them alike. The order rotates every round so
    no callable always follows the same one (``benchmarks.timing.time_interleaved``). Returns the
    ``repeats`` samples (ms) per name."""
    from benchmarks.timing import time_interleaved  # the one timer (it imports this module)

    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    seconds = time_interleaved(fns, repeats, warmup, synchronize=lambda: _synchronize(device))
    return {name: [s * 1000.0 for s in samples] for name, samples in seconds.items()}


def median_latencies_ms(
    fns: Mapping[str, Callable[[], Any]], repeats: int = 10, warmup: int = 3,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Interleaved timing (``sample_latencies_ms``), reduced to the median per name."""
    return {name: statistics.median(times)
            for name, times in sample_latencies_ms(fns, repeats, warmup, device).items()}


def format_value(value: Any, fmt: str | None = None) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if fmt:
        return format(value, fmt)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(
    rows: Sequence[Row],
    columns: Sequence[str],
    headers: Mapping[str, str] | None = None,
    formats: Mapping[str, str] | None = None,
) -> str:
    """A markdown table of ``rows`` (mappings) showing ``columns``; ``headers`` renames columns,
    ``formats`` gives a format spec per column (e.g. ``",.0f"``). Numbers are right-aligned."""
    headers = headers or {}
    formats = formats or {}
    titles = [headers.get(c, c) for c in columns]
    cells = [[format_value(row.get(c), formats.get(c)) for c in columns] for row in rows]
    widths = [max([len(t)] + [len(r[i]) for r in cells]) for i, t in enumerate(titles)]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows)
               for c in columns]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(titles), rule, *(line(r) for r in cells)])


def write_csv(path: str | Path, rows: Sequence[Row], columns: Sequence[str] | None = None) -> Path:
    """Writes ``rows`` to ``path`` (parent folders created); columns default to the union of
    the rows' keys in first-seen order."""
    path = Path(path)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c) for c in columns})
    return path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else ``platform.processor()``)."""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.lower().startswith("model name"):
                return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description(device: torch.device | str = "cpu") -> str:
    """One line saying where numbers were measured: device, threads, library versions."""
    device = torch.device(device)
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        where = f"{cpu_model()}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads"
    return (f"{where}; torch {torch.__version__}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.machine()}")
