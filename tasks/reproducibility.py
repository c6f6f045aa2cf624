"""Process-global random state that follows from the seed and the epoch.

Data order and augmentation already follow from (seed, epoch, sample index) (``data.loaders``).
What is left drawing from the global generators is the model in training mode (dropout).
Reseeding them at the start of every training epoch from (seed, epoch, rank) makes an epoch's
random numbers independent of everything that happened before it: of ``num_workers`` (a
DataLoader iterator drawing its base seed), of evaluation, and of whether the run was resumed
from the previous epoch's checkpoint, which carries the weights, optimizer and schedule.
"""
from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

from data.loaders import run_seed


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed for (seed, epoch, rank), well mixed (SeedSequence), stable across versions."""
    state = np.random.SeedSequence([seed % 2**63, epoch, rank]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


class EpochSeedCallback(L.Callback):
    """Reseeds torch, numpy and Python's global generators at every training epoch start."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = epoch_seed(run_seed() if self.seed is None else self.seed, trainer.current_epoch,
                          trainer.global_rank)
        torch.manual_seed(seed)  # also seeds every CUDA device
        np.random.seed(seed % 2**32)
        random.seed(seed)
