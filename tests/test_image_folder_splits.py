"""data=image_folder: any folder of class folders with separate train / val / test splits (split
folders or seeded stratified fractions), and seed 001's seeded evaluation-time deformation."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data.image_folder_splits import ImageFolderSplitsDataModule
from errors import ConfigError, DataError


def _write_images(folder, classes, per_class, size=24, start=0):
    rng = np.random.default_rng(start)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{start + i:03d}.png")


def _datamodule(root, **kwargs):
    return ImageFolderSplitsDataModule(str(root), batch_size=4, num_workers=0, image_size=16, **kwargs)


def test_one_folder_is_split_by_seeded_stratified_fractions(tmp_path):
    _write_images(tmp_path, ["a", "b", "c"], 20)
    dm = _datamodule(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert dm.class_names == ["a", "b", "c"] and dm.split_sizes == {"train": 42, "val": 6, "test": 12}
    dm.setup("fit")
    paths = {split: {p for p, _ in dm._splits[split]} for split in ("train", "val", "test")}
    assert not (paths["train"] & paths["val"]) and not (paths["train"] & paths["test"]) \
        and not (paths["val"] & paths["test"])
    again = _datamodule(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=3)
    again._index()
    assert again._splits == dm._splits
    other = _datamodule(tmp_path, val_fraction=0.1, test_fraction=0.2, seed=4)
    other._index()
    assert other._splits["test"] != dm._splits["test"]


def test_split_folders_are_read_as_given(tmp_path):
    _write_images(tmp_path / "train", ["x", "y"], 10)
    _write_images(tmp_path / "test", ["x", "y"], 3, start=100)
    dm = _datamodule(tmp_path, val_fraction=0.2)
    assert dm.split_sizes == {"train": 16, "val": 4, "test": 6}  # val from train (no val/)
    _write_images(tmp_path / "val", ["x", "y"], 2, start=200)
    assert _datamodule(tmp_path).split_sizes == {"train": 20, "val": 4, "test": 6}
    _write_images(tmp_path / "test", ["z"], 1, start=300)
    with pytest.raises(DataError, match="same class folders"):
        _datamodule(tmp_path).class_names


def test_eval_deformation_is_reproducible_and_differs_per_image(tmp_path):
    _write_images(tmp_path, ["a", "b"], 10)
    dm = _datamodule(tmp_path, eval_deformation="affine_grid", deformation_seed=7)
    dm.setup("fit")
    first = [dm.test_dataset.deformed(i) for i in range(len(dm.test_dataset))]
    again = _datamodule(tmp_path, eval_deformation="affine_grid", deformation_seed=7)
    again.setup("fit")
    # the same image, deformed the same way: in another datamodule, and in any order
    order = list(reversed(range(len(first))))
    assert all(np.array_equal(first[i], again.test_dataset.deformed(i)) for i in order)
    plain = _datamodule(tmp_path)
    plain.setup("fit")
    assert not np.allclose(dm.test_dataset[0][0].numpy(), plain.test_dataset[0][0].numpy())
    reseeded = _datamodule(tmp_path, eval_deformation="affine_grid", deformation_seed=8)
    reseeded.setup("fit")
    assert not np.array_equal(first[0], reseeded.test_dataset.deformed(0))
    with pytest.raises(ConfigError, match="eval_deformation"):
        _datamodule(tmp_path, eval_deformation="swirl")
