"""Bad dataset files are found when a datamodule indexes its dataset, before training, and
reported all at once with their paths (or left out with skip_bad_files=True)."""
from __future__ import annotations

import logging
import pickle
import re
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from data import bad_files, voc_detection
from data.classification import ImageFolderDataModule
from data.errors import BadFilesError, ImageDecodeError
from data.file_checks import image_problem
from data.io import read_rgb
from data.synthetic_datamodule import synthetic_datamodule
from data.voc_detection import VOCDetection, VOCDetectionDataModule
from data.voc_segmentation import VOCSegmentationDataModule
from errors import DataError
from tests.helpers import FIXTURES


# ---------------------------------------------------------------- writable copies of the genuine fixtures

# Check caches that earlier runs left next to the fixtures are not part of the copies.
_NO_CACHE = shutil.ignore_patterns(".cogsuite-check-*")


@pytest.fixture()
def det_root(tmp_path: Path) -> Path:
    """Root holding VOCdevkit/VOC2007: trainval 000001 000002 000004 004101, test 000003 000005."""
    shutil.copytree(FIXTURES / "VOCdevkit" / "VOC2007", tmp_path / "VOCdevkit" / "VOC2007", ignore=_NO_CACHE)
    return tmp_path


@pytest.fixture()
def seg_root(tmp_path: Path) -> Path:
    """Root holding VOCdevkit/VOC2012: train 2007_000032 2007_000063, val 2007_000033."""
    shutil.copytree(FIXTURES / "VOCdevkit" / "VOC2012", tmp_path / "VOCdevkit" / "VOC2012", ignore=_NO_CACHE)
    return tmp_path


@pytest.fixture()
def folder_root(tmp_path: Path) -> Path:
    """Three Caltech-101 classes, three JPEGs each."""
    shutil.copytree(FIXTURES / "classification", tmp_path / "classification", ignore=_NO_CACHE)
    return tmp_path / "classification"


def det_file(root: Path, sub: str, name: str) -> Path:
    return root / "VOCdevkit" / "VOC2007" / sub / name


def seg_file(root: Path, sub: str, name: str) -> Path:
    return root / "VOCdevkit" / "VOC2012" / sub / name


def truncate(path: Path) -> None:
    """Keep the first third: what an interrupted download or copy leaves."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def set_box(xml: Path, number: int, box: tuple[int, int, int, int]) -> None:
    """Overwrite the <bndbox> of the ``number``-th object (1-based) of a VOC annotation."""
    text = xml.read_text()
    boxes = list(re.finditer(r"<bndbox>.*?</bndbox>", text, flags=re.S))
    values = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    match = boxes[number - 1]
    xml.write_text(text[: match.start()] + f"<bndbox>{values}</bndbox>" + text[match.end():])


def detection(root: Path, **kwargs) -> VOCDetectionDataModule:
    return VOCDetectionDataModule(root, batch_size=2, num_workers=0, image_size=96, **kwargs)


def segmentation(root: Path, **kwargs) -> VOCSegmentationDataModule:
    return VOCSegmentationDataModule(root, batch_size=2, num_workers=0, crop_size=64, **kwargs)


def classification(root: Path, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(root), batch_size=2, num_workers=0, image_size=64, val_fraction=0.34,
                                 **kwargs)


def setup_error(datamodule) -> BadFilesError:
    """The error the datamodule's setup raises (classification indexes in setup too)."""
    with pytest.raises(BadFilesError) as caught:
        datamodule.setup("fit")
    return caught.value


def assert_names(error: BadFilesError, path: Path, *words: str) -> None:
    message = str(error)
    line = next((line for line in message.splitlines() if str(path) in line), None)
    assert line is not None, f"{path} not named in:\n{message}"
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    assert "Fix:" in line
    assert "data.skip_bad_files=true" in message


# ---------------------------------------------------------------- one test per kind of bad data


