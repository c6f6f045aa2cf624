"""VOC detection reader, datamodule and SSD augmentation, on the genuine VOC2007 fixture files."""
from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from data.detection_pipeline import eval_pipeline, train_pipeline
from data.detection_transforms import SSDRandomCrop, ZoomOut, eval_transform
from data.device_transforms import Normalization, prepare_batch_images
from data.errors import DatasetNotFoundError
from data.voc_detection import (
    VOC_CLASSES,
    VOCDetection,
    VOCDetectionDataModule,
    collate_detection,
    parse_voc_xml,
)
from errors import ConfigError

LABEL = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}


@pytest.fixture()
def voc2007(fixtures_dir):
    return fixtures_dir / "VOCdevkit" / "VOC2007"


# Values copied from the fixture XML files (VOC's 1-based <xmin> <ymin> <xmax> <ymax>).
XML_OBJECTS = {
    "000001": ((353, 500), [("dog", 0, (48, 240, 195, 371)), ("person", 0, (8, 12, 352, 498))]),
    "000002": ((335, 500), [("train", 0, (139, 200, 207, 301))]),
    "000003": ((500, 375), [("sofa", 0, (123, 155, 215, 195)), ("chair", 0, (239, 156, 307, 205))]),
    "000004": ((500, 406), [("car", 0, b) for b in (
        (13, 311, 84, 362), (362, 330, 500, 389), (235, 328, 334, 375), (175, 327, 252, 364),
        (139, 320, 189, 359), (108, 325, 150, 353), (84, 323, 121, 350))]),
    "000005": ((500, 375), [("chair", 0, (263, 211, 324, 339)), ("chair", 0, (165, 264, 253, 372)),
                            ("chair", 1, (5, 244, 67, 374)), ("chair", 0, (241, 194, 295, 299)),
                            ("chair", 1, (277, 186, 312, 220))]),
    "004101": ((375, 500), [("person", 0, (3, 173, 235, 305))]),
}


@pytest.mark.parametrize("image_id", sorted(XML_OBJECTS))
def test_fixture_annotations_parse_with_continuous_coordinates(voc2007, image_id):
    (width, height), objects = XML_OBJECTS[image_id]
    ann = parse_voc_xml(voc2007 / "Annotations" / f"{image_id}.xml", LABEL)
    assert (ann.width, ann.height) == (width, height)
    assert ann.labels.tolist() == [LABEL[name] for name, _, _ in objects]
    assert ann.difficult.tolist() == [bool(d) for _, d, _ in objects]
    expected = [[x1 - 1, y1 - 1, x2, y2] for _, _, (x1, y1, x2, y2) in objects]
    np.testing.assert_array_equal(ann.boxes, np.array(expected, dtype=np.float32))
    assert ann.boxes.dtype == np.float32 and ann.labels.dtype == np.int64


def test_image_sizes_match_the_annotations(voc2007):
    for split in ("trainval", "test"):
        dataset = VOCDetection(voc2007, split)
        for index in range(len(dataset)):
            image, *_ = dataset.load(index)
            (width, height), _ = XML_OBJECTS[dataset.ids[index]]
            assert image.shape == (height, width, 3) and image.dtype == np.uint8


def test_difficult_objects_are_kept_with_their_flag_or_dropped(voc2007):
    kept = VOCDetection(voc2007, "test", keep_difficult=True)
    dropped = VOCDetection(voc2007, "test", keep_difficult=False)
    index = kept.ids.index("000005")
    _, boxes, labels, difficult = kept.load(index)
    assert len(boxes) == 5 and difficult.sum() == 2
    _, boxes, labels, difficult = dropped.load(index)
    assert len(boxes) == 3 and not difficult.any()
    assert boxes.tolist() == [[262, 210, 324, 339], [164, 263, 253, 372], [240, 193, 295, 299]]


