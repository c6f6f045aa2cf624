"""Throughput mode 2 (``--data``): the data pipeline alone (decode + augmentation, one process)."""
from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.task_steps import Size
from benchmarks.throughput_models import ModelResult
from benchmarks.timing import clock_reader, spread_percent, table, time_interleaved


def synthetic_train_dataset(task: str, root: Path, image_size: int, source_size: int, count: int):
    """The task's training dataset (real reader + training transform) on a synthetic set of
    ``count`` images of about ``source_size`` px, written with data/synthetic/'s writers."""
    from data.synthetic_datamodule import synthetic_datamodule
    from tasks.registry import get_task

    spec, classes = get_task(task), 8
    generator = spec.synthetic_bench_generator(count, source_size, classes)
    num_classes = classes + int(spec.background_class)
    datamodule = synthetic_datamodule(task, root, batch_size=2, num_workers=0, image_size=image_size,
                                      num_classes=num_classes, generator=generator)
    datamodule.setup("fit")
    return datamodule.train_dataloader().dataset


def benchmark_data(task: str, root: Path, image_size: int, source_size: int, count: int,
                   repeats: int, clock: str = "wall") -> list[float]:
    """Images/s of ``dataset[i]`` (read + decode + augment + to tensor), one pass per repeat;
    ``clock="cpu"`` divides by this process's CPU seconds instead."""
    dataset = synthetic_train_dataset(task, root, image_size, source_size, count)
    n = min(count, len(dataset))
    for i in range(min(3, n)):  # warm-up: imports, first-call caches (a few samples, not a pass)
        dataset[i]

    def one_pass() -> None:
        for i in range(n):
            dataset[i]

    seconds = time_interleaved({"pass": one_pass}, repeats, warmup=0, read=clock_reader(clock))["pass"]
    return [n / s for s in seconds]


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