def test_corrupt_jpeg_is_named_by_every_datamodule(det_root, seg_root, folder_root):
    cases = [
        (detection(det_root), det_file(det_root, "JPEGImages", "000002.jpg")),
        (segmentation(seg_root), seg_file(seg_root, "JPEGImages", "2007_000063.jpg")),
        (classification(folder_root), folder_root / "chair" / "image_0002.jpg"),
    ]
    for datamodule, path in cases:
        truncate(path)
        assert_names(setup_error(datamodule), path, "cannot be decoded", "truncated")


def test_random_bytes_named_jpeg_is_named(det_root):
    path = det_file(det_root, "JPEGImages", "000004.jpg")
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert_names(setup_error(detection(det_root)), path, "cannot be decoded")


@pytest.mark.parametrize("content, words", [
    (b"", ["empty (0 bytes)"]),
    (b"<annotation><object><name>dog</name>", ["not valid XML"]),
    (b"<html><body>404 Not Found</body></html>", ["not a VOC annotation", "<html>"]),
    (b"<annotation><size><width>abc</width></size></annotation>", ["<width>", "expected a number"]),
])
def test_empty_or_malformed_xml_is_named(det_root, content, words):
    path = det_file(det_root, "Annotations", "000001.xml")
    path.write_bytes(content)
    assert_names(setup_error(detection(det_root)), path, *words)


def test_object_without_a_numeric_box_is_named(det_root):
    path = det_file(det_root, "Annotations", "000002.xml")
    path.write_text(path.read_text().replace("<xmax>207</xmax>", "<xmax>n/a</xmax>"))
    assert_names(setup_error(detection(det_root)), path, "object 1 ('train')", "<bndbox>")


def test_unknown_class_name_is_named(det_root):
    path = det_file(det_root, "Annotations", "000001.xml")
    path.write_text(path.read_text().replace("<name>dog</name>", "<name>dgo</name>"))
    error = setup_error(detection(det_root))
    assert_names(error, path, "'dgo'", "not one of the 20 class names", "data.class_names")


def test_rgb_mask_is_named(seg_root):
    path = seg_file(seg_root, "SegmentationClass", "2007_000033.png")
    Image.open(path).convert("RGB").save(path)
    assert_names(setup_error(segmentation(seg_root)), path, "RGB colour mask", "class indices")


def test_mask_of_another_size_is_named(seg_root):
    path = seg_file(seg_root, "SegmentationClass", "2007_000032.png")
    Image.open(path).crop((0, 0, 100, 80)).save(path)
    assert_names(setup_error(segmentation(seg_root)), path, "100x80", "500x281")


def test_mask_with_class_ids_beyond_the_classes_is_named(seg_root):
    names = ["background", *(f"c{i}" for i in range(1, 10))]  # 2007_000032 holds 15 (person)
    path = seg_file(seg_root, "SegmentationClass", "2007_000032.png")
    error = setup_error(segmentation(seg_root, class_names=names))
    assert_names(error, path, "class ids [15]")


def test_missing_listed_files_are_named(det_root, seg_root):
    image = det_file(det_root, "JPEGImages", "000004.jpg")
    image.unlink()
    annotation = det_file(det_root, "Annotations", "000005.xml")
    annotation.unlink()
    error = setup_error(detection(det_root))
    assert_names(error, image, "is missing", "remove the id 000004 from ImageSets/Main/trainval.txt")
    assert_names(error, annotation, "is missing", "ImageSets/Main/test.txt")
    mask = seg_file(seg_root, "SegmentationClass", "2007_000063.png")
    mask.unlink()
    assert_names(setup_error(segmentation(seg_root)), mask, "is missing")


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_missing_file_of_a_complete_synthetic_set_is_named(tmp_path, task):
    sizes = {"classification": {"num_classes": 2, "images_per_class": 3, "image_size": 32},
             "detection": {"num_train": 4, "num_test": 2, "image_size": 48, "num_classes": 2},
             "segmentation": {"num_train": 4, "num_val": 2, "image_size": 48, "num_classes": 2}}[task]
    num_classes = {"classification": 2, "detection": 2, "segmentation": 3}[task]

    def build():
        return synthetic_datamodule(task, tmp_path, batch_size=2, num_workers=0, image_size=48,
                                    num_classes=num_classes, generator=sizes)

    build().setup("fit")  # writes the complete set and reads it without complaint
    (folder,) = tmp_path.glob(f"{task}-*")  # the set's folder, keyed by its generator settings
    victim = sorted(folder.rglob("*.jpg"))[1]
    victim.unlink()
    with pytest.raises(BadFilesError) as caught:
        build().setup("fit")
    assert_names(caught.value, victim, "missing")
    assert "written again" in str(caught.value)


