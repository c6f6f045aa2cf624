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

import os

import torch
import torch.distributed as dist
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import ConcatDataset, DataLoader, Dataset, get_worker_info


def seed_augmentation_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker its own augmentation stream.

    Each worker starts from a copy of the parent's albumentations random state (Compose keeps
    its own generators, which Lightning's worker seeding does not reach); without a reseed every
    worker would draw the same augmentation sequence.
    """
    if os.environ.get("PL_SEED_WORKERS") == "1":  # seed_everything(workers=True) was called
        pl_worker_init_function(worker_id)
    info = get_worker_info()
    seed_augmentation(info.dataset if info is not None else None, torch.initial_seed())


def seed_augmentation(dataset: Dataset | None, seed: int) -> None:
    """Seed the albumentations pipelines of ``dataset`` (or of each part of a ConcatDataset)."""
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    for part in parts:
        transform = getattr(part, "transform", None)
        if hasattr(transform, "set_random_seed"):
            transform.set_random_seed(seed % 2**32)


def train_loader(dataset: Dataset, batch_size: int, num_workers: int,
                 collate_fn: Callable | None = None, pin_memory: bool = True,
                 persistent_workers: bool = True, drop_last: bool = True) -> DataLoader:
    if num_workers == 0:
        # Augmentation then runs in this process, where a Compose built without a seed draws
        # from OS entropy: tie it to the run's seed (seed_everything) so `seed=` decides it.
        seed_augmentation(dataset, torch.initial_seed())
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
        collate_fn=collate_fn, pin_memory=pin_memory, drop_last=drop_last,
        persistent_workers=persistent_workers and num_workers > 0,
        worker_init_fn=seed_augmentation_worker,
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
