"""The composed training pipelines (data.detection_pipeline, data.segmentation_pipeline,
data.classification_pipeline) against the step-by-step chains on the same draws, and the
device-side steps (data.device_transforms) against today's CPU ones."""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from data.classification_pipeline import RandomResizedCropPipeline
from data.detection_pipeline import SSDPipeline, eval_pipeline
from data.detection_transforms import MB2PhotometricDistort, _CHANNEL_ORDERS, _normalize
from data.device_transforms import (Normalization, hsv_to_rgb_opencv, mb2_photometric, prepare_batch_images,
                                    refill_outside, rgb_to_hsv_opencv)
from data.io import read_rgb
from data.segmentation_pipeline import SegmentationTrainPipeline
from data.voc_detection import VOCDetection
from data.voc_segmentation import VOCSegmentation
from tests.test_detection_augmentation import _within, reference_crop_law, whole_image_probability


@pytest.fixture(scope="module")
def voc2007(fixtures_dir):
    return fixtures_dir / "VOCdevkit" / "VOC2007"


def _chain_boxes(boxes: np.ndarray, plan) -> np.ndarray:
    """The reference's box steps one by one (qfgaohao's rules, in pixels): Expand shifts, the
    crop keeps centres strictly inside and clips, the mirror flips, the resize scales."""
    boxes = boxes.astype(np.float64) + np.array([*plan.offset, *plan.offset])
    x0, y0, x1, y1 = plan.patch
    if plan.patch != (0, 0, *plan.canvas):
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        boxes = boxes[(x0 < centres[:, 0]) & (y0 < centres[:, 1]) & (x1 > centres[:, 0]) & (y1 > centres[:, 1])]
        boxes[:, :2] = np.maximum(boxes[:, :2], (x0, y0)) - (x0, y0)
        boxes[:, 2:] = np.minimum(boxes[:, 2:], (x1, y1)) - (x0, y0)
    width, height = x1 - x0, y1 - y0
    if plan.flip:
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    return boxes * plan.size / np.array([width, height, width, height])


def _chain_image(image: np.ndarray, plan, fill: float) -> np.ndarray:
    """Expand canvas, crop, mirror, cv2.resize: the chain's pixels (no photometric step)."""
    height, width = image.shape[:2]
    canvas = np.full((plan.canvas[1], plan.canvas[0], 3), fill, np.uint8)
    canvas[plan.offset[1]:plan.offset[1] + height, plan.offset[0]:plan.offset[0] + width] = image
    x0, y0, x1, y1 = plan.patch
    patch = canvas[y0:y1, x0:x1]
    if plan.flip:
        patch = patch[:, ::-1]
    return cv2.resize(np.ascontiguousarray(patch), (plan.size, plan.size), interpolation=cv2.INTER_LINEAR)


def test_composed_ssd_geometry_equals_the_step_by_step_chain_on_the_same_draws(voc2007):
    dataset = VOCDetection(voc2007, "trainval")
    pipeline = SSDPipeline(300, reduced_decode=False)
    expanded = 0
    for seed in range(24):
        index = seed % len(dataset)
        annotation = dataset.annotation(index)
        path = voc2007 / "JPEGImages" / f"{dataset.ids[index]}.jpg"
        pipeline.set_random_seed(seed)
        out = pipeline(path=path, bboxes=annotation.boxes, labels=annotation.labels, difficult=annotation.difficult)
        # Replay the same draws and run the chain step by step.
        image = read_rgb(path)
        height, width = image.shape[:2]
        boxes = np.clip(annotation.boxes, 0, [width, height, width, height])
        pipeline.set_random_seed(seed)
        pipeline.py_random.random()  # the chain's Compose draw
        pipeline.draw_photometric()
        plan = pipeline.plan(width, height, boxes)
        np.testing.assert_allclose(out["bboxes"], _chain_boxes(boxes, plan), atol=1e-3)
        assert len(out["labels"]) == len(out["bboxes"])
        ours = out["image"].permute(1, 2, 0).numpy().astype(int)
        chain = _chain_image(image, plan, 127).astype(int)
        difference = np.abs(ours - chain)
        # <= 1 grey level (OpenCV's warp quantises positions to 1/32 px) except, when the output
        # shows Expand fill, the outermost row/column (see data.detection_pipeline).
        assert difference[1:-1, 1:-1].max() <= 1, (seed, plan)
        if not plan.shows_fill():
            assert difference.max() <= 1
        expanded += plan.canvas != (width, height)
    assert 4 <= expanded <= 20  # both branches were exercised