def test_image_check_flags_exactly_the_jpegs_the_reader_cannot_read(tmp_path):
    """Truncated, overwritten and bit-flipped copies of the genuine JPEGs: the indexing check
    must fail on a file exactly when the training-time reader would."""
    rng = np.random.default_rng(0)
    sources = sorted(FIXTURES.rglob("*.jpg"))
    path = tmp_path / "damaged.jpg"
    reader_failures = 0
    for trial in range(90):
        data = bytearray(sources[trial % len(sources)].read_bytes())
        if trial % 3 == 0:
            data = data[: int(rng.integers(0, len(data) - 2))]
        elif trial % 3 == 1:
            start = int(rng.integers(0, len(data)))
            junk = rng.integers(0, 256, size=min(800, len(data) - start), dtype=np.uint8).tobytes()
            data[start:start + len(junk)] = junk
        else:
            for index in rng.integers(0, len(data), size=12):
                data[index] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        try:
            read_rgb(path)
            reader_fails = False
        except ImageDecodeError:
            reader_fails = True
        assert (image_problem(path)[1] is not None) == reader_fails, f"trial {trial}"
        reader_failures += reader_fails
    assert 30 < reader_failures < 90  # both outcomes occur, so the comparison means something


# ---------------------------------------------------------------- boxes


@pytest.mark.parametrize("box, words", [
    ((195, 240, 48, 371), ["inverted", "xmax 48 < xmin 195"]),
    ((48, 371, 195, 240), ["inverted", "ymax 240 < ymin 371"]),
    ((400, 100, 450, 200), ["entirely outside the 353x500 image"]),
    ((48, 240, 420, 371), ["runs 67 px past the right edge of the 353x500 image"]),
    ((-30, 240, 195, 371), ["past the left edge"]),
])
def test_inverted_outside_and_far_overrunning_boxes_are_named(det_root, box, words):
    path = det_file(det_root, "Annotations", "000001.xml")  # 353x500; object 1 is the dog
    set_box(path, 1, box)
    assert_names(setup_error(detection(det_root)), path, "object 1 ('dog')", *words)


def test_boxes_a_few_pixels_past_the_edge_are_clipped_and_counted(det_root, caplog):
    path = det_file(det_root, "Annotations", "000001.xml")  # 353x500
    set_box(path, 1, (48, 240, 356, 371))  # 3 px past the right edge
    set_box(path, 2, (-1, 12, 352, 502))  # 2 px past the left, 2 px past the bottom edge
    datamodule = detection(det_root)
    with caplog.at_level(logging.INFO, logger="data"):
        datamodule.setup("fit")
    assert "2 box(es) in 1 annotation(s) pass the image edge by at most 5 px and are clipped" in caplog.text
    plain = VOCDetection(det_file(det_root, "", ""), "trainval")
    _, boxes, _, _ = plain.load(plain.ids.index("000001"))
    np.testing.assert_array_equal(boxes, [[47, 239, 353, 371], [0, 11, 352, 500]])


def test_xml_size_other_than_the_image_is_named(det_root):
    path = det_file(det_root, "Annotations", "000002.xml")  # the image is 335x500
    path.write_text(path.read_text().replace("<width>335</width>", "<width>670</width>"))
    assert_names(setup_error(detection(det_root)), path, "image size 670x500 but the image is 335x500")


