"""Images read right or refused with the reason: 16-bit and float grayscale scaled to 8 bits (NaN
refused naming the file, at indexing and at reading), each real file of a class folder indexed
once (symbolic link loops and duplicate links), and an image that breaks after the cached
check named in one line even when a DataLoader worker reads it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from PIL import Image

from data.classification import ImageFolderDataModule
from data.errors import ImageDecodeError
from data.file_checks import image_problem
from data.image_folder import index_image_folder
from data.io import read_rgb
from data.errors import BadFilesError
from errors import user_message


def _gradient(dtype, high) -> np.ndarray:
    """A 16x16 ramp over the full range ``0..high`` (row-major)."""
    return (np.linspace(0, high, 256).reshape(16, 16)).astype(dtype)


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = _gradient(np.uint16, 65535)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # what Pillow makes of a 16-bit PNG
    rgb = read_rgb(path)
    expected = np.rint(values / 257.0).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    # PIL's own conversion clips: most of the ramp would be white.
    with Image.open(path) as image:
        assert (np.asarray(image.convert("L")) == 255).mean() > 0.95
    assert (rgb == 255).mean() < 0.01


@pytest.mark.parametrize("high, scale", [(1.0, 255), (255.0, 1)], ids=["0..1", "0..255"])
def test_float_tiff_is_scaled_by_its_range(tmp_path, high, scale):
    values = _gradient(np.float32, high)
    path = tmp_path / "f.tif"
    Image.fromarray(values).save(path)
    rgb = read_rgb(path)
    assert np.array_equal(rgb[..., 1], np.rint(values.astype(np.float64) * scale).astype(np.uint8))
    assert rgb.max() == 255 and rgb.min() == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_tiff_with_nan_or_inf_is_refused_naming_the_file(tmp_path, bad):
    values = _gradient(np.float32, 1.0)
    values[3, 4] = bad
    path = tmp_path / "bad.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(ImageDecodeError, match=r"Cannot read image '.*bad.tif' \(F pixels\): 1 of its 256 "
                                               r"pixels are NaN or infinite"):
        read_rgb(path)
    # The indexing check finds it too, before any training.
    size, problem = image_problem(path)
    assert size is None and "NaN or infinite" in problem


def test_float_outside_known_ranges_and_32bit_ints(tmp_path):
    path = tmp_path / "wide.tif"
    Image.fromarray(_gradient(np.float32, 4000.0)).save(path)
    with pytest.raises(ImageDecodeError, match="from 0 to 4000, outside 0..1 or 0..255"):
        read_rgb(path)
    ints = tmp_path / "i32.tif"
    Image.fromarray(_gradient(np.int32, 65535)).save(ints)
    assert read_rgb(ints)[..., 0].max() == 255 and image_problem(ints)[1] is None


def _class_folders(root, counts):
    for name, count in counts.items():
        folder = root / name
        folder.mkdir(parents=True)
        for k in range(count):
            Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(folder / f"{k}.png")


def test_symlink_loop_indexes_each_real_file_once(tmp_path, caplog):
    _class_folders(tmp_path, {"chair": 3, "table": 2})
    os.symlink(".", tmp_path / "chair" / "loop")
    os.symlink(tmp_path / "table", tmp_path / "chair" / "also_table_folder")  # another class, linked in
    os.symlink(tmp_path / "chair" / "0.png", tmp_path / "chair" / "zz_link.png")  # a file link
    with caplog.at_level("WARNING", logger="data"):
        index = index_image_folder(tmp_path)
    counts = np.bincount([label for _, label in index.samples]).tolist()
    assert index.class_names == ["chair", "table"]
    # chair: its 3 files + the 2 table files reached through a folder link (real files, once each).
    assert counts == [5, 2]
    chair = sorted(os.path.relpath(path, tmp_path) for path, label in index.samples if label == 0)
    assert chair == ["chair/0.png", "chair/1.png", "chair/2.png",
                     "chair/also_table_folder/0.png", "chair/also_table_folder/1.png"]
    assert "symbolic link loop" in caplog.text and "chair/loop" in caplog.text


def test_loop_alone_gives_three_images(tmp_path):
    _class_folders(tmp_path, {"chair": 3, "table": 1})
    os.symlink(".", tmp_path / "chair" / "loop")
    index = index_image_folder(tmp_path)
    assert np.bincount([label for _, label in index.samples]).tolist() == [3, 1]


def test_image_broken_after_the_cached_check_is_one_line_from_a_worker(tmp_path):
    _class_folders(tmp_path / "data", {"a": 4, "b": 4})
    dm = ImageFolderDataModule(str(tmp_path / "data"), batch_size=8, num_workers=1, image_size=8,
                               val_fraction=0.25, persistent_workers=False, pin_memory=False)
    dm.setup("fit")
    victim = tmp_path / "data" / "a" / "0.png"
    stat = victim.stat()
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (stat.st_size - 8))  # same size ...
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))                 # ... and time
    loader = dm.train_dataloader()
    with pytest.raises(ImageDecodeError) as error:
        for _ in loader:
            pass
    assert "DataLoader worker" in str(error.value)  # what torch makes of it ...
    shown = user_message(error.value)               # ... and what the user sees
    assert "\n" not in shown and shown.startswith(f"Cannot decode image '{victim}'")
    # The next run's check (file changed => same signature, cache reused) is not fooled when
    # the signature changes: a fresh check lists it.
    os.utime(victim, None)
    with pytest.raises(BadFilesError, match="0.png"):
        ImageFolderDataModule(str(tmp_path / "data"), batch_size=8, num_workers=0, image_size=8).setup("fit")



def test_image_broken_after_the_check_is_skipped_and_counted_with_skip_bad_files(tmp_path, caplog):
    _class_folders(tmp_path / "data", {"a": 4, "b": 4})
    dm = ImageFolderDataModule(str(tmp_path / "data"), batch_size=3, num_workers=0, image_size=8,
                               val_fraction=0.25, pin_memory=False, skip_bad_files=True)
    dm.setup("fit")
    train_paths = [path for path, _ in dm.train_dataset.samples]
    victim = Path(train_paths[0])
    stat = victim.stat()
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (stat.st_size - 8))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with caplog.at_level("WARNING", logger="data"):
        served = sum(len(labels) for _, labels in dm.train_dataloader())
    # drop_last: 6 training samples in batches of 3; one batch comes out one short.
    assert served == len(train_paths) - 1
    assert f"skipped a sample (data.skip_bad_files=true; 1 in this loader process so far): Cannot decode image '{victim}'" \
        in caplog.text
