"""The mb2-ssd-lite training augmentation reproduces the reference's behaviour (qfgaohao/pytorch-ssd
``TrainAugmentation``), checked against statistics derived from the reference's rules.

The reference's ``RandomSampleCrop``, read as rules:

1. A mode is drawn uniformly from 6: keep the whole image, min IoU 0.1 / 0.3 / 0.7 / 0.9, or
   an unconstrained patch.
2. Up to 50 trials per mode: ``w ~ U(0.3 W, W)``, ``h ~ U(0.3 H, H)``; rejected unless
   ``0.5 <= h / w <= 2``; ``left = numpy.random.uniform(W - w)``, i.e. uniform between 1 and
   ``W - w`` (numpy's default ``high`` is 1), ``top`` likewise; the patch is
   ``(int(left), int(top), int(left + w), int(top + h))``.
3. The IoU test ``overlap.min() < min_iou and max_iou < overlap.max()`` has ``max_iou = inf``,
   so it never rejects: the mode's min IoU is not enforced.
4. The trial is rejected unless some box centre lies strictly inside the patch.
5. After 50 failed trials a new mode is drawn (forever).

So with p = P(one trial is accepted), every crop mode succeeds with s = 1 - (1 - p)^50 and the
whole image is kept with probability (1/6) / (1/6 + 5/6 s); the accepted patch sizes have density
proportional to [0.5 <= h/w <= 2] * P(a centre is inside | w, h). For one box with centre
(cx, cy) the inside probability factorises: P(int(left) < cx < int(left + w)) * (same in y),
where the first is the length of [floor(cx) + 1 - w, ceil(cx)) within left's range over its width.
The tests below integrate these on a fine grid and compare with our transform's empirical
statistics over a few thousand samples (seeded), within 4 standard errors.
"""
from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from data.detection_transforms import MB2PhotometricDistort, SSDRandomCrop, ZoomOut, train_transform

GRID = 1200  # integration points per side


def _inside_probability(side: float, lengths: np.ndarray, centre: float, first_offset: float = 1.0) -> np.ndarray:
    """P(int(L) < centre < int(L + length)) for L uniform between ``first_offset`` (the
    reference: 1) and side - length."""
    low = np.minimum(first_offset, side - lengths)
    high = np.maximum(first_offset, side - lengths)
    start = np.maximum(np.floor(centre) + 1 - lengths, low)
    stop = np.minimum(np.ceil(centre), high)
    return np.clip(stop - start, 0, None) / (high - low)


def reference_crop_law(width: int, height: int, centre: tuple[float, float], first_offset: float = 1.0):
    """(p, w grid, h grid, accepted density) of the reference's crop for one box centre."""
    w = 0.3 * width + (np.arange(GRID) + 0.5) * 0.7 * width / GRID
    h = 0.3 * height + (np.arange(GRID) + 0.5) * 0.7 * height / GRID
    aspect = h[:, None] / w[None, :]
    acceptance = ((aspect >= 0.5) & (aspect <= 2.0)) * np.outer(
        _inside_probability(height, h, centre[1], first_offset),
        _inside_probability(width, w, centre[0], first_offset))
    p = acceptance.mean()
    return p, w, h, acceptance / acceptance.sum()


def enforced_area_below(threshold: float, p: float, density: np.ndarray, area: np.ndarray,
                        trials: int = 50) -> float:
    """P(patch area < threshold | a patch was cut) if each mode's min IoU were enforced, for a
    box covering the whole image (IoU = the patch's area fraction)."""
    weights, below = [], []
    for min_iou in (0.1, 0.3, 0.7, 0.9, 0.0):
        allowed = density * (area >= min_iou)
        p_mode = p * allowed.sum()  # acceptance of one trial in this mode
        weights.append(1.0 - (1.0 - p_mode) ** trials)  # the mode succeeds (then a patch is cut)
        below.append(allowed[area < threshold].sum() / allowed.sum())
    return float(np.dot(weights, below) / np.sum(weights))


def whole_image_probability(p: float, trials: int = 50) -> float:
    success = 1.0 - (1.0 - p) ** trials
    return (1 / 6) / (1 / 6 + 5 / 6 * success)


