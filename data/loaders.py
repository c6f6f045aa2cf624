"""DataLoader construction shared by the datamodules.

Reproducibility: the training order and every sample's augmentation follow from the run's
seed, the epoch and the sample index only, never from process-global random state or from
which worker process loads the sample. So the same seed gives the same batches with any
``num_workers`` (0 included), and a run resumed at an epoch boundary sees exactly the batches
the uninterrupted run would have seen.

- ``EpochShuffleSampler`` (a ``DistributedSampler``; one replica outside DDP) draws the order
  from ``seed + epoch`` (Lightning calls ``set_epoch`` every epoch) and hands each index out
  together with its epoch.
- ``SeededAugmentation`` wraps the dataset: before loading sample ``i`` of epoch ``e`` it points
  the albumentations pipeline at generators seeded from ``(seed, e, i)``.
- The DataLoader gets its own seeded ``generator``, so creating an iterator does not consume the
  global torch RNG (what remains of it, e.g. dropout, is reseeded per epoch by
  ``cogsuite.reproducibility.EpochSeedCallback``).

Evaluation under DDP must see every sample exactly once. Lightning's default distributed
sampler pads the dataset by repeating samples so every rank gets the same count, which would
count some samples twice in the metrics; evaluation loaders therefore use Lightning's
``UnrepeatedDistributedSampler`` (uneven shards, no padding) whenever a process group is up.
Metric states are synced once per epoch by torchmetrics, so uneven shards are safe as long as
evaluation steps do no per-step collectives (no ``sync_dist=True`` on step-level logs).
"""
from __future__ import annotations

import itertools
import logging
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, default_collate, get_worker_info

from data.errors import ImageDecodeError
from errors import DataError, user_message

log = logging.getLogger("data")


def run_seed() -> int:
    """The seed of this run: what ``seed_everything`` recorded (PL_GLOBAL_SEED), else 0."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def _transforms(dataset: Dataset) -> list[Any]:
    """The albumentations pipelines of ``dataset`` (of every part of a ConcatDataset)."""
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    return [t for t in (getattr(part, "transform", None) for part in parts)
            if hasattr(t, "set_random_state")]


def seed_augmentation_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Lightning's worker seeding, and a per-worker reseed of the
    albumentations pipelines of the worker's dataset.

    Samples loaded through ``train_loader`` are reseeded per sample anyway (``SeededAugmentation``);
    this keeps workers apart for datasets used with a plain DataLoader.
    """
    if os.environ.get("PL_SEED_WORKERS") == "1":  # seed_everything(workers=True) was called
        pl_worker_init_function(worker_id)
    info = get_worker_info()
    dataset = info.dataset if info is not None else None
    if isinstance(dataset, SeededAugmentation):
        return
    seed = torch.initial_seed() % 2**32
    for transform in _transforms(dataset) if dataset is not None else []:
        transform.set_random_seed(seed)


class EpochShuffleSampler(DistributedSampler):
    """Shuffles with ``seed + epoch`` and yields ``(index, epoch)`` pairs for ``SeededAugmentation``.

    A ``DistributedSampler`` so that Lightning keeps it under DDP (it shards the order over the
    processes) instead of replacing it; outside DDP it is one replica holding everything.
    """

    def __init__(self, dataset: Dataset, seed: int, drop_last: bool = False) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(dataset, num_replicas=dist.get_world_size() if distributed else 1,
                         rank=dist.get_rank() if distributed else 0, shuffle=True, seed=seed,
                         drop_last=drop_last)
        self._skip = 0

    def skip_next(self, samples: int) -> None:
        """The next pass starts after its first ``samples`` indices (a mid-epoch resume:
        ``cogsuite.reproducibility``); passes after it are whole again."""
        self._skip = int(samples)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip, self._skip = self.epoch, self._skip, 0
        indices = itertools.islice(super().__iter__(), skip, None)
        return ((index, epoch) for index in indices)


class _IteratorOnFirstNext:
    """Creates the DataLoader iterator at the first ``next()``, not at ``iter()``.

    Lightning calls ``iter(train_loader)`` while setting up (to estimate the schedule length),
    before it restores a checkpoint's epoch and calls ``set_epoch``; with worker processes the
    iterator immediately draws and prefetches indices, so a resumed run's first epoch would use
    epoch 0's order. Deferring the creation to the first batch lets ``set_epoch`` come first.
    """

    def __init__(self, loader: DataLoader) -> None:
        self._loader = loader
        self._iterator: Iterator[Any] | None = None

    def __iter__(self) -> "_IteratorOnFirstNext":
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = DataLoader.__iter__(self._loader)
        return next(self._iterator)

    def __len__(self) -> int:
        return len(self._loader)

    def __getstate__(self) -> dict[str, Any]:
        return {"_loader": self._loader, "_iterator": None}  # live worker iterators do not pickle


class EpochDataLoader(DataLoader):
    """The training DataLoader: its iterator starts when the first batch is asked for."""

    def __iter__(self) -> _IteratorOnFirstNext:  # type: ignore[override]
        return _IteratorOnFirstNext(self)


