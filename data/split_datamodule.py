"""The one datamodule base: checked splits (``CheckedDataModule``) served by the same loaders.

A subclass's ``setup`` fills ``train_dataset``, ``val_dataset`` and ``test_dataset`` (the image
folders have no test set of their own and serve the held-out split twice); the loaders come from
``data.loaders.split_loader`` with the datamodule's batch size, workers and memory options. What
differs between datamodules is a hook each: ``collate`` (the batch format: detection targets,
equal-size segmentation batches), ``eval_batch_size`` (whole-image segmentation evaluation runs
at batch 1), ``loader_options`` (where the settings are kept) and ``split_dataset`` (how a split
is built on first use).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader, Dataset

from data.checked_datamodule import CheckedDataModule
from data.loaders import split_loader

STAGE_OF_SPLIT = {"train": "fit", "val": "validate", "test": "test"}


class SplitDataModule(CheckedDataModule):
    """Train / validation / test loaders over the datasets ``setup`` builds."""

    train_dataset: Dataset | None = None
    val_dataset: Dataset | None = None
    test_dataset: Dataset | None = None

    def loader_options(self) -> dict[str, Any]:
        """``batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers`` (from the
        hyper-parameters; datamodules that keep them as attributes override this)."""
        hp = self.hparams
        return {"batch_size": hp.batch_size, "num_workers": hp.num_workers, "pin_memory": hp.pin_memory,
                "persistent_workers": hp.persistent_workers}

    def collate(self, train: bool) -> Callable | None:
        """How a split's samples become a batch (None: torch's ``default_collate``)."""
        return None

    def eval_batch_size(self) -> int:
        return int(self.loader_options()["batch_size"])

    def split_dataset(self, split: str) -> Dataset | None:
        """The dataset of ``split`` (train|val|test), set up for its stage."""
        self.setup(STAGE_OF_SPLIT[split])
        return getattr(self, f"{split}_dataset")

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        assert dataset is not None, "setup() must build the datasets before the loaders"
        options = self.loader_options()
        return split_loader(dataset, train, int(options["batch_size"]) if train else self.eval_batch_size(),
                            options["num_workers"], options["pin_memory"], options["persistent_workers"],
                            skip_unreadable=self.skips_bad_files, collate_fn=self.collate(train))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split_dataset("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split_dataset("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split_dataset("test"), train=False)
