"""Classification data: image reading, real-layout readers, split, top classes, datamodule."""
from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.classification import ImageClassificationDataset, ImageFolderDataModule
from data.errors import DatasetNotFoundError, ImageDecodeError
from data.image_folder import (
    ImageFolderIndex,
    build_classification_split,
    index_caltech101,
    index_caltech256,
    index_classification_dataset,
    index_flowers,
    keep_top_classes,
    stratified_split,
)
from data.io import read_rgb
from data.synthetic import write_image_folder
from data.device_transforms import Normalization, prepare_batch_images
from data.transforms import IMAGENET_MEAN, classification_eval_transform, classification_train_transform

from tests.helpers import FIXTURES


def _jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, "JPEG", quality=95)
    return path


def _class_tree(root: Path, counts: dict[str, int], name_pattern: str = "image_{:04d}.jpg") -> None:
    for class_name, count in counts.items():
        for i in range(count):
            _jpeg(root / class_name / name_pattern.format(i + 1), seed=zlib.crc32(f"{class_name}{i}".encode()))


# ---------------------------------------------------------------------------------------------
# read_rgb
# ---------------------------------------------------------------------------------------------
def test_read_rgb_converts_grayscale_cmyk_palette_and_alpha(tmp_path):
    gray = _jpeg(tmp_path / "gray.jpg", mode="L")
    array = read_rgb(gray)
    assert array.shape == (30, 40, 3) and array.dtype == np.uint8 and array.flags.writeable
    assert np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2])

    colour = np.zeros((32, 32, 3), np.uint8)
    colour[:, :16] = (200, 30, 40)
    colour[:, 16:] = (20, 160, 220)
    Image.fromarray(colour).convert("CMYK").save(tmp_path / "cmyk.jpg", "JPEG", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as stored:
        assert stored.mode == "CMYK"
    decoded = read_rgb(tmp_path / "cmyk.jpg").astype(int)
    assert np.abs(decoded[4:-4, 2:12] - colour[4:-4, 2:12]).max() < 12
    assert np.abs(decoded[4:-4, 20:30] - colour[4:-4, 20:30]).max() < 12

    Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    assert np.array_equal(read_rgb(tmp_path / "p.png"), colour)

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (10, 20, 30, 255)  # opaque left half, transparent (black) right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_rgb(tmp_path / "rgba.png")
    assert (out[:, :4] == (10, 20, 30)).all() and (out[:, 4:] == 255).all()


def test_read_rgb_names_the_file_it_cannot_decode(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        read_rgb(broken)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(_jpeg(tmp_path / "full.jpg", size=(64, 64)).read_bytes()[:300])
    with pytest.raises(ImageDecodeError, match="truncated.jpg"):
        read_rgb(truncated)
    with pytest.raises(FileNotFoundError):
        read_rgb(tmp_path / "missing.jpg")


# ---------------------------------------------------------------------------------------------
# Real layouts
# ---------------------------------------------------------------------------------------------
def test_caltech101_excludes_background_by_default_and_reads_gray_and_cmyk(tmp_path):
    categories = tmp_path / "101_ObjectCategories"
    _class_tree(categories, {"accordion": 4, "airplanes": 3, "BACKGROUND_Google": 2, "Faces_easy": 2})
    _jpeg(categories / "car_side" / "image_0001.jpg", mode="L")
    _jpeg(categories / "car_side" / "image_0002.jpg", mode="CMYK")
    (categories / "airplanes" / "Thumbs.db").write_bytes(b"not an image")

    index = index_caltech101(tmp_path)
    assert index.class_names == ["Faces_easy", "accordion", "airplanes", "car_side"]  # sorted, no background
    assert len(index.samples) == 2 + 4 + 3 + 2
    assert all(label == index.class_names.index(Path(path).parent.name) for path, label in index.samples)
    for path, _ in index.samples:
        assert read_rgb(path).shape[2] == 3

    with_background = index_caltech101(tmp_path, include_background=True)
    assert with_background.class_names == ["BACKGROUND_Google", "Faces_easy", "accordion", "airplanes", "car_side"]
    # torchvision's download location and the category folder itself are accepted too.
    assert index_caltech101(categories).class_names == index.class_names


def test_caltech256_orders_by_number_and_includes_clutter_by_default(tmp_path):
    categories = tmp_path / "caltech256" / "256_ObjectCategories"  # torchvision's layout
    for folder, count in {"010.beer-mug": 2, "001.ak47": 3, "002.american-flag": 2, "257.clutter": 2}.items():
        number = folder.split(".")[0]
        for i in range(count):
            _jpeg(categories / folder / f"{number}_{i + 1:04d}.jpg", seed=i)
    (categories / "001.ak47" / "RENAME2").write_text("stray file in the real archive")
    _jpeg(categories / "002.american-flag" / "nested" / "002_9999.jpg")  # not a class member

    index = index_caltech256(tmp_path)
    assert index.class_names == ["001.ak47", "002.american-flag", "010.beer-mug", "257.clutter"]
    counts = np.bincount([label for _, label in index.samples]).tolist()
    assert counts == [3, 2, 2, 2]
    assert index_caltech256(tmp_path, include_clutter=False).class_names == index.class_names[:3]


def test_flowers_accepts_the_tensorflow_flower_photos_folder(tmp_path):
    _class_tree(tmp_path / "flower_photos", {"tulips": 2, "daisy": 3, "roses": 1}, "{}.jpg")
    (tmp_path / "flower_photos" / "LICENSE.txt").write_text("CC-BY")
    index = index_flowers(tmp_path)
    assert index.class_names == ["daisy", "roses", "tulips"]
    assert index_flowers(tmp_path / "flower_photos").class_names == index.class_names


def test_genuine_caltech101_jpegs_as_a_flowers_style_folder():
    folder = FIXTURES / "classification"
    if not folder.is_dir():
        pytest.fail(f"genuine Caltech-101 fixture images missing at {folder}")
    split = build_classification_split(folder, "flowers", val_fraction=0.1, seed=0)
    assert split.class_names == ["airplanes", "butterfly", "chair"]
    assert split.train_class_counts == [2, 2, 2] and split.val_class_counts == [1, 1, 1]
    for path, _ in split.val:
        image = read_rgb(path)
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) > 100


@pytest.mark.parametrize(
    "layout, landmark",
    [("imagefolder", "<class_a>"), ("flowers", "flower_photos"), ("caltech101", "101_ObjectCategories"), ("caltech256", "257.clutter")],
)
def test_missing_dataset_message_names_path_layout_and_synthetic_fallback(tmp_path, layout, landmark):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as caught:
        index_classification_dataset(missing, layout)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert str(missing) in message and landmark in message and "data=synthetic" in message
    assert pickle.loads(pickle.dumps(caught.value)).args == caught.value.args  # survives workers

    missing.mkdir()  # exists but holds no dataset
    with pytest.raises(DatasetNotFoundError, match="data=synthetic"):
        index_classification_dataset(missing, layout)


def test_empty_class_folder_and_unknown_layout_are_clear_errors(tmp_path):
    _class_tree(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="without any image.*b"):
        index_classification_dataset(tmp_path, "imagefolder")
    with pytest.raises(ValueError, match="caltech256"):
        index_classification_dataset(tmp_path, "caltech_256")


# ---------------------------------------------------------------------------------------------
# Split and top classes (pure functions over an index)
# ---------------------------------------------------------------------------------------------
def _index(counts: dict[str, int]) -> ImageFolderIndex:
    names = sorted(counts)
    samples = [(f"/d/{name}/{i:04d}.jpg", label) for label, name in enumerate(names) for i in range(counts[name])]
    return ImageFolderIndex(Path("/d"), names, samples)


def test_stratified_split_holds_out_ten_percent_of_every_class():
    index = _index({"a": 20, "b": 10, "c": 3, "d": 2, "e": 1, "f": 55})
    split = stratified_split(index, val_fraction=0.1, seed=7)
    # round(10 %), at least one when a class has two images, never the whole class
    assert split.val_class_counts == [2, 1, 1, 1, 0, 6]
    assert split.train_class_counts == [18, 9, 2, 1, 1, 49]
    assert not set(split.train) & set(split.val)
    assert sorted(split.train + split.val) == sorted(index.samples)
    assert stratified_split(index, 0.1, seed=7) == split  # deterministic
    assert stratified_split(index, 0.1, seed=8).val != split.val  # and seeded

    # A class's held-out images do not depend on which other classes exist.
    fewer = stratified_split(_index({"a": 20, "f": 55}), 0.1, seed=7)
    held_a = {p for p, _ in split.val if "/a/" in p}
    assert held_a == {p for p, _ in fewer.val if "/a/" in p}


def test_top_fraction_keeps_the_largest_classes_relabelled():
    counts = {f"class{i:02d}": n for i, n in enumerate([5, 40, 12, 30, 8, 25, 3, 18, 50, 10])}
    split = stratified_split(_index(counts), 0.1, seed=0)
    top = keep_top_classes(split, 0.2)
    assert top.class_names == ["class01", "class08"]  # 40 and 50 images, kept in label order
    assert {label for _, label in top.train + top.val} == {0, 1}
    assert top.train_class_counts == [split.train_class_counts[1], split.train_class_counts[8]]
    assert {p for p, _ in top.val} == {p for p, label in split.val if label in (1, 8)}
    assert keep_top_classes(split, 1.0) == split
    with pytest.raises(ValueError, match="top_fraction"):
        keep_top_classes(split, 0.0)


# ---------------------------------------------------------------------------------------------
# Transforms and the datamodule
# ---------------------------------------------------------------------------------------------
def test_transforms_give_uint8_tensors_normalized_on_the_device():
    mean_colour = np.array(IMAGENET_MEAN) * 255
    image = np.broadcast_to(mean_colour.round().astype(np.uint8), (50, 90, 3)).copy()
    imagenet = Normalization.imagenet()
    for transform in (classification_train_transform(32), classification_eval_transform(32)):
        out = transform(image=image)["image"]
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
        normalized = prepare_batch_images(out[None], imagenet)[0]
        assert normalized.dtype == torch.float32 and normalized.abs().max() < 0.02  # mean colour -> ~0
    white = classification_eval_transform(32)(image=np.full((40, 64, 3), 255, np.uint8))["image"]
    white = prepare_batch_images(white[None], imagenet)[0]
    assert torch.allclose(white[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]), atol=1e-4)
    with pytest.raises(ValueError, match="image_size"):
        classification_eval_transform(0)


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls") / "synthetic_imagefolder"
    write_image_folder(root, num_classes=3, images_per_class=10, image_size=48, seed=0)
    return root


