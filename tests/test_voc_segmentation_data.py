"""VOC2012 segmentation reader, datamodule and transforms, on genuine VOC files where possible."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.errors import DatasetNotFoundError
from data.segmentation_transforms import eval_transform, train_transform
from data.voc_segmentation import (
    VOC_SEG_CLASSES,
    VOCSegmentation,
    VOCSegmentationDataModule,
    read_mask,
)

from tests.helpers import FIXTURES
VOC2012 = FIXTURES / "VOCdevkit" / "VOC2012"
# From fixtures/SOURCES.md: class ids in each genuine mask, and the official split membership.
GENUINE_VALUES = {
    "2007_000032": {0, 1, 15, 255},
    "2007_000033": {0, 1, 255},
    "2007_000063": {0, 9, 12, 255},
}
TRAIN_IDS = ["2007_000032", "2007_000063"]
VAL_IDS = ["2007_000033"]


@pytest.fixture(scope="module")
def voc_dir() -> Path:
    if not VOC2012.is_dir():
        pytest.fail(f"genuine VOC2012 fixture missing at {VOC2012}")
    return VOC2012


@pytest.fixture()
def voc_copy(voc_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the fixture; returns the root that holds VOCdevkit."""
    shutil.copytree(voc_dir, tmp_path / "VOCdevkit" / "VOC2012")
    return tmp_path


def test_splits_follow_the_official_membership(voc_dir):
    assert VOCSegmentation(voc_dir, "train").ids == TRAIN_IDS
    assert VOCSegmentation(voc_dir, "val").ids == VAL_IDS


def test_palette_masks_are_read_as_class_indices(voc_dir):
    for split in ("train", "val"):
        dataset = VOCSegmentation(voc_dir, split)
        for index, image_id in enumerate(dataset.ids):
            image, mask = dataset.load(index)
            assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
            assert set(np.unique(mask).tolist()) == GENUINE_VALUES[image_id]
            # The VOC palette colour of aeroplane is (128, 0, 0): reading colours would not give 1.
            with Image.open(dataset.mask_paths[index]) as stored:
                assert stored.mode == "P"


def test_whole_image_sample_keeps_ids_and_size(voc_dir):
    dataset = VOCSegmentation(voc_dir, "val", transform=eval_transform())
    image, mask = dataset[0]
    with Image.open(dataset.image_paths[0]) as jpeg:
        width, height = jpeg.size
    assert image.shape == (3, height, width) and image.dtype == torch.uint8  # normalised on the device
    assert mask.shape == (height, width) and mask.dtype == torch.long
    assert set(mask.unique().tolist()) == GENUINE_VALUES[VAL_IDS[0]]


def test_rgb_colour_mask_is_refused(tmp_path):
    path = tmp_path / "colour.png"
    Image.fromarray(np.full((4, 5, 3), (128, 0, 0), np.uint8)).save(path)
    with pytest.raises(ValueError, match="colour mask"):
        read_mask(path)