def test_reduced_decode_is_used_only_when_it_keeps_full_output_resolution(voc2007, monkeypatch):
    from data import detection_pipeline

    dataset = VOCDetection(voc2007, "trainval")
    annotation = dataset.annotation(0)
    path = voc2007 / "JPEGImages" / f"{dataset.ids[0]}.jpg"
    decoded = []
    real_warp = detection_pipeline.warp
    monkeypatch.setattr(detection_pipeline, "warp", lambda image, plan, fill: decoded.append(
        (image.shape, plan)) or real_warp(image, plan, fill))
    pipeline = SSDPipeline(96)
    full = SSDPipeline(96, reduced_decode=False)
    for seed in range(30):
        pipeline.set_random_seed(seed)
        fast = pipeline(path=path, bboxes=annotation.boxes, labels=annotation.labels, difficult=annotation.difficult)
        full.set_random_seed(seed)
        slow = full(path=path, bboxes=annotation.boxes, labels=annotation.labels, difficult=annotation.difficult)
        np.testing.assert_array_equal(fast["bboxes"], slow["bboxes"])  # geometry does not depend on it
        # a DCT-scaled decode is a smoother (area-like) resampling: close, not equal
        assert np.abs(fast["image"].float() - slow["image"].float()).mean() < 12
    reduced = [(shape, plan) for shape, plan in decoded[::2] if shape[1] < plan.width]
    assert reduced, "no sample was decoded at reduced scale"
    for shape, plan in reduced:  # >= 1 decoded pixel per output pixel
        assert shape[1] / plan.width >= max(plan.scale) and shape[0] / plan.height >= max(plan.scale)


def test_ssd_pipeline_draws_follow_the_reference_probabilities():
    pipeline = SSDPipeline(300)
    pipeline.set_random_seed(0)
    box = np.array([[0.0, 0.0, 300.0, 300.0]])
    n = 1500
    photometric, plans = [], []
    for _ in range(n):
        photometric.append(pipeline.draw_photometric())
        plans.append(pipeline.plan(300, 300, box))
    photometric = np.array(photometric)
    for column in (0, 2, 3, 4, 5):  # each step p=0.5
        assert _within((~np.isnan(photometric[:, column])).mean(), 0.5, n)
    assert _within(photometric[:, 1].mean(), 0.5, n)
    assert np.nanmax(np.abs(photometric[:, 0])) <= 32 and np.nanmax(np.abs(photometric[:, 4])) <= 18
    expanded = np.array([p.canvas != (300, 300) for p in plans])
    assert _within(expanded.mean(), 0.5, n)
    assert _within(np.mean([p.flip for p in plans]), 0.5, n)
    # Without Expand the box covers the image: the crop law is test_detection_augmentation's.
    plain = [p for p, e in zip(plans, expanded) if not e]
    p, *_ = reference_crop_law(300, 300, (150.0, 150.0))
    whole = np.mean([pl.patch == (0, 0, 300, 300) for pl in plain])
    assert _within(whole, whole_image_probability(p), len(plain))


def test_photometric_on_the_device_equals_the_reference_distortion():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    distort = MB2PhotometricDistort()
    distort.set_random_seed(3)
    for _ in range(12):
        params = distort.get_params()
        reference = distort.apply(image, **params)
        order = params["channel_order"]
        row = [params["brightness"], float(params["contrast_first"]), params["contrast"], params["saturation"],
               params["hue"], None if order is None else _CHANNEL_ORDERS.index(order)]
        row = torch.tensor([[np.nan if v is None else v for v in row]], dtype=torch.float32)
        ours = mb2_photometric(torch.from_numpy(image).permute(2, 0, 1)[None].float(), row)
        np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), reference, atol=2e-3)


