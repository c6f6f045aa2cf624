"""VOCMeanAveragePrecision against a port of voc_eval.py and against hand-computed values."""
import math

import numpy as np
import pytest
import torch

from tasks.metrics import VOCMeanAveragePrecision
from tests.voc_eval_reference import voc_eval


# ----------------------------------------------------------------------------------------------
# Randomized datasets, evaluated by the metric and by the reference
# ----------------------------------------------------------------------------------------------

def random_dataset(seed: int, num_images: int = 120, num_classes: int = 6):
    """VOC-like images: 1-based integer GT boxes, difficult flags, jittered/duplicate/false detections.

    Class ``num_classes`` never has ground truth (only false detections); class
    ``num_classes - 1`` only has difficult ground truth. Returns the metric's inputs (continuous
    coordinates, float32) and the reference's inputs (voc_eval coordinates, the same float32
    values), built from one set of numbers.
    """
    rng = np.random.default_rng(seed)
    preds, targets, recs = [], [], {}
    for image in range(num_images):
        width, height = rng.integers(80, 500, size=2)
        n_gt = int(rng.integers(0, 7))
        x1 = rng.integers(1, width - 10, size=n_gt)
        y1 = rng.integers(1, height - 10, size=n_gt)
        x2 = np.minimum(x1 + rng.integers(4, 200, size=n_gt), width)
        y2 = np.minimum(y1 + rng.integers(4, 200, size=n_gt), height)
        gt_voc = np.stack([x1, y1, x2, y2], axis=1).reshape(-1, 4)  # 1-based inclusive ints
        gt_labels = rng.integers(1, num_classes, size=n_gt)  # never the last class
        difficult = (rng.random(n_gt) < 0.2) | (gt_labels == num_classes - 1)
        gt_cont = gt_voc.astype(np.float64) - np.array([1, 1, 0, 0])  # the pipeline's conversion

        det_boxes, det_labels = [], []
        for box, label in zip(gt_cont, gt_labels):
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):  # misses, hits and duplicates
                size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
                kind = rng.random()
                if kind < 0.15:
                    jitter = np.zeros(4)  # exact copy
                elif kind < 0.25:
                    jitter = np.array([0, 0, -size[0] / 2, 0])  # left half: IoU exactly 0.5
                elif kind < 0.4:
                    jitter = rng.integers(-4, 5, size=4) * 0.5  # dyadic: exact ties and IoU == 0.5
                else:
                    jitter = rng.normal(0, rng.choice([0.03, 0.1, 0.25]), size=4) * size
                det_boxes.append(box + jitter)
                det_labels.append(label if rng.random() > 0.1 else rng.integers(1, num_classes + 1))
        for _ in range(int(rng.integers(0, 4))):  # background false positives, any class
            cx, cy = rng.random() * width, rng.random() * height
            w, h = rng.integers(5, 150, size=2)
            det_boxes.append(np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
            det_labels.append(rng.integers(1, num_classes + 1))
        det_boxes = np.array(det_boxes, dtype=np.float64).reshape(-1, 4)
        det_boxes = np.concatenate([np.minimum(det_boxes[:, :2], det_boxes[:, 2:]),
                                    np.maximum(det_boxes[:, :2], det_boxes[:, 2:])], axis=1)
        scores = rng.random(len(det_boxes))
        scores = np.where(rng.random(len(scores)) < 0.4, np.round(scores, 1), scores)  # score ties

        det_boxes = torch.tensor(det_boxes, dtype=torch.float32)
        scores = torch.tensor(scores, dtype=torch.float32)
        preds.append({"boxes": det_boxes, "scores": scores,
                      "labels": torch.tensor(np.array(det_labels, dtype=np.int64))})
        targets.append({"boxes": torch.tensor(gt_cont, dtype=torch.float32),
                        "labels": torch.tensor(gt_labels, dtype=torch.int64),
                        "difficult": torch.tensor(difficult)})
        recs[image] = [{"name": int(label), "difficult": int(diff), "bbox": [int(v) for v in box]}
                       for box, label, diff in zip(gt_voc, gt_labels, difficult)]
    return preds, targets, recs


def reference_aps(preds, recs, num_classes, ovthresh, use_07_metric):
    """Per-class AP from the voc_eval port (NaN where the class has no non-difficult box)."""
    aps = []
    for label in range(1, num_classes + 1):
        npos = sum(1 for objs in recs.values() for o in objs if o["name"] == label and not o["difficult"])
        if npos == 0:
            aps.append(math.nan)
            continue
        detections = []  # the detection file: image order, then box order inside an image
        for image, pred in enumerate(preds):
            boxes = pred["boxes"].double().numpy()
            for box, score, det_label in zip(boxes, pred["scores"].double().numpy(), pred["labels"].numpy()):
                if det_label == label:
                    detections.append((image, score, [box[0] + 1, box[1] + 1, box[2], box[3]]))
        aps.append(voc_eval(recs, detections, label, ovthresh=ovthresh, use_07_metric=use_07_metric)[2])
    return torch.tensor(aps, dtype=torch.float64)


@pytest.mark.parametrize("use_07_metric", [True, False])
@pytest.mark.parametrize("seed, iou_threshold", [(0, 0.5), (1, 0.5), (2, 0.3), (3, 0.7)])
def test_matches_voc_eval_reference(seed, iou_threshold, use_07_metric):
    num_classes = 6
    preds, targets, recs = random_dataset(seed, num_classes=num_classes)
    metric = VOCMeanAveragePrecision(num_classes=num_classes, iou_threshold=iou_threshold,
                                     use_07_metric=use_07_metric)
    metric.update(preds, targets)
    result = metric.compute()
    expected = reference_aps(preds, recs, num_classes, iou_threshold, use_07_metric)

    # The dataset must exercise every rule, or equality would prove little.
    assert expected[:4].isfinite().all() and expected[4:].isnan().all()
    assert 0.1 < expected[:4].min() and expected[:4].max() < 0.99
    torch.testing.assert_close(result["map_per_class"].double(), expected, rtol=0, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(result["map"].double(), expected.nanmean(), rtol=0, atol=1e-6)
    assert result["classes"].tolist() == list(range(1, num_classes + 1))


def test_multi_batch_update_equals_single_update():
    preds, targets, _ = random_dataset(seed=5, num_images=60)
    single = VOCMeanAveragePrecision(use_07_metric=False)
    single.update(preds, targets)
    batched = VOCMeanAveragePrecision(use_07_metric=False)
    bounds = [0, 1, 1, 7, 20, 21, 45, 60]  # uneven batches, one of them empty
    for start, end in zip(bounds[:-1], bounds[1:]):
        batched.update(preds[start:end], targets[start:end])
    expected, got = single.compute(), batched.compute()
    for key in ("map", "map_per_class", "classes"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, equal_nan=True)


def test_state_gathered_across_processes_equals_one_process():
    """Simulated 2-process sync: each state is concatenated rank by rank, as all_gather does."""
    preds, targets, _ = random_dataset(seed=6, num_images=40)
    # sync_on_compute=False: compute() uses the states synced by hand below.
    ranks = [VOCMeanAveragePrecision(num_classes=6, sync_on_compute=False), VOCMeanAveragePrecision(num_classes=6)]
    ranks[0].update(preds[:10], targets[:10])
    ranks[0].update(preds[10:25], targets[10:25])
    ranks[1].update(preds[25:], targets[25:])
    other = ranks[1]
    state_names = list(other._reductions)
    calls = []

    def gather(tensor, group=None):
        name = state_names[len(calls)]
        calls.append(name)
        return [tensor, torch.cat(getattr(other, name))]

    ranks[0].sync(dist_sync_fn=gather, distributed_available=lambda: True)
    assert calls == state_names
    synced = ranks[0].compute()
    whole = VOCMeanAveragePrecision(num_classes=6)
    whole.update(preds, targets)
    expected = whole.compute()
    torch.testing.assert_close(synced["map_per_class"], expected["map_per_class"], rtol=0, atol=0, equal_nan=True)


# ----------------------------------------------------------------------------------------------
# Hand-computed cases (continuous coordinates; AP11 = 11-point, AREA = all-points)
# ----------------------------------------------------------------------------------------------

def image(gt_boxes=(), gt_labels=(), difficult=None, det_boxes=(), scores=(), det_labels=()):
    target = {"boxes": torch.tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4),
              "labels": torch.tensor(gt_labels, dtype=torch.int64)}
    if difficult is not None:
        target["difficult"] = torch.tensor(difficult, dtype=torch.bool)
    pred = {"boxes": torch.tensor(det_boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(det_labels, dtype=torch.int64)}
    return pred, target


def evaluate(images, use_07_metric, **kwargs):
    """The metric's result, after checking that its per-class APs equal the voc_eval port's."""
    metric = VOCMeanAveragePrecision(use_07_metric=use_07_metric, **kwargs)
    preds, targets = [p for p, _ in images], [t for _, t in images]
    metric.update(preds, targets)
    result = metric.compute()
    recs = {}
    for index, target in enumerate(targets):
        difficult = target.get("difficult", torch.zeros(len(target["labels"]), dtype=torch.bool))
        recs[index] = [{"name": int(label), "difficult": int(diff), "bbox": [b[0] + 1, b[1] + 1, b[2], b[3]]}
                       for b, label, diff in zip(target["boxes"].tolist(), target["labels"], difficult)]
    classes = result["classes"].reshape(-1)  # torchmetrics squeezes one-element results to 0-dim
    with np.errstate(all="ignore"):
        expected = reference_aps(preds, recs, max(classes.tolist(), default=0),
                                 kwargs.get("iou_threshold", 0.5), use_07_metric)
    torch.testing.assert_close(result["map_per_class"].reshape(-1).double(), expected[classes - 1],
                               rtol=0, atol=1e-6, equal_nan=True)
    return result


A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 40.0, 40.0]
C = [50.0, 0.0, 60.0, 30.0]


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_perfect_detections(use_07_metric):
    # Every box found once, nothing else: precision 1 at every recall up to 1 -> AP 1 (both).
    images = [image([A, B], [1, 2], det_boxes=[B, A], scores=[0.3, 0.9], det_labels=[2, 1]),
              image([C], [1], det_boxes=[C], scores=[0.2], det_labels=[1])]
    result = evaluate(images, use_07_metric)
    assert result["map_per_class"].tolist() == [1.0, 1.0]
    assert result["map"].item() == 1.0


@pytest.mark.parametrize("use_07_metric, expected", [(True, 28 / 33), (False, 5 / 6)])
def test_duplicate_detection_is_false_positive(use_07_metric, expected):
    # GT A (image 0) and B (image 1), npos = 2. Ranked: A (TP), A again (FP), B (TP).
    # tp = [1, 1, 2], fp = [0, 1, 1] -> rec = [.5, .5, 1], prec = [1, .5, 2/3].
    # AP11: t in {0, .1, ..., .5} (6 points) -> max prec = 1; t in {.6, ..., 1} (5) -> 2/3;
    #       (6 + 5 * 2/3) / 11 = 28/33.  AREA: .5 * 1 + .5 * 2/3 = 5/6.
    # (Were the duplicate not counted, both would be 1.)
    images = [image([A], [1], det_boxes=[A, A], scores=[0.9, 0.8], det_labels=[1, 1]),
              image([B], [1], det_boxes=[B], scores=[0.7], det_labels=[1])]
    assert evaluate(images, use_07_metric)["map"].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_detection_of_difficult_box_is_ignored(use_07_metric):
    # GT A (difficult) and B. Ranked: A (hits only the difficult box: ignored), B (TP).
    # npos = 1 (difficult not counted); tp = [0, 1], fp = [0, 0] -> rec = [0, 1],
    # prec = [0 (0/eps guard), 1]. AP11: max prec over rec >= t is 1 for every t -> 1.
    # AREA: recall 0 -> 1 at envelope 1 -> 1. (As a FP: prec [0, .5] -> .5; counted as a
    # positive: recall stops at .5.) The unguarded original voc_eval would return NaN here.
    images = [image([A, B], [1, 1], difficult=[True, False],
                    det_boxes=[A, B], scores=[0.95, 0.9], det_labels=[1, 1])]
    assert evaluate(images, use_07_metric)["map"].item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("use_07_metric, expected", [(True, 37 / 44), (False, 5 / 6)])
def test_precision_envelope(use_07_metric, expected):
    # GT A, B, C (npos = 3). Ranked: A (TP), X (FP), B (TP), C (TP).
    # rec = [1/3, 1/3, 2/3, 1], prec = [1, 1/2, 2/3, 3/4]; envelope = [1, 3/4, 3/4, 3/4].
    # AREA: 1/3 * 1 + 1/3 * 3/4 + 1/3 * 3/4 = 5/6 (the raw precision 2/3 would give 0.806).
    # AP11: t = 0, .1, .2, .3 -> 1; the other 7 points -> 3/4: (4 + 7 * 3/4) / 11 = 37/44.
    X = [100.0, 100.0, 120.0, 120.0]
    images = [image([A, B, C], [1, 1, 1], det_boxes=[A, X, B, C], scores=[0.9, 0.8, 0.7, 0.6],
                    det_labels=[1, 1, 1, 1])]
    assert evaluate(images, use_07_metric)["map"].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("use_07_metric, expected", [(True, 6 / 11), (False, 0.5)])
def test_missed_box_limits_recall(use_07_metric, expected):
    # GT A and B, one exact detection of A: rec = [.5], prec = [1].
    # AP11: t <= .5 (6 points) -> 1, t > .5 (5 points) -> 0: 6/11. AREA: .5 * 1 = .5.
    images = [image([A, B], [1, 1], det_boxes=[A], scores=[0.9], det_labels=[1])]
    assert evaluate(images, use_07_metric)["map"].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("use_07_metric, expected", [(True, 3 / 11), (False, 0.3)])
def test_recall_of_three_tenths_misses_the_float_point(use_07_metric, expected):
    # 10 boxes, 3 found exactly: rec = [.1, .2, .3], prec = 1. voc_eval's 4th recall point is
    # np.arange(0, 1.1, .1)[3] = 0.30000000000000004 > 3/10, so AP11 = 3/11 (t = 0, .1, .2),
    # not 4/11. AREA: .3 * 1 = .3.
    boxes = [[10.0 * i, 0.0, 10.0 * i + 8, 8.0] for i in range(10)]
    images = [image(boxes, [1] * 10, det_boxes=boxes[:3], scores=[0.9, 0.8, 0.7], det_labels=[1] * 3)]
    assert evaluate(images, use_07_metric)["map"].item() == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_empty_predictions_give_zero(use_07_metric):
    # Positives exist, nothing detected: no precision/recall points -> AP 0 for each class.
    images = [image([A, B], [1, 2]), image([C], [1])]
    result = evaluate(images, use_07_metric)
    assert result["map_per_class"].tolist() == [0.0, 0.0]
    assert result["map"].item() == 0.0


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_class_without_ground_truth_is_left_out(use_07_metric):
    # Class 1: perfect (AP 1; the higher-scored class-2 detection on box A does not take it).
    # Class 2: two detections, no ground truth -> NaN, not in the mean. Class 3 (num_classes=3):
    # nothing at all -> NaN. map = 1 (it would be 1/2 or 1/3 otherwise).
    images = [image([A], [1], det_boxes=[A, A, C], scores=[0.5, 0.9, 0.8], det_labels=[1, 2, 2])]
    result = evaluate(images, use_07_metric, num_classes=3)
    assert result["classes"].tolist() == [1, 2, 3]
    assert result["map_per_class"][0].item() == 1.0
    assert result["map_per_class"][1:].isnan().all()
    assert result["map"].item() == 1.0
    # Without num_classes the classes are those seen (1 and 2); the result is the same.
    result = evaluate(images, use_07_metric)
    assert result["classes"].tolist() == [1, 2]
    assert result["map"].item() == 1.0


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_class_with_only_difficult_boxes_is_left_out(use_07_metric):
    # Class 1: GT A found (AP 1). Class 2: only a difficult box B (npos = 0), detected -> NaN.
    # Class 1 also has a missed box C -> rec = [.5]: AP11 6/11, AREA .5 (see the missed-box case).
    images = [image([A, B, C], [1, 2, 1], difficult=[False, True, False],
                    det_boxes=[A, B], scores=[0.9, 0.8], det_labels=[1, 2])]
    result = evaluate(images, use_07_metric)
    expected = 6 / 11 if use_07_metric else 0.5
    assert result["map_per_class"][0].item() == pytest.approx(expected, abs=1e-6)
    assert math.isnan(result["map_per_class"][1].item())
    assert result["map"].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_iou_must_exceed_threshold_strictly(use_07_metric):
    # GT A = 10 x 10. Detection [0, 0, 10, 5]: IoU = 50 / 100 = 0.5 exactly, not > 0.5 -> FP,
    # AP 0. Detection [0, 0, 10, 5.25]: IoU 0.525 -> TP, AP 1.
    exact_half = [image([A], [1], det_boxes=[[0.0, 0.0, 10.0, 5.0]], scores=[0.9], det_labels=[1])]
    assert evaluate(exact_half, use_07_metric)["map"].item() == 0.0
    above = [image([A], [1], det_boxes=[[0.0, 0.0, 10.0, 5.25]], scores=[0.9], det_labels=[1])]
    assert evaluate(above, use_07_metric)["map"].item() == 1.0


@pytest.mark.parametrize("use_07_metric, expected", [(True, 6 / 11), (False, 0.5)])
def test_detection_goes_to_its_best_box_even_if_taken(use_07_metric, expected):
    # GT A = [0,0,10,10] and D = [2,0,12,10]. Detection 1 = A (TP on A). Detection 2 =
    # [.5,0,10.5,10]: IoU with A = 95/105 = .905, with D = 85/115 = .739 -> its best box is A,
    # already taken -> FP (voc_eval does not fall back to D). rec = [.5, .5], prec = [1, .5]:
    # AP11 = 6/11, AREA = .5 (a fallback to D would give 1).
    D = [2.0, 0.0, 12.0, 10.0]
    images = [image([A, D], [1, 1], det_boxes=[A, [0.5, 0.0, 10.5, 10.0]], scores=[0.9, 0.8], det_labels=[1, 1])]
    assert evaluate(images, use_07_metric)["map"].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("use_07_metric, expected", [(True, 6 / 11), (False, 0.5)])
def test_equal_overlaps_go_to_the_first_box(use_07_metric, expected):
    # GT A = [0,0,10,10] then E = [2,0,12,10]. Detection 1 = [1,0,11,10] overlaps both by
    # 90/110 -> the first (A), TP. Detection 2 = A -> A is taken -> FP. rec = [.5, .5],
    # prec = [1, .5]: AP11 = 6/11, AREA = .5 (the last-max choice, E, would give 1).
    E = [2.0, 0.0, 12.0, 10.0]
    images = [image([A, E], [1, 1], det_boxes=[[1.0, 0.0, 11.0, 10.0], A], scores=[0.9, 0.8], det_labels=[1, 1])]
    assert evaluate(images, use_07_metric)["map"].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_equal_scores_keep_arrival_order(use_07_metric):
    # Equal scores: a FP in image 0 and a TP in image 1 (npos = 1). Stable order puts the FP
    # first: prec = [0, .5], rec = [0, 1] -> AP11 = .5 (every t sees max prec .5), AREA = .5.
    # With the images swapped the TP comes first: prec = [1, .5] -> AP 1 for both.
    false_positive = image(det_boxes=[B], scores=[0.5], det_labels=[1])
    true_positive = image([A], [1], det_boxes=[A], scores=[0.5], det_labels=[1])
    assert evaluate([false_positive, true_positive], use_07_metric)["map"].item() == pytest.approx(0.5)
    assert evaluate([true_positive, false_positive], use_07_metric)["map"].item() == pytest.approx(1.0)


def test_no_data_at_all():
    # No boxes anywhere: no class has positives -> map NaN, no classes (or all NaN with num_classes).
    with pytest.warns(UserWarning, match="no class has a non-difficult"):
        result = evaluate([image(), image()], True)
    assert math.isnan(result["map"].item()) and result["classes"].numel() == 0
    with pytest.warns(UserWarning, match="no class has a non-difficult"):
        result = evaluate([image()], False, num_classes=2)
    assert result["map_per_class"].isnan().all() and math.isnan(result["map"].item())


def test_per_class_names():
    images = [image([A, B], [1, 2], det_boxes=[A], scores=[0.9], det_labels=[1])]
    metric = VOCMeanAveragePrecision(class_names=["cat", "dog"])
    metric.update([p for p, _ in images], [t for _, t in images])
    named = metric.per_class(metric.compute())
    assert list(named) == ["cat", "dog"]
    assert named["cat"].item() == 1.0 and named["dog"].item() == 0.0


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preds, target, message", [
    ([{}], [], "one dict per image"),
    ([{"boxes": torch.zeros(1, 4), "labels": torch.ones(1, dtype=torch.long)}],
     [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}], "scores"),
    ([{"boxes": torch.zeros(1, 5), "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.long)}],
     [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}], r"\[N, 4\]"),
    ([{"boxes": torch.zeros(2, 4), "scores": torch.ones(1), "labels": torch.ones(2, dtype=torch.long)}],
     [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}], "one per box"),
    ([{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.ones(1)}],
     [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}], "integer"),
])
def test_update_rejects_malformed_input(preds, target, message):
    with pytest.raises(ValueError, match=message):
        VOCMeanAveragePrecision().update(preds, target)


@pytest.mark.parametrize("label, message", [(0, "background"), (4, "num_classes=3")])
def test_compute_rejects_labels_out_of_range(label, message):
    metric = VOCMeanAveragePrecision(num_classes=3)
    pred, target = image([A], [label], det_boxes=[A], scores=[0.5], det_labels=[1])
    metric.update([pred], [target])
    with pytest.raises(ValueError, match=message):
        metric.compute()


def test_constructor_rejects_inconsistent_classes():
    with pytest.raises(ValueError, match="class_names has 2 names"):
        VOCMeanAveragePrecision(num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="iou_threshold"):
        VOCMeanAveragePrecision(iou_threshold=1.5)