def test_eval_item_resizes_boxes_to_the_network_input(voc2007):
    dataset = VOCDetection(voc2007, "test", transform=eval_pipeline(300))
    image, target = dataset[dataset.ids.index("000005")]
    assert image.shape == (3, 300, 300) and image.dtype == torch.uint8  # normalised on the device
    # The same pixels as the step-by-step albumentations resize (cv2.resize, bilinear).
    step_by_step = eval_transform(300)(image=dataset.load(dataset.ids.index("000005"))[0], bboxes=np.zeros((0, 4)),
                                       labels=[], difficult=[])["image"]
    image = prepare_batch_images(image[None], Normalization.mb2_ssd_lite())[0]
    torch.testing.assert_close(image, step_by_step, atol=1e-6, rtol=0)
    sx, sy = 300 / 500, 300 / 375
    first = torch.tensor([262 * sx, 210 * sy, 324 * sx, 339 * sy])
    torch.testing.assert_close(target["boxes"][0], first)
    assert target["labels"].tolist() == [LABEL["chair"]] * 5
    assert target["difficult"].tolist() == [False, False, True, False, True]
    # mb2-ssd-lite's (x - 127) / 128: within [-127/128, 1] for 8-bit pixels.
    assert -127 / 128 <= image.min() < 0 < image.max() <= 1
    imagenet = VOCDetection(voc2007, "test", transform=eval_pipeline(300, "imagenet"))[0][0]
    imagenet = prepare_batch_images(imagenet[None], Normalization.imagenet())
    assert imagenet.min() < -1.5 and imagenet.max() > 1.5


def test_unknown_class_names_are_reported(voc2007):
    with pytest.raises(ValueError, match="'dog' is not in class_names"):
        parse_voc_xml(voc2007 / "Annotations" / "000001.xml", {"person": 1})


def test_datamodule_on_fixture(fixtures_dir):
    datamodule = VOCDetectionDataModule(fixtures_dir, batch_size=2, num_workers=0, image_size=128)
    assert datamodule.num_classes == 20 and datamodule.class_names == list(VOC_CLASSES)
    datamodule.setup("fit")
    assert len(datamodule.train_set) == 4 and len(datamodule.val_set) == 2
    images, targets = next(iter(datamodule.train_dataloader()))
    assert images.shape == (2, 3, 128, 128) and len(targets) == 2
    for target in targets:
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
        assert target["labels"].dtype == torch.int64 and target["difficult"].dtype == torch.bool
        assert not target["difficult"].any()  # dropped from training by default
    images, targets = next(iter(datamodule.val_dataloader()))
    assert sum(int(t["difficult"].sum()) for t in targets) == 2  # 000005's two difficult chairs


def test_collate_keeps_targets_per_image():
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
             "difficult": torch.zeros(0, dtype=torch.bool)}
    one = {"boxes": torch.ones(1, 4), "labels": torch.ones(1, dtype=torch.long),
           "difficult": torch.zeros(1, dtype=torch.bool)}
    images, targets = collate_detection([(torch.zeros(3, 8, 8), empty), (torch.ones(3, 8, 8), one)])
    assert images.shape == (2, 3, 8, 8) and targets == [empty, one]