def _crop_shapes(box: list[float], width: int, height: int, samples: int, rules: str = "mb2_ssd_lite",
                 seed: int = 0) -> np.ndarray:
    """(height, width) of the patch our transform cuts, for ``samples`` draws."""
    crop = A.Compose([SSDRandomCrop(rules=rules)],
                     bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]), seed=seed)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    shapes = []
    for _ in range(samples):
        out = crop(image=image, bboxes=np.array([box]), labels=[1])
        assert len(out["bboxes"]) == 1  # the only box's centre is always inside the patch
        shapes.append(out["image"].shape[:2])
    return np.array(shapes)


def _within(observed: float, expected: float, samples: int, sigmas: float = 4.0) -> bool:
    return abs(observed - expected) <= sigmas * np.sqrt(expected * (1 - expected) / samples)


def test_whole_image_fraction_with_a_corner_box_matches_the_reference_rules():
    # A small box in the corner (centre (3.5, 3.5)): few patches hold its centre, so modes
    # often exhaust their 50 trials and the whole image is kept far more than 1 time in 6.
    box, size, samples = [1.0, 1.0, 6.0, 6.0], 300, 2000
    p, *_ = reference_crop_law(size, size, (3.5, 3.5))
    expected = whole_image_probability(p)
    assert 0.4 < expected < 0.5  # the retry rule matters here
    shapes = _crop_shapes(box, size, size, samples)
    observed = (shapes == (size, size)).all(1).mean()
    assert _within(observed, expected, samples), (observed, expected)
    # The test can tell the offset rule: offsets from 0 (the SSD paper's) would give a fraction
    # outside the tolerance.
    p_from_zero, *_ = reference_crop_law(size, size, (3.5, 3.5), first_offset=0.0)
    assert not _within(whole_image_probability(p_from_zero), expected, samples)


def test_patch_sizes_and_the_unenforced_min_iou_match_the_reference_rules():
    # A box covering the whole image: every patch lies inside it, so IoU(box, patch) is the
    # patch's area fraction. Four of the five crop modes ask for IoU >= 0.1, 0.3, 0.7 or 0.9;
    # the reference enforces none of them.
    size, samples = 300, 3000
    p, w, h, density = reference_crop_law(size, size, (150.0, 150.0))
    shapes = _crop_shapes([0.0, 0.0, 300.0, 300.0], size, size, samples)
    whole = (shapes == (size, size)).all(1)
    assert _within(whole.mean(), whole_image_probability(p), samples)
    crops = shapes[~whole].astype(float)
    n = len(crops)

    area = np.outer(h, w) / size**2
    for threshold in (0.3, 0.5, 0.7, 0.9):
        expected = density[area < threshold].sum()
        observed = (crops[:, 0] * crops[:, 1] / size**2 < threshold).mean()
        assert _within(observed, expected, n), (threshold, observed, expected)
    # Had the min IoU been enforced, modes 0.7 and 0.9 would only yield patches of area >= 0.7:
    # the law of that rule is far from what we (and the reference) produce.
    enforced = enforced_area_below(0.7, p, density, area)
    assert not _within((crops[:, 0] * crops[:, 1] / size**2 < 0.7).mean(), enforced, n)
    assert density[area < 0.7].sum() - enforced > 0.2

    # Patch width and aspect ratio: Kolmogorov-Smirnov distance to the derived law (critical
    # value 1.95 / sqrt(n) at 0.1 %, plus 1 px of integer truncation).
    width_cdf = np.cumsum(density.sum(0))
    observed_cdf = np.searchsorted(np.sort(crops[:, 1]), w, side="right") / n
    assert np.abs(observed_cdf - width_cdf).max() < 1.95 / np.sqrt(n) + 1 / (0.7 * size)
    ratio = np.outer(h, 1 / w)
    for r in (0.6, 0.8, 1.0, 1.25, 1.6):
        expected = density[ratio < r].sum()
        assert _within((crops[:, 0] / crops[:, 1] < r).mean(), expected, n, sigmas=4.5), r