# ---------------------------------------------------------------- all at once, before training


def test_every_bad_file_of_every_split_is_reported_in_one_error(seg_root, det_root):
    truncate(seg_file(seg_root, "JPEGImages", "2007_000032.jpg"))  # train
    Image.open(seg_file(seg_root, "SegmentationClass", "2007_000033.png")).convert("RGB").save(
        seg_file(seg_root, "SegmentationClass", "2007_000033.png"))  # val
    error = setup_error(segmentation(seg_root))
    assert str(error).startswith("2 bad file(s)") and len(error.bad_files) == 2
    truncate(det_file(det_root, "JPEGImages", "000002.jpg"))  # trainval
    det_file(det_root, "Annotations", "000003.xml").write_text("")  # test
    set_box(det_file(det_root, "Annotations", "000005.xml"), 2, (300, 264, 253, 372))  # test
    error = setup_error(detection(det_root))
    assert len(error.bad_files) == 3
    for name in ("JPEGImages/000002.jpg", "Annotations/000003.xml", "Annotations/000005.xml"):
        assert name in str(error)
    clone = pickle.loads(pickle.dumps(error))
    assert isinstance(clone, DataError) and clone.bad_files == error.bad_files


def test_validate_and_test_check_only_their_split(det_root):
    truncate(det_file(det_root, "JPEGImages", "000002.jpg"))  # trainval only
    datamodule = detection(det_root)
    datamodule.setup("validate")
    datamodule.setup("test")
    assert len(datamodule.val_set) == len(datamodule.test_set) == 2
    with pytest.raises(BadFilesError, match="000002.jpg"):
        datamodule.setup("fit")


