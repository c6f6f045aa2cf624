"""The embedded synthetic dataset: formats, determinism, write-once behaviour, speed."""
from __future__ import annotations

import hashlib
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data.synthetic as synthetic
from data.synthetic import (
    MARKER_NAME,
    SYNTHETIC_CLASSES,
    render_classification_scene,
    render_voc_scene,
    voc_colormap,
    write_image_folder,
    write_voc_detection,
    write_voc_segmentation,
)

from tests.helpers import FIXTURES

FOLDER_ARGS = dict(num_classes=4, images_per_class=24, image_size=64, seed=0)
DET_ARGS = dict(num_train=24, num_test=8, image_size=96, seed=0)
SEG_ARGS = dict(num_train=12, num_val=6, image_size=96, seed=0)


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _timed(write, *args, **kwargs):
    start = time.perf_counter()
    result = write(*args, **kwargs)
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    folder_names, t_folder = _timed(write_image_folder, root / "folder", **FOLDER_ARGS)
    det_names, t_det = _timed(write_voc_detection, root / "voc", **DET_ARGS)
    seg_names, t_seg = _timed(write_voc_segmentation, root / "voc", **SEG_ARGS)
    images = FOLDER_ARGS["num_classes"] * FOLDER_ARGS["images_per_class"]
    print(
        f"\nsynthetic generation: image folder {images} imgs @64px {t_folder:.2f}s "
        f"({1000 * t_folder / images:.1f} ms/img); VOC det 32 imgs @96px {t_det:.2f}s "
        f"({1000 * t_det / 32:.1f} ms/img); VOC seg 18 imgs @96px {t_seg:.2f}s ({1000 * t_seg / 18:.1f} ms/img)"
    )
    return {
        "root": root,
        "folder": root / "folder",
        "voc2007": root / "voc" / "VOCdevkit" / "VOC2007",
        "voc2012": root / "voc" / "VOCdevkit" / "VOC2012",
        "folder_names": folder_names,
        "det_names": det_names,
        "seg_names": seg_names,
    }


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(written, tmp_path):
    write_image_folder(tmp_path / "folder", **FOLDER_ARGS)
    write_voc_detection(tmp_path / "voc", **DET_ARGS)
    write_voc_segmentation(tmp_path / "voc", **SEG_ARGS)
    for name in ("folder",):
        assert _hashes(tmp_path / name) == _hashes(written[name])
    assert _hashes(tmp_path / "voc") == _hashes(written["root"] / "voc")

    write_voc_detection(tmp_path / "other", **{**DET_ARGS, "seed": 1})
    other = _hashes(tmp_path / "other" / "VOCdevkit" / "VOC2007" / "JPEGImages")
    same_seed = _hashes(written["voc2007"] / "JPEGImages")
    assert set(other) == set(same_seed)
    assert all(other[name] != same_seed[name] for name in other)


def test_image_folder_layout_with_some_grayscale_jpegs(written):
    folder = written["folder"]
    assert written["folder_names"] == sorted(SYNTHETIC_CLASSES[:4])  # the readers' label order
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(written["folder_names"])
    modes = {}
    for class_name in written["folder_names"]:
        files = sorted((folder / class_name).glob("*.jpg"))
        assert len(files) == FOLDER_ARGS["images_per_class"]
        for index, path in enumerate(files):
            with Image.open(path) as image:
                assert image.format == "JPEG" and image.size == (64, 64)
                modes[(class_name, index)] = image.mode
    gray = {key for key, mode in modes.items() if mode == "L"}
    assert set(modes.values()) == {"RGB", "L"}
    # A few per class (indices 3, 23, ...), the rest RGB.
    assert gray == {(c, i) for c in written["folder_names"] for i in range(FOLDER_ARGS["images_per_class"]) if i % 20 == 3}


def test_classification_scene_has_one_dominant_object_of_its_class():
    for seed in range(20):
        class_index = seed % len(SYNTHETIC_CLASSES)
        scene = render_classification_scene(np.random.default_rng(seed), 96, class_index, range(len(SYNTHETIC_CLASSES)))
        dominant, *distractors = scene.objects
        assert dominant.class_index == class_index
        assert dominant.visible_fraction >= 0.75
        assert all(d.class_index != class_index and d.full_area < dominant.visible_area for d in distractors)
        assert (scene.instance_map == 1).sum() == dominant.visible_area


@pytest.mark.parametrize("shape", SYNTHETIC_CLASSES)
def test_shapes_are_never_clipped_by_their_patch(shape):
    for angle in np.linspace(0, np.pi, 7):
        mask, _, _ = synthetic._shape_patch(shape, 60.3, angle, 1.15, (100.5, 80.2))
        assert mask.sum() > 0.15 * np.pi * 60.3**2
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _voc_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1


