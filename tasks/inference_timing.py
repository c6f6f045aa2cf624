"""CPU milliseconds per image for inference at batch 1 (seed 003's "inference time of the model in
milliseconds per image per CPU").

The model is copied to the CPU in eval mode and run under ``torch.inference_mode`` on the first
``images`` test images one at a time (after ``warmup`` untimed ones). Each forward is measured by
the process's CPU time (user + system, ``cogsuite.timer``'s "cpu" clock), which counts the work itself and
survives a machine shared with other jobs better than wall time; the wall time is reported beside
it. Data loading and the task's input normalisation are not timed.
"""
from __future__ import annotations

import copy
import statistics
from typing import Any

import torch
from torch import nn

from cogsuite.timer import Stopwatch


def cpu_ms_per_image(model: nn.Module, dataset: Any, images: int = 100, warmup: int = 5) -> dict[str, float]:
    """``{"cpu_ms_per_image": median CPU ms, "wall_ms_per_image": median wall ms, "images": n}``
    over the first ``images`` samples of ``dataset`` (``(image, label)`` pairs)."""
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    cpu_model = copy.deepcopy(model).to("cpu").eval()
    watch = Stopwatch(("cpu", "wall"))
    count = min(images, len(dataset))
    cpu, wall = [], []

    def image(i: int) -> torch.Tensor:
        # Loaders yield uint8 images; a task normalises them after the batch transfer (not timed).
        x = dataset[i][0].unsqueeze(0)
        prepare = getattr(cpu_model, "on_after_batch_transfer", None)
        return prepare((x, torch.zeros(1, dtype=torch.long)), 0)[0] if prepare is not None else x

    with torch.inference_mode():
        for i in range(min(warmup, len(dataset))):
            cpu_model(image(i))
        for i in range(count):
            x = image(i)
            start = watch.read()
            cpu_model(x)
            cpu_ms, wall_ms = watch.elapsed_ms(start, watch.read())
            cpu.append(cpu_ms)
            wall.append(wall_ms)
    return {"cpu_ms_per_image": statistics.median(cpu), "wall_ms_per_image": statistics.median(wall),
            "images": count, "threads": torch.get_num_threads()}