def test_hsv_steps_on_an_accelerator_equal_opencvs_on_the_cpu():
    from data.device_transforms import _hsv_steps_opencv, _hsv_steps_torch

    rng = np.random.default_rng(4)
    images = torch.from_numpy(rng.uniform(-40, 420, (3, 3, 16, 16)).astype(np.float32))  # unclipped
    saturation = torch.tensor([1.3, np.nan, 0.6])
    hue = torch.tensor([np.nan, -17.0, 12.0])
    torch.testing.assert_close(_hsv_steps_torch(images, saturation, hue), _hsv_steps_opencv(images, saturation, hue),
                               atol=2e-3, rtol=1e-5)


def test_opencv_hsv_round_trip_matches_for_values_outside_0_255():
    rng = np.random.default_rng(1)
    pixels = rng.uniform(-40, 420, (1, 16, 16, 3)).astype(np.float32)  # unclipped, as the reference sees
    hsv = rgb_to_hsv_opencv(torch.from_numpy(pixels).permute(0, 3, 1, 2))
    expected = cv2.cvtColor(pixels[0], cv2.COLOR_RGB2HSV)
    np.testing.assert_allclose(hsv[0].permute(1, 2, 0).numpy(), expected, atol=1e-3)
    back = hsv_to_rgb_opencv(torch.from_numpy(expected).permute(2, 0, 1)[None])
    np.testing.assert_allclose(back[0].permute(1, 2, 0).numpy(), cv2.cvtColor(expected, cv2.COLOR_HSV2RGB),
                               atol=1e-3)


def test_expand_fill_is_restored_after_the_distortion():
    images = torch.full((1, 3, 4, 4), 200.0)
    out = refill_outside(images, torch.tensor([[1.0, 0.0, 3.0, 4.0]]), torch.tensor([[127.0, 127.0, 127.0]]))
    assert (out[0, :, :, 0] == 127).all() and (out[0, :, :, 3] == 127).all() and (out[0, :, :, 1:3] == 200).all()


@pytest.mark.parametrize("normalization", ["mb2_ssd_lite", "imagenet"])
def test_device_normalisation_equals_todays_cpu_normalisation(normalization):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    cpu = _normalize(normalization)(image=image)["image"]  # albumentations, as the loaders did
    device = Normalization.mb2_ssd_lite() if normalization == "mb2_ssd_lite" else Normalization.imagenet()
    ours = prepare_batch_images(torch.from_numpy(image).permute(2, 0, 1)[None], device)
    torch.testing.assert_close(ours[0], torch.from_numpy(cpu).permute(2, 0, 1), atol=1e-5, rtol=1e-5)


def test_task_normalises_uint8_batches_after_the_transfer(voc2007):
    from tasks.detection import DetectionTask

    task = DetectionTask({"name": "mv2_e2", "width_mult": 0.35}, num_classes=20)
    dataset = VOCDetection(voc2007, "test", transform=eval_pipeline(64))
    image, target = dataset[0]
    images, targets = task.on_after_batch_transfer((image[None], [target]), 0)
    expected = (image.float() - 127) / 128
    torch.testing.assert_close(images[0], expected)
    train = VOCDetection(voc2007, "trainval", transform=SSDPipeline(64))
    train.transform.set_random_seed(1)
    batch = [train[i] for i in range(3)]
    images, _ = task.on_after_batch_transfer((torch.stack([b[0] for b in batch]), [b[1] for b in batch]), 0)
    assert images.dtype == torch.float32 and images.shape == (3, 3, 64, 64)


def test_composed_segmentation_equals_the_step_by_step_chain(fixtures_dir):
    dataset = VOCSegmentation(fixtures_dir / "VOCdevkit" / "VOC2012", "train")
    for crop in (200, 480):  # crops inside the rescaled image, and padded ones
        pipeline = SegmentationTrainPipeline(crop, reduced_decode=False)
        for seed in range(6):
            index = seed % len(dataset)
            image, mask = dataset.load(index)
            pipeline.set_random_seed(seed)
            out = pipeline(path=dataset.image_paths[index], mask=mask)
            pipeline.set_random_seed(seed)
            pipeline.py_random.random()  # the chain's Compose draw
            plan = pipeline.plan(image.shape[1], image.shape[0])
            size = plan["scaled"]
            x0, y0 = plan["origin"]
            chain = A.Compose([
                A.PadIfNeeded(crop, crop, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255),
                A.Crop(x0, y0, x0 + crop, y0 + crop), A.HorizontalFlip(p=float(plan["flip"]))])(
                image=cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
                mask=cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))
            difference = np.abs(out["image"].permute(1, 2, 0).numpy().astype(int) - chain["image"].astype(int))
            assert difference.max() <= 1, (crop, seed, plan)
            np.testing.assert_array_equal(out["mask"].numpy(), chain["mask"])