class SeededAugmentation(Dataset):
    """``dataset[index]`` with the augmentation random state derived from (seed, epoch, index).

    Keys are ``(index, epoch)`` pairs from ``EpochShuffleSampler``; a plain index means epoch 0.
    One numpy and one Python generator are shared by every transform of the pipeline (as
    albumentations' own Compose does), so the transforms draw different numbers.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.transforms = _transforms(dataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        if self.transforms:
            sequence = np.random.SeedSequence([self.seed % 2**63, int(epoch), int(index)])
            numpy_rng = np.random.default_rng(sequence)
            python_rng = random.Random(int(sequence.generate_state(2, np.uint64)[1]))
            for transform in self.transforms:
                transform.set_random_state(numpy_rng, python_rng)
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        # Attributes of the wrapped dataset (class names, samples) stay reachable from the loader.
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class SkipUnreadable(Dataset):
    """``dataset[key]``, or None for a sample whose file became unreadable after the data check
    (same size and modification time, so the cached check still vouched for it), when the user
    asked to skip bad files (``data.skip_bad_files=true``). Each one is logged with its path and
    a count; :func:`dropping_skipped` leaves the Nones out of the batch. Without the option such
    a file stops the run with one line naming it (``errors.user_message``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.skipped = 0  # in this (worker) process

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.dataset[key]
        except (ImageDecodeError, FileNotFoundError) as error:
            self.skipped += 1
            log.warning("skipped a sample (data.skip_bad_files=true; %d in this loader process so far): %s",
                        self.skipped, user_message(error) if isinstance(error, ImageDecodeError) else error)
            return None

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def dropping_skipped(collate_fn: Callable | None) -> Callable:
    """``collate_fn`` (default: torch's) over the samples that are not None."""
    collate = collate_fn or default_collate

    def collate_present(samples: list[Any]) -> Any:
        present = [sample for sample in samples if sample is not None]
        if not present:
            raise DataError(f"all {len(samples)} samples of a batch had become unreadable after the data "
                            "check (see the warnings above); restore the dataset files or rerun to check them")
        return collate(present)

    return collate_present


def _skipping(dataset: Dataset, collate_fn: Callable | None, skip_unreadable: bool) -> tuple[Dataset, Callable | None]:
    if not skip_unreadable:
        return dataset, collate_fn
    return SkipUnreadable(dataset), dropping_skipped(collate_fn)


def _generator(seed: int) -> torch.Generator:
    """A DataLoader generator: iterator creation then draws from it, not from the global RNG."""
    return torch.Generator().manual_seed(seed)


def train_loader(dataset: Dataset, batch_size: int, num_workers: int,
                 collate_fn: Callable | None = None, pin_memory: bool = True,
                 persistent_workers: bool = True, drop_last: bool = True,
                 seed: int | None = None, skip_unreadable: bool = False) -> DataLoader:
    """Shuffled training batches; order and augmentation follow from ``seed`` (default: the
    run's seed), the epoch and the sample index only. ``skip_unreadable``: see ``SkipUnreadable``."""
    seed = run_seed() if seed is None else int(seed)
    served, collate_fn = _skipping(SeededAugmentation(dataset, seed), collate_fn, skip_unreadable)
    return EpochDataLoader(
        served, batch_size=batch_size,
        sampler=EpochShuffleSampler(dataset, seed), num_workers=num_workers,
        collate_fn=collate_fn, pin_memory=pin_memory, drop_last=drop_last,
        persistent_workers=persistent_workers and num_workers > 0,
        worker_init_fn=seed_augmentation_worker, generator=_generator(seed),
    )


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int,
                collate_fn: Callable | None = None, pin_memory: bool = True,
                persistent_workers: bool = True, skip_unreadable: bool = False) -> DataLoader:
    sampler: Any = None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
    served, collate_fn = _skipping(dataset, collate_fn, skip_unreadable)
    return DataLoader(
        served, batch_size=batch_size, shuffle=False, sampler=sampler,
        num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        generator=_generator(run_seed()),
    )



def split_loader(dataset: Dataset, train: bool, batch_size: int, num_workers: int,
                 pin_memory: bool = True, persistent_workers: bool = True,
                 skip_unreadable: bool = False, collate_fn: Callable | None = None) -> DataLoader:
    """``train_loader`` or ``eval_loader`` for a split of any datamodule. A last training batch of
    one sample breaks BatchNorm (the classifier's, ASPP's image pooling, SSD's 1x1 extra), so it
    is dropped whenever the split holds more than a batch."""
    options = {"batch_size": batch_size, "num_workers": num_workers, "collate_fn": collate_fn,
               "pin_memory": pin_memory and torch.cuda.is_available(),
               "persistent_workers": persistent_workers, "skip_unreadable": skip_unreadable}
    if train:
        return train_loader(dataset, drop_last=len(dataset) > batch_size, **options)
    return eval_loader(dataset, **options)
