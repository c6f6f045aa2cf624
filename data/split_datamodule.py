"""The loaders every classification datamodule serves in the same way.

A subclass's ``setup`` fills ``train_dataset``, ``val_dataset`` and ``test_dataset`` (the image
folders have no test set of their own and serve the held-out split twice); the loaders come from
``data.loaders.split_loader`` with the datamodule's batch size, workers and memory options.
"""
from __future__ import annotations

from torch.utils.data import DataLoader, Dataset

from data.checked_datamodule import CheckedDataModule
from data.loaders import split_loader


class SplitDataModule(CheckedDataModule):
    """Train / validation / test loaders over the datasets ``setup`` builds."""

    train_dataset: Dataset | None = None
    val_dataset: Dataset | None = None
    test_dataset: Dataset | None = None

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        assert dataset is not None, "setup() must build the datasets before the loaders"
        hp = self.hparams
        return split_loader(dataset, train, hp.batch_size, hp.num_workers, hp.pin_memory,
                            hp.persistent_workers, skip_unreadable=bool(hp.get("skip_bad_files", False)))

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_dataset, train=False)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        return self._loader(self.test_dataset, train=False)