def test_composed_random_resized_crop_equals_the_chain_pixel_for_pixel(fixtures_dir):
    paths = sorted((fixtures_dir / "classification").glob("*/*.jpg"))
    pipeline = RandomResizedCropPipeline(48, reduced_decode=False)
    for seed in range(9):
        path = paths[seed % len(paths)]
        pipeline.set_random_seed(seed)
        ours = pipeline(path=path)["image"].permute(1, 2, 0).numpy()
        image = read_rgb(path)
        pipeline.set_random_seed(seed)
        pipeline.py_random.random()  # the chain's Compose draw
        x0, y0, x1, y1 = pipeline.crop_box(image.shape[1], image.shape[0])
        flip = pipeline.py_random.random() < 0.5
        chain = A.Compose([A.Crop(x0, y0, x1, y1), A.Resize(48, 48), A.HorizontalFlip(p=float(flip))])(image=image)
        np.testing.assert_array_equal(ours, chain["image"])
    # The crop law is albumentations' RandomResizedCrop's: the same boxes from the same draws.
    reference = A.RandomResizedCrop(size=(48, 48), scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3))
    for seed in range(20):
        reference.set_random_seed(seed)
        pipeline.set_random_seed(seed)
        expected = reference.get_params_dependent_on_data({"shape": (200, 300)}, {})["crop_coords"]
        assert pipeline.crop_box(300, 200) == tuple(expected)


def test_distortion_after_the_warp_matches_distortion_before_it_within_a_grey_level(voc2007):
    """The reference distorts the full image in float, then expands, crops and resizes; the
    composed pipeline distorts the 300x300 output on the device. Same draws, same numbers but
    where the resize blends pixels of different colours (the HSV steps are not linear)."""
    dataset = VOCDetection(voc2007, "trainval")
    pipeline = SSDPipeline(300, reduced_decode=False)
    distort = MB2PhotometricDistort()
    differences = []
    for seed in range(12):
        index = seed % len(dataset)
        annotation = dataset.annotation(index)
        path = voc2007 / "JPEGImages" / f"{dataset.ids[index]}.jpg"
        pipeline.set_random_seed(seed)
        out = pipeline(path=path, bboxes=annotation.boxes, labels=annotation.labels, difficult=annotation.difficult)
        ours = mb2_photometric(out["image"][None].float(), out["photometric"][None])
        ours = refill_outside(ours, out["image_rect"][None], out["fill"][None])[0].permute(1, 2, 0).numpy()
        image = read_rgb(path)
        height, width = image.shape[:2]
        pipeline.set_random_seed(seed)
        pipeline.py_random.random()  # the chain's Compose draw
        pipeline.draw_photometric()
        plan = pipeline.plan(width, height, np.clip(annotation.boxes, 0, [width, height, width, height]))
        p = out["photometric"].numpy()
        value = [None if np.isnan(v) else float(v) for v in p]
        distorted = distort.apply(image, brightness=value[0], contrast_first=bool(p[1] > 0.5), contrast=value[2],
                                  saturation=value[3], hue=value[4],
                                  channel_order=None if value[5] is None else _CHANNEL_ORDERS[int(value[5])])
        canvas = np.full((plan.canvas[1], plan.canvas[0], 3), 127.0, np.float32)
        canvas[plan.offset[1]:plan.offset[1] + height, plan.offset[0]:plan.offset[0] + width] = distorted
        x0, y0, x1, y1 = plan.patch
        patch = canvas[y0:y1, x0:x1][:, ::-1] if plan.flip else canvas[y0:y1, x0:x1]
        reference = cv2.resize(np.ascontiguousarray(patch), (300, 300), interpolation=cv2.INTER_LINEAR)
        differences.append(np.abs(ours - reference).ravel())
    differences = np.concatenate(differences)
    # measured on all six fixture images x 10 draws: 99 % within 0.9 grey levels, 0.8 % above 1
    assert np.percentile(differences, 99) <= 1.0 and (differences > 1).mean() < 0.02