def test_ssd_paper_rules_enforce_the_min_iou_instead():
    # Same whole-image box under the SSD paper's rule: a patch must reach the mode's IoU, so
    # modes 0.7 / 0.9 only produce large patches.
    shapes = _crop_shapes([0.0, 0.0, 300.0, 300.0], 300, 300, 600, rules="ssd_paper")
    crops = shapes[~(shapes == (300, 300)).all(1)].astype(float)
    small = (crops[:, 0] * crops[:, 1] / 300**2 < 0.3).mean()
    assert small < 0.45  # modes 0 and 0.1 only (2 of 6 crop modes), vs > 0.5 for the reference


def test_photometric_distortion_is_additive_unclipped_and_hsv_exact():
    image = np.array([[[250, 10, 128], [0, 0, 0]]], dtype=np.uint8)
    distort = MB2PhotometricDistort()
    identity = distort.apply(image)  # no step drawn: only the float conversion and HSV round trip
    np.testing.assert_allclose(identity, image.astype(np.float32), atol=1e-3)
    bright = distort.apply(image, brightness=20.0)
    np.testing.assert_allclose(bright, image.astype(np.float32) + 20, atol=1e-3)
    assert bright.max() > 255  # not clipped
    swapped = distort.apply(image, channel_order=(2, 1, 0))
    np.testing.assert_allclose(swapped, image[..., ::-1].astype(np.float32), atol=1e-3)
    grey = distort.apply(np.full((1, 1, 3), 100, np.uint8), saturation=1.5, hue=10.0, contrast=0.5)
    np.testing.assert_allclose(grey, 50.0, atol=1e-3)  # no saturation to scale or hue to turn


def test_photometric_probabilities():
    distort = MB2PhotometricDistort()
    distort.set_random_seed(0)
    draws = [distort.get_params() for _ in range(4000)]
    for key in ("brightness", "contrast", "saturation", "hue", "channel_order"):
        assert _within(np.mean([d[key] is not None for d in draws]), 0.5, 4000), key
    assert _within(np.mean([d["contrast_first"] for d in draws]), 0.5, 4000)
    assert max(abs(d["brightness"]) for d in draws if d["brightness"] is not None) <= 32
    assert max(abs(d["hue"]) for d in draws if d["hue"] is not None) <= 18


def test_expand_probability_ratio_and_mean_fill():
    zoom = A.Compose([ZoomOut(max_ratio=4.0, fill=(127, 127, 127), p=0.5)],
                     bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]), seed=0)
    image = np.zeros((50, 80, 3), dtype=np.uint8)
    ratios = []
    for _ in range(2000):
        out = zoom(image=image, bboxes=np.array([[10.0, 10.0, 30.0, 40.0]]), labels=[1])
        height, width = out["image"].shape[:2]
        ratios.append(width / 80)
        if width > 80:
            assert (out["image"] == 127).mean() == pytest.approx(1 - 50 * 80 / (height * width))
            x1, y1 = out["bboxes"][0][:2]
            assert (out["image"][int(y1):int(y1) + 30, int(x1):int(x1) + 20] == 0).all()
    ratios = np.array(ratios)
    assert _within((ratios > 1).mean(), 0.5, 2000)
    expanded = ratios[ratios > 1]
    assert expanded.mean() == pytest.approx(2.5, abs=0.1) and expanded.max() <= 4


def test_mb2_pipeline_normalises_to_the_reference_range_and_keeps_small_boxes():
    image = np.full((100, 100, 3), 127, dtype=np.uint8)
    out = train_transform(64, augmentation="none")(image=image, bboxes=np.array([[10.0, 10.0, 11.0, 11.0]]),
                                                   labels=[1], difficult=[False])
    assert float(abs(out["image"]).max()) == 0.0  # (127 - 127) / 128
    assert len(out["bboxes"]) == 1  # 0.64 px after the resize: kept, as the reference keeps it
    white = train_transform(64, augmentation="none")(image=np.full((10, 10, 3), 255, np.uint8),
                                                     bboxes=np.zeros((0, 4)), labels=[], difficult=[])
    assert float(white["image"].max()) == pytest.approx(128 / 128)
