"""`python train.py -m ... seed=1,2,3` gives independent runs: the seed decides the model's
initial weights, the order of the training data and the augmentation, and the same seed gives
the same run again."""
from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import open_dict
from torch.utils.data import Dataset

from data.loaders import train_loader
from data.transforms import classification_train_transform
from tests.helpers import compose_config


class RecordRunStart(L.Callback):
    """Records what a seed decides in a training run: the initial weights, the first training
    batch, and the state of the in-process augmentation generator."""

    records: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx != 0:
            return
        images, labels = batch
        transform = trainer.datamodule.train_dataset.transform
        RecordRunStart.records.append({
            # Weights before the first optimizer step: the initialisation.
            "weights": torch.cat([p.detach().flatten() for p in pl_module.parameters()]).clone(),
            "labels": labels.clone(),
            "images": images.clone(),
            "augmentation_state": repr(transform.random_generator.bit_generator.state),
        })


def _first_step(tmp_path, synthetic_dir, seed: int) -> dict:
    from train import train

    overrides = [
        "task=classification", "data=synthetic", "backbone=mv2_e2", "backbone.width_mult=0.35",
        f"paths.synthetic_dir={synthetic_dir}", "synthetic.image_size=32",
        "synthetic.generator.images_per_class=12", "synthetic.generator.image_size=40",
        "batch_size=16", f"seed={seed}", "+trainer.fast_dev_run=1", "test=false",
    ]
    cfg = compose_config("train", overrides, tmp_path / f"seed{seed}_{len(RecordRunStart.records)}")
    with open_dict(cfg):
        cfg.callbacks.record = {"_target_": f"{__name__}.RecordRunStart"}
    train(cfg)
    return RecordRunStart.records[-1]


@pytest.mark.slow
def test_seed_decides_initial_weights_data_order_and_augmentation(tmp_path, synthetic_dir):
    """Through train.py's own code path (num_workers=0 as in the tests): seeds 1 and 2 differ in
    initial weights, batch order and augmentation; seed 1 twice gives the identical first batch."""
    first = _first_step(tmp_path, synthetic_dir, seed=1)
    again = _first_step(tmp_path, synthetic_dir, seed=1)
    other = _first_step(tmp_path, synthetic_dir, seed=2)

    assert torch.equal(first["weights"], again["weights"])
    assert torch.equal(first["labels"], again["labels"])
    assert torch.equal(first["images"], again["images"])
    assert first["augmentation_state"] == again["augmentation_state"]

    assert not torch.allclose(first["weights"], other["weights"])
    assert not torch.equal(first["labels"], other["labels"])  # 16 of 8 classes: order differs
    assert first["augmentation_state"] != other["augmentation_state"]


class OneImage(Dataset):
    """One fixed image through a random augmentation: any difference between draws is the
    augmentation's, not the data order's."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        self.transform = classification_train_transform(32)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(image=self.image)["image"]


def _augmented(seed: int, num_workers: int) -> torch.Tensor:
    L.seed_everything(seed, workers=True, verbose=False)
    loader = train_loader(OneImage(), batch_size=1, num_workers=num_workers,
                          pin_memory=False, persistent_workers=False, drop_last=False)
    return torch.cat([batch for _, batch in zip(range(3), _cycle(loader))])


def _cycle(loader):
    while True:
        yield from loader


@pytest.mark.parametrize("num_workers", [0, 1])
def test_augmentation_follows_the_seed_in_process_and_in_workers(num_workers):
    """Three epochs of one image: the same seed repeats the crops and flips exactly, another
    seed draws other ones, with and without worker processes."""
    first = _augmented(1, num_workers)
    assert torch.equal(first, _augmented(1, num_workers))
    assert not torch.equal(first, _augmented(2, num_workers))