def test_missing_voc_stops_with_layout_and_synthetic_hint(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        VOCDetectionDataModule(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "VOCdevkit" / "VOC2007") in message
    assert "Annotations/" in message and "ImageSets/Main/trainval.txt" in message
    assert "data=synthetic" in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_split_or_year_is_reported(fixtures_dir):
    with pytest.raises(DatasetNotFoundError, match="Split file 'val.txt' is missing"):
        VOCDetectionDataModule(fixtures_dir, val_split="val")
    with pytest.raises(DatasetNotFoundError, match="VOC2012"):
        VOCDetectionDataModule(fixtures_dir, years=("2007", "2012"))  # the fixture's VOC2012 has no Annotations


# ---------------------------------------------------------------- augmentation


def _valid(boxes: np.ndarray, size: int, min_size: float = 1.0) -> bool:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return bool(((boxes >= 0) & (boxes <= size)).all()
                and (boxes[:, 2] - boxes[:, 0] >= min_size - 1e-6).all()
                and (boxes[:, 3] - boxes[:, 1] >= min_size - 1e-6).all())


@pytest.mark.parametrize("augmentation", ["mb2_ssd_lite", "ssd_paper"])
def test_train_augmentation_keeps_boxes_valid_on_fixture_images(voc2007, augmentation):
    dataset = VOCDetection(voc2007, "trainval", keep_difficult=False,
                           transform=train_pipeline(160, augmentation=augmentation))
    dataset.transform.set_random_seed(0)
    labels_of = [set(dataset.load(i)[2].tolist()) for i in range(len(dataset))]
    sizes = set()
    # mb2_ssd_lite keeps boxes of any size (the reference filters none); ssd_paper drops < 1 px.
    min_size = 1.0 if augmentation == "ssd_paper" else 1e-3
    for step in range(120):
        image, target = dataset[step % len(dataset)]
        assert image.shape == (3, 160, 160) and image.dtype == torch.uint8
        assert _valid(target["boxes"].numpy(), 160, min_size)
        assert len(target["labels"]) == len(target["boxes"]) == len(target["difficult"])
        assert set(target["labels"].tolist()) <= labels_of[step % len(dataset)]
        sizes.add(len(target["boxes"]))
    assert len(sizes) > 1  # crops do drop boxes sometimes (000004 has 7 cars)


def test_ssd_crop_never_loses_every_box():
    # One small box in a corner: most random patches miss its centre.
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    crop = A.Compose([SSDRandomCrop()], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
                     seed=3)
    modes_seen = set()
    for _ in range(300):
        out = crop(image=image, bboxes=np.array([[2.0, 3.0, 14.0, 12.0]]), labels=[7])
        assert len(out["bboxes"]) == 1 and out["labels"] == [7]
        modes_seen.add(out["image"].shape[:2])
        x1, y1, x2, y2 = out["bboxes"][0]
        assert 0 <= x1 < x2 <= out["image"].shape[1] and 0 <= y1 < y2 <= out["image"].shape[0]
    assert len(modes_seen) > 10  # it did crop, not just return the whole image


def test_ssd_crop_respects_the_min_iou_and_centre_rule():
    image = np.zeros((300, 300, 3), dtype=np.uint8)
    boxes = np.array([[100.0, 100.0, 200.0, 200.0], [0.0, 0.0, 40.0, 40.0]])
    crop = A.Compose([SSDRandomCrop(min_ious=(0.7,))],
                     bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]), seed=0)
    crops = 0
    for _ in range(25):
        out = crop(image=image, bboxes=boxes, labels=[1, 2])
        h, w = out["image"].shape[:2]
        if (h, w) == (300, 300):
            continue  # no patch found in time: the whole image is the fallback
        crops += 1
        # Only the 100x100 box can reach IoU 0.7 with a patch of >= 90x90 px, so it is kept and
        # the patch holds at most 100 * 100 / 0.7 px.
        assert 1 in out["labels"] and 100 * 100 / (h * w) >= 0.7 - 1e-6
        assert 2 not in out["labels"]  # its centre (20, 20) cannot be inside such a patch
    assert crops > 5


def test_zoom_out_moves_boxes_with_the_content():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[10:20, 30:50] = (255, 0, 0)  # a red box at x 30..50, y 10..20
    zoom = A.Compose([ZoomOut(max_ratio=4.0, fill=(0, 255, 0), p=1.0)],
                     bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]), seed=1)
    for _ in range(20):
        out = zoom(image=image, bboxes=np.array([[30.0, 10.0, 50.0, 20.0]]), labels=[1])
        canvas = out["image"]
        assert canvas.shape[0] >= 40 and canvas.shape[1] >= 60
        x1, y1, x2, y2 = (int(round(v)) for v in out["bboxes"][0])
        assert (canvas[y1:y2, x1:x2] == (255, 0, 0)).all()
        assert x2 - x1 == 20 and y2 - y1 == 10
        assert (canvas[0, 0] == (0, 255, 0)).all() or (canvas[0, 0] == 0).all()


