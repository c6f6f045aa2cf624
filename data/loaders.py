"""DataLoader construction shared by the datamodules.

Evaluation under DDP must see every sample exactly once. Lightning's default distributed
sampler pads the dataset by repeating samples so every rank gets the same count, which would
count some samples twice in the metrics; evaluation loaders therefore use Lightning's
``UnrepeatedDistributedSampler`` (uneven shards, no padding) whenever a process group is up.
Metric states are synced once per epoch by torchmetrics, so uneven shards are safe as long as
evaluation steps do no per-step collectives (no ``sync_dist=True`` on step-level logs).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset


def train_loader(dataset: Dataset, batch_size: int, num_workers: int,
                 collate_fn: Callable | None = None, pin_memory: bool = True,
                 persistent_workers: bool = True, drop_last: bool = True) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
        collate_fn=collate_fn, pin_memory=pin_memory, drop_last=drop_last,
        persistent_workers=persistent_workers and num_workers > 0,
    )


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int,
                collate_fn: Callable | None = None, pin_memory: bool = True,
                persistent_workers: bool = True) -> DataLoader:
    sampler: Any = None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, sampler=sampler,
        num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
    )
