"""Throughput mode 1: our task models vs torchvision's, training and inference images/s."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.task_steps import (
    REFERENCE_LABEL, Size, TASKS, build_task_model, make_batch, ours_entry, reference_entry
)
from benchmarks.timing import (
    Runtime, images_per_second, paired_ratio, spread_percent, table, time_runs
)
from tasks.registry import get_task


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
