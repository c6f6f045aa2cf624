"""Process-global random state that follows from the seed and the epoch, and exact resumes.

Data order and augmentation already follow from (seed, epoch, sample index) (``data.loaders``).
What is left drawing from the global generators is the model in training mode (dropout,
stochastic depth). Reseeding them at the start of every training epoch from (seed, epoch, rank)
makes an epoch's random numbers independent of everything that happened before it: of
``num_workers`` (a DataLoader iterator drawing its base seed), of evaluation, and of whether
the run was resumed from the previous epoch's checkpoint, which carries the weights, optimizer
and schedule.

A resume from a mid-epoch checkpoint (``mid_epoch_step*.ckpt``) needs two more things, which
Lightning leaves to the DataLoader (it warns that a plain one "is not resumable"): the batches
already trained in that epoch must be skipped, not trained again, and the generators must
continue from where they were at the save. The callback stores the epoch, the number of
batches done and the generators' states in the checkpoint; on resume it tells the training
sampler (``data.loaders.EpochShuffleSampler``) to skip those batches and puts the states back,
so the rest of the epoch is the uninterrupted run's.
"""
from __future__ import annotations

import random
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import CombinedLoader

from data.loaders import EpochShuffleSampler, run_seed

# Lightning's warning for a mid-epoch resume with a DataLoader it cannot restore; this callback
# restores the position itself (skipping in the sampler), so the warning does not apply.
_NOT_RESUMABLE_WARNING = "You're resuming from a checkpoint that ended before the epoch ended"


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed for (seed, epoch, rank), well mixed (SeedSequence), stable across versions."""
    state = np.random.SeedSequence([seed % 2**63, epoch, rank]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


class EpochSeedCallback(L.Callback):
    """Reseeds torch, numpy and Python's global generators at every training epoch start; on a
    resume from a mid-epoch checkpoint, skips the batches already trained in that epoch and
    restores the generators' states instead."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._trainer: L.Trainer | None = None
        self._resume: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if not 0 < done < trainer.num_training_batches:  # an epoch boundary: nothing to restore
            return {}
        return {"epoch": trainer.current_epoch, "batches_done": done,
                "random_state": _random_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict) if state_dict.get("batches_done") else None
        if self._resume is not None:
            warnings.filterwarnings("ignore", message=_NOT_RESUMABLE_WARNING)

    # ------------------------------------------------------------------ resume, every epoch
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning does not call on_train_epoch_start for an epoch it resumes in the middle;
        # this runs before that epoch's first batch is drawn.
        resume, self._resume = self._resume, None
        if resume is not None and resume["epoch"] == trainer.current_epoch:
            if _skip_training_batches(trainer, int(resume["batches_done"])):
                _set_random_state(resume["random_state"])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = epoch_seed(run_seed() if self.seed is None else self.seed, trainer.current_epoch,
                          trainer.global_rank)
        torch.manual_seed(seed)  # also seeds every CUDA device
        np.random.seed(seed % 2**32)
        random.seed(seed)


def _skip_training_batches(trainer: L.Trainer, batches: int) -> bool:
    """Makes the next pass of every training sampler start after ``batches`` batches.

    False (and a warning) when a training loader has another sampler: then the epoch restarts
    from its first batch, as Lightning does for any non-resumable loader."""
    loaders = trainer.train_dataloader
    flat = CombinedLoader(loaders).flattened if loaders is not None else []
    samplers = [getattr(loader, "sampler", None) for loader in flat]
    if not flat or not all(isinstance(s, EpochShuffleSampler) for s in samplers):
        warnings.warn("resuming mid-epoch with a training loader that is not data.loaders."
                      "train_loader: the epoch restarts from its first batch", stacklevel=2)
        return False
    for loader, sampler in zip(flat, samplers, strict=True):
        sampler.skip_next(batches * loader.batch_size)
    return True


def _random_state() -> dict[str, Any]:
    # Only tensors and plain Python values: checkpoints are read with weights_only=True.
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss),
                  float(cached_gauss)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