def test_augmented_image_without_boxes_gives_an_empty_target(voc2007):
    dataset = VOCDetection(voc2007, "trainval", transform=train_pipeline(96))
    dataset.transform.set_random_seed(0)
    # An annotation whose objects are all difficult (dropped) or whose boxes all vanish
    # must still produce well-formed empty tensors.
    out = dataset.transform(path=voc2007 / "JPEGImages" / f"{dataset.ids[0]}.jpg", bboxes=np.zeros((0, 4)),
                            labels=np.zeros(0, dtype=np.int64), difficult=np.zeros(0, dtype=bool))
    assert out["image"].shape == (3, 96, 96) and len(out["bboxes"]) == 0
    _, target = collate_detection([dataset[0], dataset[1]])
    assert all(t["boxes"].ndim == 2 and t["boxes"].shape[1] == 4 for t in target)


def test_dataloader_workers_draw_different_augmentations(monkeypatch, voc2007):
    import copy
    from types import SimpleNamespace

    from data import loaders

    dataset = VOCDetection(voc2007, "trainval", transform=train_pipeline(64))
    forked = copy.deepcopy(dataset)  # what a second worker process starts from
    images = []
    for worker_seed, copy_in_worker in ((1, dataset), (2, forked)):
        monkeypatch.setattr(loaders, "get_worker_info", lambda d=copy_in_worker: SimpleNamespace(dataset=d))
        torch.manual_seed(worker_seed)  # the DataLoader gives every worker its own torch seed
        loaders.seed_augmentation_worker(0)
        images.append(torch.stack([copy_in_worker[0][0] for _ in range(3)]))
    assert not torch.equal(images[0], images[1])


# ---------------------------------------------------------------- validation split


def _ids(dataset) -> list[str]:
    parts = dataset.datasets if isinstance(dataset, torch.utils.data.ConcatDataset) else [dataset]
    return [i for part in parts for i in part.ids]


def test_default_validation_reads_the_test_split_and_says_so(fixtures_dir):
    datamodule = VOCDetectionDataModule(fixtures_dir, batch_size=2, num_workers=0, image_size=96)
    datamodule.setup("fit")
    assert datamodule.validates_on_test
    assert _ids(datamodule.val_set) == _ids(VOCDetection(fixtures_dir / "VOCdevkit" / "VOC2007", "test"))


def test_val_fraction_holds_out_seeded_trainval_images(fixtures_dir):
    def split(seed):
        datamodule = VOCDetectionDataModule(fixtures_dir, batch_size=2, num_workers=0, image_size=96,
                                            val_fraction=0.25, val_seed=seed)
        datamodule.setup("fit")
        return datamodule, _ids(datamodule.train_set), _ids(datamodule.val_set)

    datamodule, train, val = split(0)
    assert not datamodule.validates_on_test
    trainval = ["000001", "000002", "000004", "004101"]
    assert len(val) == 1 and sorted(train + val) == trainval and not set(train) & set(val)
    assert split(0)[1:] == (train, val)  # same seed, same images
    assert {tuple(split(s)[2]) for s in range(8)} != {tuple(val)}  # the seed matters
    # Validation images are read like test images: eval transform, difficult boxes kept.
    image, target = datamodule.val_set[0]
    assert image.shape == (3, 96, 96) and "difficult" in target
    assert datamodule.train_set.transform is not datamodule.val_set.transform


def test_val_fraction_and_augmentation_are_checked(fixtures_dir):
    with pytest.raises(ConfigError, match="val_fraction"):
        VOCDetectionDataModule(fixtures_dir, val_fraction=1.0)
    with pytest.raises(ConfigError, match="at least 1 for validation"):
        VOCDetectionDataModule(fixtures_dir, val_fraction=0.05).setup("fit")
    with pytest.raises(ConfigError, match="data.augmentation"):
        VOCDetectionDataModule(fixtures_dir, augmentation="heavy")