def test_voc_detection_xml_has_the_voc_fields_and_boxes_match_the_pixels(written):
    voc = written["voc2007"]
    names = written["det_names"]
    trainval = (voc / "ImageSets/Main/trainval.txt").read_text().split()
    test = (voc / "ImageSets/Main/test.txt").read_text().split()
    assert len(trainval) == DET_ARGS["num_train"] and len(test) == DET_ARGS["num_test"]
    assert not set(trainval) & set(test)
    sizes, difficult, total = set(), 0, 0
    for n, image_id in enumerate(trainval + test):
        root = ET.parse(voc / "Annotations" / f"{image_id}.xml").getroot()
        assert root.tag == "annotation"
        assert root.findtext("folder") == "VOC2007" and root.findtext("filename") == f"{image_id}.jpg"
        width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
        assert root.findtext("size/depth") == "3"
        with Image.open(voc / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.size == (width, height) and image.mode == "RGB"
            decoded = np.asarray(image, np.float32)
        sizes.add((width, height))
        objects = root.findall("object")
        assert 1 <= len(objects) <= 6
        # Re-render the scene from the same per-image generator: the boxes must be the
        # visible extent of each object in 1-based inclusive pixel coordinates.
        scene = render_voc_scene(np.random.default_rng([0, synthetic._STREAM_DETECTION, n]), 96, len(names))
        # Same picture up to JPEG loss (the per-pixel noise makes that loss a few grey levels).
        assert np.corrcoef(decoded.ravel(), scene.image.ravel().astype(np.float32))[0, 1] > 0.85
        assert len(scene.objects) == len(objects)
        for k, obj in enumerate(objects):
            assert obj.findtext("name") == names[scene.objects[k].class_index]
            assert obj.findtext("pose") == "Unspecified"
            assert obj.findtext("truncated") in ("0", "1") and obj.findtext("difficult") in ("0", "1")
            box = tuple(int(obj.findtext(f"bndbox/{key}")) for key in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= box[0] <= box[2] <= width and 1 <= box[1] <= box[3] <= height
            assert box == _voc_box(scene.object_mask(k))
            difficult += obj.findtext("difficult") == "1"
            total += 1
    assert 0 < difficult < 0.3 * total, "some, not many, objects are difficult"
    assert len(sizes) > 1 and any(w != h for w, h in sizes)


def test_voc_segmentation_masks_are_voc_palette_pngs_with_void_boundaries(written):
    voc = written["voc2012"]
    num_classes = len(written["seg_names"])
    train = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    assert len(train) == SEG_ARGS["num_train"] and len(val) == SEG_ARGS["num_val"] and not set(train) & set(val)
    expected_palette = voc_colormap().reshape(-1).tolist()
    genuine = FIXTURES / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png"
    if genuine.exists():  # the colormap function must reproduce the real VOC palette
        with Image.open(genuine) as real:
            assert real.getpalette() == expected_palette
    seen = set()
    for image_id in train + val:
        with Image.open(voc / "SegmentationClass" / f"{image_id}.png") as mask_image:
            assert mask_image.format == "PNG" and mask_image.mode == "P"
            assert mask_image.getpalette() == expected_palette
            mask = np.asarray(mask_image)
        with Image.open(voc / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.size == (mask.shape[1], mask.shape[0])
        values = set(np.unique(mask).tolist())
        assert values <= set(range(num_classes + 1)) | {255}
        assert 255 in values and len(values - {0, 255}) >= 1
        seen |= values
        # Every boundary between two different labels is covered by the void band: no two
        # neighbouring non-void pixels carry different labels.
        for a, b in ((mask[:, 1:], mask[:, :-1]), (mask[1:, :], mask[:-1, :])):
            valid = (a != 255) & (b != 255)
            assert np.all(a[valid] == b[valid])
        assert (mask == 255).mean() < 0.25, "the void band is thin"
    assert len(seen - {0, 255}) >= 3


def test_existing_dataset_is_reused_and_regenerated_when_parameters_change(tmp_path):
    args = dict(num_classes=2, images_per_class=3, image_size=48, seed=0)
    write_image_folder(tmp_path / "f", **args)
    marker = tmp_path / "f" / MARKER_NAME
    first = (marker.stat().st_mtime_ns, (tmp_path / "f" / "circle" / "00000.jpg").stat().st_ino)
    write_image_folder(tmp_path / "f", **args)
    assert (marker.stat().st_mtime_ns, (tmp_path / "f" / "circle" / "00000.jpg").stat().st_ino) == first
    write_image_folder(tmp_path / "f", **{**args, "images_per_class": 4})
    assert len(list((tmp_path / "f" / "circle").glob("*.jpg"))) == 4


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real_save = synthetic._save_jpeg
    calls = {"n": 0}

    def failing_save(image, path):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated interruption")
        real_save(image, path)

    # The VOC writer (data/synthetic/voc.py) saves through its module's _save_jpeg.
    monkeypatch.setattr(synthetic.voc, "_save_jpeg", failing_save)
    with pytest.raises(KeyboardInterrupt):
        write_voc_detection(tmp_path, num_train=6, num_test=2, image_size=64)
    voc_devkit = tmp_path / "VOCdevkit"
    assert not (voc_devkit / "VOC2007").exists()
    assert list(voc_devkit.iterdir()) == [], "temporary folder removed"

    monkeypatch.setattr(synthetic.voc, "_save_jpeg", real_save)
    write_voc_detection(tmp_path, num_train=6, num_test=2, image_size=64)
    assert len(list((voc_devkit / "VOC2007" / "JPEGImages").glob("*.jpg"))) == 8
    assert (voc_devkit / "VOC2007" / MARKER_NAME).exists()


def test_refuses_to_overwrite_a_folder_that_is_not_synthetic(tmp_path):
    real = tmp_path / "VOCdevkit" / "VOC2007"
    real.mkdir(parents=True)
    (real / "README").write_text("a real dataset")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_voc_detection(tmp_path, num_train=2, num_test=1, image_size=64)
    assert (real / "README").read_text() == "a real dataset"


@pytest.mark.parametrize("bad", [dict(num_classes=0), dict(num_classes=len(SYNTHETIC_CLASSES) + 1), dict(image_size=8)])
def test_bad_parameters_are_rejected_with_a_clear_message(tmp_path, bad):
    with pytest.raises(ValueError, match="num_classes|image_size"):
        write_image_folder(tmp_path / "f", **{**dict(images_per_class=1, image_size=64), **bad})


def test_boundary_band_is_the_window_with_two_instances_cut_at_the_edges():
    import numpy as np

    from data.synthetic import boundary_band

    rng = np.random.default_rng(0)
    instance_map = rng.integers(0, 3, (9, 11)).astype(np.uint8)
    instance_map[:, :4] = 0  # a flat region: no band inside it
    for width in (3, 5):
        r = width // 2
        expected = np.array([[len(np.unique(instance_map[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1])) > 1
                              for j in range(11)] for i in range(9)])
        assert np.array_equal(boundary_band(instance_map, width), expected)
    assert not boundary_band(instance_map, 3)[:, :3].any()


# --------------------------------------------------------------------------- shared sets
def test_sets_with_other_generator_settings_never_share_a_folder(tmp_path):
    """A run with other generator settings used to delete and rewrite the set another run was
    reading; each setting now has its own folder, and the first run's files stay untouched."""
    from data.synthetic_datamodule import synthetic_datamodule

    def build(**generator):
        return synthetic_datamodule("classification", tmp_path, batch_size=2, num_workers=0, image_size=32,
                                    num_classes=2, generator={"images_per_class": 2, **generator})

    first = build(image_size=40)
    first.setup("fit")
    files = {p: p.stat().st_mtime_ns for p in Path(first.hparams.root).rglob("*.jpg")}
    other = build(image_size=48)
    assert other.hparams.root != first.hparams.root
    assert {p: p.stat().st_mtime_ns for p in Path(first.hparams.root).rglob("*.jpg")} == files
    assert build(image_size=40).hparams.root == first.hparams.root  # same settings: same set, reused
    assert Path(first.hparams.root).name.startswith("classification-")


def test_temporary_names_are_unique_beyond_the_pid_and_foreign_ones_are_kept(tmp_path, monkeypatch):
    import os
    import time

    from data import synthetic

    final = tmp_path / "classification-0000"
    names = {synthetic._temporary_name(final) for _ in range(3)}
    assert len(names) == 3 and all(f"-{os.getpid()}-" in n for n in names)
    # Another container (same PID 1 as far as names go, other host) writing right now: kept.
    foreign = tmp_path / ".classification-0000.tmp-othercontainer-1-abcd1234"
    foreign.mkdir()
    # A writer on this host whose process is gone: removed.
    dead = tmp_path / (synthetic._temporary_name(final).rsplit("-", 2)[0] + "-999999999-deadbeef")
    dead.mkdir()
    synthetic._remove_stale_temporaries(final)
    assert foreign.is_dir() and not dead.exists()
    old = time.time() - 2 * 24 * 3600
    os.utime(foreign, (old, old))
    synthetic._remove_stale_temporaries(final)
    assert not foreign.exists()