def test_jpeg_decoder_gives_pils_pixels_and_pils_errors(voc2007, tmp_path):
    from PIL import Image

    from data.errors import ImageDecodeError

    path = voc2007 / "JPEGImages" / "000005.jpg"
    full = read_rgb(path)  # PIL
    np.testing.assert_array_equal(read_rgb(path, draft=lambda w, h: None), full)  # OpenCV, full size
    half = read_rgb(path, draft=lambda w, h: (w // 2, h // 2))
    with Image.open(path) as image:
        image.draft("RGB", (image.size[0] // 2, image.size[1] // 2))
        np.testing.assert_array_equal(half, np.asarray(image.convert("RGB")))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(path.read_bytes()[:4000])  # OpenCV would fill the rest grey
    with pytest.raises(ImageDecodeError, match="truncated"):
        read_rgb(truncated, draft=lambda w, h: None)


def test_benchmark_prints_ours_and_the_anchors_per_task(capsys):
    from benchmarks import data_pipeline

    pipelines = data_pipeline.main(["--tasks", "detection", "classification", "--rounds", "1", "--samples", "2",
                                    "--image-size", "64"])
    printed = capsys.readouterr().out
    assert "anchor steps re-implemented" in printed and "torchvision RandomResizedCrop [anchor]" in printed
    assert {p.task for p in pipelines} == {"detection", "classification"}
    assert all(p.samples == 2 and p.rate > 0 for p in pipelines)
    with pytest.raises(Exception, match="not a qfgaohao/pytorch-ssd checkout"):
        data_pipeline.main(["--tasks", "detection", "--anchor-path", "/nonexistent", "--rounds", "1"])


def test_a_seed_gives_the_step_by_step_chains_very_samples(fixtures_dir, voc2007):
    """Same draws in the same order as the albumentations chains (their Compose's own draw
    included): a run's augmentation for (seed, epoch, index) is what it was before."""
    from data.classification import ImageClassificationDataset
    from data.detection_pipeline import train_pipeline
    from data.detection_transforms import train_transform as detection_chain
    from data.loaders import SeededAugmentation
    from data.segmentation_transforms import train_transform as segmentation_chain
    from data.transforms import classification_train_transform

    def pair(make, new, old):
        return SeededAugmentation(make(new), 5), SeededAugmentation(make(old), 5)

    voc2012 = fixtures_dir / "VOCdevkit" / "VOC2012"
    ours, chain = pair(lambda t: VOCSegmentation(voc2012, "train", transform=t),
                       SegmentationTrainPipeline(200, reduced_decode=False), segmentation_chain(200))
    for key in [(i, e) for e in range(3) for i in range(len(ours))]:
        (image, mask), (old_image, old_mask) = ours[key], chain[key]
        assert (image.int() - old_image.int()).abs().max() <= 1 and torch.equal(mask, old_mask)
    samples = [(str(p), 0) for p in sorted((fixtures_dir / "classification").glob("*/*.jpg"))]
    ours, chain = pair(lambda t: ImageClassificationDataset(samples, t),
                       RandomResizedCropPipeline(48, reduced_decode=False), classification_train_transform(48))
    for key in [(i, e) for e in range(2) for i in range(len(samples))]:
        assert torch.equal(ours[key][0], chain[key][0])
    ours, chain = pair(lambda t: VOCDetection(voc2007, "trainval", keep_difficult=False, transform=t),
                       train_pipeline(300), detection_chain(300))
    for key in [(i, e) for e in range(5) for i in range(len(ours))]:
        torch.testing.assert_close(ours[key][1]["boxes"], chain[key][1]["boxes"], atol=1e-3, rtol=0)