def test_datamodule_yields_normalized_batches_from_the_synthetic_folder(synthetic_folder):
    module = ImageFolderDataModule(root=synthetic_folder, batch_size=4, num_workers=0, image_size=32)
    assert module.hparams.root == str(synthetic_folder)  # text, so checkpoints load with weights_only
    assert module.num_classes == 3 and module.class_names == ["circle", "square", "triangle"]
    assert module.train_class_counts == [9, 9, 9]
    assert module.hparams.image_size == 32 and module.hparams.layout == "imagefolder"
    module.setup("fit")
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8  # normalised on the device
    assert labels.shape == (4,) and labels.dtype == torch.long
    images = prepare_batch_images(images, Normalization.imagenet())
    assert images.min() < 0 < images.max() and images.abs().max() < 3  # normalized, not 0..255
    assert len(module.train_dataloader()) == 27 // 4  # drop_last avoids a 3-sample last batch
    val_labels = torch.cat([y for _, y in module.val_dataloader()])
    assert sorted(val_labels.tolist()) == [0, 1, 2]
    test_loader = module.test_dataloader()
    assert [p for p, _ in test_loader.dataset.samples] == [p for p, _ in module.val_dataloader().dataset.samples]
    assert not test_loader.persistent_workers


def test_datamodule_validates_num_classes_and_applies_top_fraction(synthetic_folder):
    wrong = ImageFolderDataModule(root=str(synthetic_folder), num_classes=5, num_workers=0)
    with pytest.raises(ValueError, match="num_classes=5.*3 classes"):
        _ = wrong.num_classes
    top = ImageFolderDataModule(root=str(synthetic_folder), num_workers=0, top_fraction=0.34, num_classes=1)
    assert top.num_classes == 1 and top.class_names == ["circle"]  # tie on counts -> lowest label
    with pytest.raises(ValueError, match="layout"):
        ImageFolderDataModule(root=str(synthetic_folder), layout="caltech")


def test_dataset_returns_tensor_and_label(synthetic_folder):
    samples = [(str(next((synthetic_folder / "square").glob("*.jpg"))), 1)]
    image, label = ImageClassificationDataset(samples, classification_eval_transform(24))[0]
    assert image.shape == (3, 24, 24) and label == 1