class _RecordsSteps(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.steps = 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return self.layer(torch.ones(1, 1)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`")
def test_fit_with_two_workers_stops_before_the_first_step_with_the_file_named(det_root, tmp_path):
    truncate(det_file(det_root, "JPEGImages", "004101.jpg"))
    datamodule = VOCDetectionDataModule(det_root, batch_size=2, num_workers=2, image_size=96)
    model = _RecordsSteps()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(BadFilesError, match=r"JPEGImages/004101\.jpg"):
        trainer.fit(model, datamodule=datamodule)
    assert model.steps == 0


# ---------------------------------------------------------------- skip_bad_files


def test_skip_bad_files_leaves_the_samples_out_and_counts_them(det_root, seg_root, folder_root, caplog):
    truncate(det_file(det_root, "JPEGImages", "000002.jpg"))
    det_file(det_root, "Annotations", "000003.xml").write_text("")
    Image.open(seg_file(seg_root, "SegmentationClass", "2007_000063.png")).convert("RGB").save(
        seg_file(seg_root, "SegmentationClass", "2007_000063.png"))
    truncate(folder_root / "butterfly" / "image_0003.jpg")
    with caplog.at_level(logging.WARNING, logger="data"):
        det = detection(det_root, skip_bad_files=True)
        det.setup("fit")
        seg = segmentation(seg_root, skip_bad_files=True)
        seg.setup("fit")
        cls = classification(folder_root, skip_bad_files=True)
        cls.setup("fit")
    assert det.train_set.ids == ["000001", "000004", "004101"] and det.val_set.ids == ["000005"]
    assert seg.dataset("train").ids == ["2007_000032"] and seg.dataset("val").ids == ["2007_000033"]
    kept = [path for path, _ in cls.split.train + cls.split.val]
    assert len(kept) == 8 and not any(path.endswith("butterfly/image_0003.jpg") for path in kept)
    assert cls.num_classes == 3
    assert "2 bad file(s) of PASCAL VOC detection" in caplog.text
    assert "1 of 4 in VOC2007 trainval, 1 of 2 in VOC2007 test" in caplog.text
    assert "JPEGImages/000002.jpg" in caplog.text and "SegmentationClass/2007_000063.png" in caplog.text
    assert "butterfly/image_0003.jpg" in caplog.text
    images, targets = next(iter(det.train_dataloader()))
    assert images.shape[0] == 2


def test_skipping_keeps_the_split_of_the_good_files(folder_root):
    before = classification(folder_root).split
    truncate(folder_root / "chair" / "image_0001.jpg")
    after = classification(folder_root, skip_bad_files=True).split
    gone = str(folder_root / "chair" / "image_0001.jpg")
    assert [s for s in before.train if s[0] != gone] == after.train
    assert [s for s in before.val if s[0] != gone] == after.val


def test_skipping_every_sample_of_a_split_is_an_error(det_root):
    for image_id in ("000003", "000005"):
        det_file(det_root, "Annotations", f"{image_id}.xml").write_text("")
    with pytest.raises(DataError, match="Every sample of VOC2007 test"):
        detection(det_root, skip_bad_files=True).setup("fit")


# ---------------------------------------------------------------- the check is cached


def test_second_indexing_comes_from_the_cache_and_a_changed_file_is_checked_again(det_root, monkeypatch):
    path = det_file(det_root, "Annotations", "000001.xml")
    path.write_text(path.read_text().replace("<name>dog</name>", "<name>dgo</name>"))
    first = setup_error(detection(det_root))
    assert list(det_file(det_root, "", "").glob(".cogsuite-check-detection-*.json"))

    checked = []
    real = voc_detection.check_voc_sample
    monkeypatch.setattr(voc_detection, "check_voc_sample", lambda d, i, *a: checked.append(i) or real(d, i, *a))
    second = setup_error(detection(det_root))
    assert checked == [] and second.bad_files == first.bad_files

    path.write_text(path.read_text().replace("<name>dgo</name>", "<name>dog</name>\n"))  # fixed
    detection(det_root).setup("fit")
    assert checked == ["000001"]


def test_cache_goes_to_the_user_cache_dir_when_the_dataset_folder_takes_no_file(det_root, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    voc = det_file(det_root, "", "")
    for split in ("trainval", "test"):  # a folder where the cache file would go: writing it fails
        (voc / f".cogsuite-check-detection-{split}.json").mkdir()
    detection(det_root).setup("fit")
    cached = sorted(p.name for p in (tmp_path / "user-cache" / "cogsuite" / "data-checks").iterdir())
    assert len(cached) == 2 and cached[0].endswith("-detection-test.json")

    checked = []
    real = voc_detection.check_voc_sample
    monkeypatch.setattr(voc_detection, "check_voc_sample", lambda d, i, *a: checked.append(i) or real(d, i, *a))
    detection(det_root).setup("fit")
    assert checked == []


def test_a_long_list_is_cut_and_written_to_a_file(det_root, monkeypatch):
    monkeypatch.setattr(bad_files, "MAX_LISTED", 1)
    for image_id in ("000001", "000002"):
        det_file(det_root, "Annotations", f"{image_id}.xml").write_text("")
    message = str(setup_error(detection(det_root)))
    listing = re.search(r"all 2 are listed in '([^']+)'", message).group(1)
    assert len(Path(listing).read_text().splitlines()) == 2
    assert message.count("Fix:") == 1


def test_large_sets_log_the_check_and_its_cost(det_root, monkeypatch, caplog):
    from data import check_runner

    monkeypatch.setattr(check_runner, "PROGRESS_MIN_SAMPLES", 3)  # the fixture's trainval has 4
    with caplog.at_level(logging.INFO, logger="data"):
        detection(det_root).setup("fit")
    assert "Checking the 4 sample(s) of VOC2007 trainval" in caplog.text
    assert re.search(r"Checked 4 sample\(s\) of VOC2007 trainval in [\d.]+ s", caplog.text)
    assert "of VOC2007 test" not in caplog.text  # 2 samples: below the threshold, no lines