def test_grey_index_mask_is_accepted(tmp_path):
    values = np.array([[0, 3, 255], [20, 1, 0]], np.uint8)
    Image.fromarray(values, mode="L").save(tmp_path / "index.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "index.png"), values)


def test_class_id_beyond_num_classes_is_reported(voc_dir):
    dataset = VOCSegmentation(voc_dir, "train", num_classes=10)  # 2007_000032 holds 15 (person)
    with pytest.raises(ValueError, match=r"class ids \[15\]"):
        dataset.load(0)


def test_mask_of_other_size_is_reported(voc_copy):
    mask_path = voc_copy / "VOCdevkit/VOC2012/SegmentationClass/2007_000033.png"
    Image.open(mask_path).crop((0, 0, 100, 100)).save(mask_path)
    with pytest.raises(ValueError, match="but its mask"):
        VOCSegmentation(voc_copy / "VOCdevkit/VOC2012", "val").load(0)


def test_missing_dataset_says_where_and_what(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        VOCSegmentationDataModule(root=tmp_path / "nowhere")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "nowhere" / "VOCdevkit" / "VOC2012") in message
    assert "SegmentationClass" in message and "ImageSets/Segmentation" in message
    assert "data=synthetic" in message


def test_missing_split_file_lists_the_present_ones(voc_dir):
    with pytest.raises(DatasetNotFoundError, match=r"'trainval.txt' is missing; splits present: \['train', 'val'\]"):
        VOCSegmentation(voc_dir, "trainval")


def test_missing_listed_file_is_named(voc_copy):
    (voc_copy / "VOCdevkit/VOC2012/JPEGImages/2007_000063.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="2007_000063.jpg"):
        VOCSegmentation(voc_copy / "VOCdevkit/VOC2012", "train")


def test_num_classes_must_match_class_names(voc_dir):
    with pytest.raises(ValueError, match="num_classes=20 but 21 class names"):
        VOCSegmentationDataModule(root=voc_dir.parents[1], num_classes=20)


def test_train_transform_pads_masks_with_ignore_and_keeps_ids():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 10:40] = 7
    transform = train_transform(crop_size=96, scale_range=(1.0, 1.0))
    out = transform(image=image, mask=mask)
    assert out["image"].shape == (3, 96, 96) and out["mask"].shape == (96, 96)
    assert not torch.is_floating_point(out["mask"])
    # 40x50 padded to 96x96: everything outside the image is ignore, the image keeps its ids.
    assert int((out["mask"] == 255).sum()) == 96 * 96 - 40 * 50
    assert int((out["mask"] == 7).sum()) == 20 * 30


def test_train_transform_never_blends_class_ids(voc_dir):
    dataset = VOCSegmentation(voc_dir, "train", transform=train_transform(crop_size=160))
    torch.manual_seed(0)
    np.random.seed(0)
    seen = set()
    for _ in range(4):
        for index, image_id in enumerate(dataset.ids):
            image, mask = dataset[index]
            assert image.shape == (3, 160, 160) and mask.dtype == torch.long
            values = set(mask.unique().tolist())
            assert values <= GENUINE_VALUES[image_id]  # bilinear resampling would add new values
            seen |= values
    assert 255 in seen


def test_datamodule_batches(voc_dir):
    datamodule = VOCSegmentationDataModule(root=voc_dir.parents[1], batch_size=2, num_workers=0, crop_size=128)
    datamodule.setup("fit")
    assert datamodule.num_classes == 21 and datamodule.class_names == list(VOC_SEG_CLASSES)
    images, masks = next(iter(datamodule.train_dataloader()))
    assert images.shape == (2, 3, 128, 128) and masks.shape == (2, 128, 128) and masks.dtype == torch.long
    # Validation: whole images, batch 1.
    images, masks = next(iter(datamodule.val_dataloader()))
    assert images.shape == (1, 3, 366, 500) and masks.shape == (1, 366, 500)


def test_padded_validation_batches_and_ignores_padding(voc_dir):
    datamodule = VOCSegmentationDataModule(root=voc_dir.parents[1], val_split="train", batch_size=2,
                                           num_workers=0, val_size=512)
    datamodule.setup("validate")
    images, masks = next(iter(datamodule.val_dataloader()))
    assert images.shape == (2, 3, 512, 512)
    # 2007_000032 is 500x281: below and right of it everything is ignore.
    assert bool((masks[0, 281:] == 255).all()) and bool((masks[0, :, 500:] == 255).all())
    assert set(masks[0, :281, :500].unique().tolist()) == GENUINE_VALUES["2007_000032"]


def test_too_small_val_size_is_explained(voc_dir):
    datamodule = VOCSegmentationDataModule(root=voc_dir.parents[1], val_split="train", batch_size=2,
                                           num_workers=0, val_size=300)
    datamodule.setup("validate")
    with pytest.raises(ValueError, match="val_size"):
        next(iter(datamodule.val_dataloader()))


def _add_sbd(root: Path, train_aug_ids: list[str]) -> None:
    """SBD-style additions: 8-bit index masks and a train_aug list in the two-path format."""
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClassAug").mkdir()
    for image_id in GENUINE_VALUES:
        mask = read_mask(voc / "SegmentationClass" / f"{image_id}.png")
        Image.fromarray(mask, mode="L").save(voc / "SegmentationClassAug" / f"{image_id}.png")
    lines = [f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" for i in train_aug_ids]
    (voc / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(lines) + "\n")


def test_sbd_augmented_training_reads_aug_masks(voc_copy):
    _add_sbd(voc_copy, TRAIN_IDS)
    datamodule = VOCSegmentationDataModule(root=voc_copy, use_sbd_aug=True, num_workers=0, crop_size=128)
    datamodule.setup("fit")
    train = datamodule.dataset("train")
    assert train.ids == TRAIN_IDS
    assert all(p.parent.name == "SegmentationClassAug" for p in train.mask_paths)
    assert datamodule.dataset("val").mask_paths[0].parent.name == "SegmentationClass"
    _, mask = train.load(1)
    assert set(np.unique(mask).tolist()) == GENUINE_VALUES[TRAIN_IDS[1]]


def test_validation_images_in_the_training_list_are_refused(voc_copy):
    _add_sbd(voc_copy, TRAIN_IDS + VAL_IDS)
    datamodule = VOCSegmentationDataModule(root=voc_copy, use_sbd_aug=True, num_workers=0)
    with pytest.raises(ValueError, match="also in the training split"):
        datamodule.setup("fit")
