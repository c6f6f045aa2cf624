"""SSD-Lite: priors, box coding, matching, loss, post-processing, the task and its configs."""
from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from heads.priors import SSDPriors, box_coder, priors_center_form
from heads.ssd_lite import SSDLiteHead, SSDLiteOutput, postprocess_detections
from tasks.detection import FEATURE_ROLES, DetectionTask
from tasks.ssd_loss import SSDLoss, hard_negative_mask, match_priors, pad_targets
from tests.helpers import compose_config

MAPS_300 = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models on a shared CPU run faster (and steadier) without intra-op threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _xyxy(cx: float, cy: float, w: float, h: float) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


# ---------------------------------------------------------------- priors


def test_priors_at_300_match_mb2_ssd_lite_sizes_and_order():
    priors = SSDPriors()((300, 300), MAPS_300)
    assert priors.shape == (3000, 4)
    c = 0.5 / 19 * 300  # first centre of the 19x19 map
    r2, r3 = math.sqrt(2), math.sqrt(3)
    expected_first = [
        _xyxy(c, c, 60, 60),
        _xyxy(c, c, math.sqrt(60 * 105), math.sqrt(60 * 105)),
        _xyxy(c, c, 60 * r2, 60 / r2),
        _xyxy(c, c, 60 / r2, 60 * r2),
        _xyxy(c, c, 60 * r3, 60 / r3),
        _xyxy(c, c, 60 / r3, 60 * r3),
    ]
    torch.testing.assert_close(priors[:6], torch.tensor(expected_first), rtol=0, atol=1e-4)
    # Second location of the first map moves one cell (300/19 px) to the right.
    torch.testing.assert_close(priors[6], torch.tensor(_xyxy(c + 300 / 19, c, 60, 60)), rtol=0, atol=1e-4)
    # First prior of the 10x10 map.
    torch.testing.assert_close(priors[19 * 19 * 6], torch.tensor(_xyxy(15, 15, 105, 105)), rtol=0, atol=1e-4)
    # The 1x1 map: sizes from 285 and 330 px, clipped to the image (300 px) in centre form.
    expected_last = [
        _xyxy(150, 150, 285, 285),
        _xyxy(150, 150, 300, 300),  # sqrt(285 * 330) = 306.7 -> 300
        _xyxy(150, 150, 300, 285 / r2),  # 285 * sqrt(2) = 403 -> 300
        _xyxy(150, 150, 285 / r2, 300),
        _xyxy(150, 150, 300, 285 / r3),
        _xyxy(150, 150, 285 / r3, 300),
    ]
    torch.testing.assert_close(priors[-6:], torch.tensor(expected_last), rtol=0, atol=1e-4)
    wh = priors_center_form(priors)[:, 2:]
    assert wh.max() <= 300 + 1e-4 and wh.min() > 0


def test_priors_follow_feature_map_and_image_size():
    maps = [(10, 10), (5, 5), (3, 3), (2, 2), (1, 1), (1, 1)]
    priors = SSDPriors()((160, 160), maps)
    assert priors.shape == (sum(h * w for h, w in maps) * 6, 4)
    centres = priors_center_form(priors)
    # Centre of the last location of the 3x3 map: ((2 + 0.5) / 3) * 160; size 150/300 * 160.
    start = (100 + 25 + 9) * 6 - 6
    torch.testing.assert_close(centres[start, :2], torch.tensor([2.5 / 3 * 160] * 2), rtol=0, atol=1e-4)
    torch.testing.assert_close(centres[start, 2:], torch.tensor([80.0, 80.0]), rtol=0, atol=1e-4)
    # Non-square input: x and y centres use their own map sizes.
    wide = SSDPriors()((100, 200), [(4, 8)] + [(1, 1)] * 5)
    cxcy = priors_center_form(wide)[: 4 * 8 * 6 : 6, :2]
    torch.testing.assert_close(cxcy[1] - cxcy[0], torch.tensor([25.0, 0.0]))
    torch.testing.assert_close(cxcy[8] - cxcy[0], torch.tensor([0.0, 25.0]))


def test_priors_reject_bad_box_sizes():
    with pytest.raises(ValueError, match="num_maps \\+ 1"):
        SSDPriors(num_maps=6, box_sizes=(60, 105, 150))
    with pytest.raises(ValueError, match="increasing"):
        SSDPriors(num_maps=2, box_sizes=(60, 50, 70))


# ---------------------------------------------------------------- box coding


def test_box_coding_uses_ssd_variances_and_round_trips():
    coder = box_coder()
    prior = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    gt = torch.tensor([[1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 20.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    offsets = coder.encode_single(gt, prior)
    # dx = (gx - px) / pw / 0.1 ; dw = log(gw / pw) / 0.2
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0], [5.0, 0.0, math.log(2) / 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(offsets, expected)

    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=generator) * 200
    priors = torch.cat([xy, xy + 5 + torch.rand(50, 2, generator=generator) * 100], 1)
    xy = torch.rand(50, 2, generator=generator) * 200
    boxes = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=generator) * 150], 1)
    torch.testing.assert_close(coder.decode_single(coder.encode_single(boxes, priors), priors), boxes,
                               rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------- matching


def _targets(*boxes_per_image):
    return [{"boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4),
             "labels": torch.arange(1, len(b) + 1)} for b in boxes_per_image]


def test_matching_threshold_and_forced_best_prior():
    priors = torch.tensor([
        [0, 0, 10, 10],  # IoU 1.0 with gt A
        [0, 0, 10, 20],  # IoU 0.5 with A: positive (>= threshold)
        [0, 0, 10, 21],  # IoU 0.476 with A: negative
        [100, 100, 110, 110],  # IoU 0.25 with B, B's best prior: forced positive
        [200, 200, 210, 210],  # overlaps nothing
    ], dtype=torch.float32)
    gt = pad_targets(_targets([[0, 0, 10, 10], [100, 100, 120, 120]]), torch.device("cpu"))
    match = match_priors(priors, gt.boxes, gt.valid, iou_threshold=0.5)
    assert match.positive.tolist() == [[True, True, False, True, False]]
    assert match.matched_idx[0, [0, 1, 3]].tolist() == [0, 0, 1]


def test_forced_match_assigns_the_prior_to_the_box_it_is_best_for():
    # Both boxes have prior 0 as their best prior; the reference loop lets the last box win,
    # although prior 0 overlaps box 0 more (1.0 vs 0.69).
    priors = torch.tensor([[0, 0, 10, 10], [100, 100, 110, 110]], dtype=torch.float32)
    gt = pad_targets(_targets([[0, 0, 10, 10], [0, 0, 12, 12]]), torch.device("cpu"))
    match = match_priors(priors, gt.boxes, gt.valid)
    assert match.matched_idx[0, 0].item() == 1
    assert match.positive.tolist() == [[True, False]]


def test_matching_ignores_padding_and_images_without_boxes():
    priors = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=torch.float32)
    gt = pad_targets(_targets([[20, 20, 30, 30], [40, 40, 50, 52]], [], [[0, 0, 10, 10]]),
                     torch.device("cpu"))
    assert gt.boxes.shape == (3, 2, 4) and gt.valid.tolist() == [[True, True], [False, False], [True, False]]
    match = match_priors(priors, gt.boxes, gt.valid)
    assert match.positive.tolist() == [[False, True, True], [False, False, False], [True, False, False]]
    assert match.matched_idx[0, 1:].tolist() == [0, 1]
    # No box in the whole batch: still well-formed, nothing positive.
    empty = pad_targets(_targets([], []), torch.device("cpu"))
    assert not match_priors(priors, empty.boxes, empty.valid).positive.any()


# ---------------------------------------------------------------- loss


def test_hard_negatives_are_three_per_positive_with_highest_loss():
    generator = torch.Generator().manual_seed(1)
    background_loss = torch.rand(3, 40, generator=generator)
    positive = torch.zeros(3, 40, dtype=torch.bool)
    positive[0, [3, 17]] = True
    positive[2, :12] = True  # 12 positives, 28 negatives: all 28 < 36 requested are taken
    selected = hard_negative_mask(background_loss, positive, 3)
    negatives = selected & ~positive
    assert negatives.sum(1).tolist() == [6, 0, 28]
    assert (selected & positive).equal(positive)
    threshold = background_loss[0][~positive[0]].topk(6).values.min()
    assert (background_loss[0][negatives[0]] >= threshold).all()


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    priors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60], [80, 80, 90, 90],
                           [20, 20, 30, 30], [30, 0, 40, 10]], dtype=torch.float32)
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 12.0]]), "labels": torch.tensor([2])}]
    logits = torch.randn(1, 6, 3)
    regression = torch.randn(1, 6, 4)
    out = SSDLoss(neg_pos_ratio=3)(logits, regression, priors, targets)

    # Positives: priors 0 (IoU 0.83) and 1 (IoU 0.6); negatives: the 6 hardest of 4 = all 4.
    coder = box_coder()
    gt = targets[0]["boxes"].expand(2, 4)
    box = torch.nn.functional.smooth_l1_loss(regression[0, :2], coder.encode_single(gt, priors[:2]), reduction="sum")
    labels = torch.tensor([2, 2, 0, 0, 0, 0])
    cls = torch.nn.functional.cross_entropy(logits[0], labels, reduction="sum")
    assert out["num_positives"].item() == 2
    torch.testing.assert_close(out["loss_box"], box / 2)
    torch.testing.assert_close(out["loss_cls"], cls / 2)
    torch.testing.assert_close(out["loss"], (box + cls) / 2)


def test_loss_with_images_without_boxes_is_finite_and_zero_when_all_empty():
    head_out = torch.randn(2, 30, 4, requires_grad=True), torch.randn(2, 30, 4, requires_grad=True)
    xy = torch.rand(30, 2) * 90
    priors = torch.cat([xy, xy + 10], 1)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    out = SSDLoss()(*head_out, priors, [empty, empty])
    assert out["loss"].item() == 0.0 and out["num_positives"].item() == 0
    out["loss"].backward()
    mixed = SSDLoss()(*head_out, priors, [empty, _targets([[5, 5, 40, 40]])[0]])
    assert torch.isfinite(mixed["loss"]) and mixed["loss"].item() > 0


# ---------------------------------------------------------------- post-processing


def _logits_from_probs(probs):
    return torch.tensor(probs).log()


def test_postprocess_threshold_per_class_nms_topk_and_pixels():
    priors = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]], dtype=torch.float32)
    probs = [[  # (background, class 1, class 2) per prior
        [0.05, 0.9, 0.05],
        [0.05, 0.8, 0.15],  # IoU 0.82 with prior 0
        [0.395, 0.005, 0.6],  # class 1 below the 0.01 threshold
        [0.97, 0.005, 0.025],
    ]]
    output = SSDLiteOutput(_logits_from_probs(probs), torch.zeros(1, 4, 4), priors)
    (det,) = postprocess_detections(output, (100, 100), score_thresh=0.01, nms_iou=0.45)
    # class 1: prior 0 suppresses prior 1; class 2: 0.6 (prior 2), 0.15 (prior 1) survive,
    # priors 0 and 3 (same box) are suppressed by prior 1.
    assert det["labels"].tolist() == [1, 2, 2]
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.6, 0.15]))
    torch.testing.assert_close(det["boxes"], priors[[0, 2, 1]])

    (top2,) = postprocess_detections(output, (100, 100), max_detections=2)
    assert top2["labels"].tolist() == [1, 2]
    (one_per_class,) = postprocess_detections(output, (100, 100), candidates_per_class=1)
    torch.testing.assert_close(one_per_class["scores"], torch.tensor([0.9, 0.6]))
    (strict,) = postprocess_detections(output, (100, 100), score_thresh=0.5)
    assert strict["labels"].tolist() == [1, 2]


def test_postprocess_decodes_offsets_clips_on_request_and_separates_images():
    priors = torch.tensor([[10, 10, 30, 30], [85, 85, 95, 115]], dtype=torch.float32)
    logits = _logits_from_probs([[[0.1, 0.9], [0.2, 0.8]], [[0.995, 0.005], [0.3, 0.7]]])
    regression = torch.zeros(2, 2, 4)
    regression[0, 0, 0] = 1.0  # dx = 1 -> centre moves 0.1 * width = 2 px
    output = SSDLiteOutput(logits, regression, priors)
    # mb2-ssd-lite does not clip before NMS (the default); clip_boxes=True clips to H=100, W=120.
    first, second = postprocess_detections(output, (100, 120))
    torch.testing.assert_close(first["boxes"], torch.tensor([[12.0, 10, 32, 30], [85, 85, 95, 115]]))
    first, second = postprocess_detections(output, (100, 120), clip_boxes=True)
    torch.testing.assert_close(first["boxes"], torch.tensor([[12.0, 10, 32, 30], [85, 85, 95, 100]]))
    # Image 2: prior 0 scores 0.005, below the threshold.
    assert second["labels"].tolist() == [1] and second["scores"].item() == pytest.approx(0.7)


# ---------------------------------------------------------------- head and task


def test_head_channels_come_from_feature_info():
    for width in (0.35, 1.0):
        task = DetectionTask({"name": "cog_e2", "width_mult": width}, num_classes=3)
        expected = [task.backbone.feature_for(role).channels for role in FEATURE_ROLES]
        first_predictor = task.head.classification.module_list[0][0][0]
        assert first_predictor.in_channels == expected[0]
        assert task.head.extras[0].conv[0][0].in_channels == expected[1]
    # The last map gets a plain 1x1 conv, the others separable predictors; 6 anchors everywhere.
    last = task.head.regression.module_list[-1]
    assert isinstance(last, torch.nn.Conv2d) and last.kernel_size == (1, 1) and last.out_channels == 6 * 4
    assert task.head.classification.module_list[2][1].out_channels == 6 * 4  # 3 classes + background
    assert [block.out_channels for block in task.head.extras] == [512, 256, 256, 64]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("backbone", ["mv2_e2", "cog_e2"])
def test_task_forward_and_training_step(backbone):
    torch.manual_seed(0)
    task = DetectionTask({"name": backbone, "width_mult": 0.35}, num_classes=3)
    images = torch.randn(2, 3, 128, 128)
    # Boxes of three sizes, so positives fall on the first map (25.6 px priors), a middle one
    # and the last (122 px): every predictor and extra layer gets a gradient.
    targets = [{"boxes": torch.tensor([[40.0, 40.0, 66.0, 66.0], [10.0, 20.0, 70.0, 90.0], [0.0, 0.0, 128.0, 128.0]]),
                "labels": torch.tensor([2, 1, 3]), "difficult": torch.tensor([False, False, False])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                "difficult": torch.zeros(0, dtype=torch.bool)}]
    output = task(images)
    # 128 px: maps 8, 4, 2, 1, 1, 1 -> (64 + 16 + 4 + 1 + 1 + 1) * 6 priors
    assert output.cls_logits.shape == (2, 87 * 6, 4) and output.box_regression.shape == (2, 87 * 6, 4)
    loss = task.training_step((images, targets), 0)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    for module in (task.backbone.features[1], task.backbone.features[14], task.head.extras[-1],
                   task.head.classification.module_list[0], task.head.regression.module_list[-1]):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    task.eval()
    detections = task.detect(images)
    assert len(detections) == 2 and all(d["boxes"].shape[1] == 4 for d in detections)
    for d in detections:
        # No per-image cap and no clipping (mb2-ssd-lite): at most 200 candidates per class.
        assert d["boxes"].shape[0] <= 200 * 3
        assert ((d["labels"] >= 1) & (d["labels"] <= 3)).all()
    task.hparams.clip_boxes, task.hparams.max_detections = True, 50
    for d in task.detect(images):
        assert d["boxes"].shape[0] <= 50
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= 128).all()


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    task = DetectionTask({"name": "mv2_e2", "width_mult": 0.35}, num_classes=2)
    images = torch.randn(2, 3, 96, 96)
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[30.0, 5.0, 90.0, 50.0], [0.0, 60.0, 30.0, 95.0]]),
                "labels": torch.tensor([2, 1])}]
    optimizer = torch.optim.SGD(task.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(12):
        out = task(images)
        loss = task.loss_fn(out.cls_logits, out.box_regression, out.priors, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_test_epoch_results_with_a_single_class():
    torch.manual_seed(0)
    task = DetectionTask({"name": "cog_e2", "width_mult": 0.35}, num_classes=1, class_names=["shape"],
                         speed_test_runs=2, speed_test_warmup=1).eval()
    images = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0]]), "labels": torch.tensor([1]),
                "difficult": torch.tensor([False])}] * 2
    with torch.no_grad():
        task.test_step((images, targets), 0)
        task.on_test_epoch_end()
    results = task.test_results
    assert list(results["ap_per_class"]) == ["shape"] and results["class_names"] == ["shape"]
    assert 0.0 <= results["map"] <= 1.0 and results["ms_per_image"] > 0
    # The same passes: network + softmax + decoding, then NMS on top.
    assert 0 < results["ms_per_image_forward"] <= results["ms_per_image"]
    assert results["ap_per_class"]["shape"] == pytest.approx(results["map"])


def test_task_rejects_inconsistent_classes():
    with pytest.raises(ValueError, match="background excluded"):
        DetectionTask("mv2_e2", num_classes=0)
    with pytest.raises(ValueError, match="2 class names for num_classes=3"):
        DetectionTask({"name": "mv2_e2", "width_mult": 0.35}, num_classes=3, class_names=["a", "b"])


def test_priors_stay_float32_under_bf16_autocast():
    head = SSDLiteHead([8, 16], num_classes=3).eval()
    features = [torch.randn(1, 8, 10, 10), torch.randn(1, 16, 5, 5)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = head(features, (160, 160))
    assert output.priors.dtype == torch.float32
    torch.testing.assert_close(output.priors, head.priors((160, 160), [(10, 10), (5, 5), (3, 3), (2, 2), (1, 1), (1, 1)]))


def test_head_rejects_a_single_column():
    with pytest.raises(ValueError, match="background"):
        SSDLiteHead([16, 32], num_classes=1)


# ---------------------------------------------------------------- training-loop behaviour


class _EmptyTargets(torch.utils.data.Dataset):
    """Images whose every box was lost (e.g. filtered out by the resize)."""

    def __init__(self, boxes: bool = False) -> None:
        self.boxes = boxes

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index):
        boxes = torch.tensor([[4.0, 4.0, 40.0, 40.0]]) if self.boxes else torch.zeros(0, 4)
        return torch.randn(3, 64, 64), {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.long),
                                         "difficult": torch.zeros(len(boxes), dtype=torch.bool)}


def _fit_one_epoch(dataset, tmp_path):
    from data.voc_detection import collate_detection

    task = DetectionTask({"name": "mv2_e2", "width_mult": 0.35}, num_classes=2,
                         optimizer={"name": "sgd", "lr": 0.001}, scheduler={"name": "constant"})
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate_detection)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(task, train_dataloaders=loader)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning:lightning")
def test_an_epoch_without_any_positive_box_warns_with_the_likely_cause(tmp_path, recwarn):
    _fit_one_epoch(_EmptyTargets(boxes=True), tmp_path)
    assert not [w for w in recwarn if "no prior was matched" in str(w.message)]
    with pytest.warns(UserWarning, match="no prior was matched to any ground-truth box") as caught:
        _fit_one_epoch(_EmptyTargets(boxes=False), tmp_path)
    message = next(str(w.message) for w in caught if "no prior" in str(w.message))
    assert "training epoch 0" in message and "resize" in message and "difficult" in message


@pytest.mark.slow
def test_thesis_schedule_is_stepped_per_epoch_one_epoch_ahead():
    from types import SimpleNamespace

    task = DetectionTask({"name": "mv2_e2", "width_mult": 0.35}, num_classes=2)  # thesis defaults
    task._trainer = SimpleNamespace(max_epochs=200, estimated_stepping_batches=200 * 208, fast_dev_run=False)
    config = task.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "epoch"
    # Every parameter decayed (BN and biases too): one group with weight decay.
    decayed = [g for g in optimizer.param_groups if g["weight_decay"] == 5e-4]
    assert sum(len(g["params"]) for g in decayed) == len(list(task.parameters()))
    lrs = []
    for _ in range(200):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # train_ssd.py: CosineAnnealingLR(T_max=200).step() before each epoch -> epoch e at lr(e + 1).
    for epoch in (0, 1, 99, 198, 199):
        assert lrs[epoch] == pytest.approx(0.01 * (1 + math.cos(math.pi * (epoch + 1) / 200)) / 2, abs=1e-12)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- Lightning on the VOC fixtures


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mv2_e2", "cog_e2"])
def test_fast_dev_run_on_voc_fixture(backbone, tmp_path, fixtures_dir):
    from data.facts import dataset_facts
    from data.voc_detection import VOCDetectionDataModule

    datamodule = VOCDetectionDataModule(fixtures_dir, batch_size=2, num_workers=0, image_size=160)
    task = DetectionTask({"name": backbone, "width_mult": 0.35}, num_classes=20, speed_test_runs=2,
                         speed_test_warmup=1).use_dataset_facts(dataset_facts(datamodule))
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, datamodule)
    assert "val/map" in trainer.callback_metrics
    (results,) = trainer.test(task, datamodule, verbose=False)
    for key in ("test/map", "test/map_coco", "test/ms_per_image", "test/ms_per_image_forward", "test/ap_chair"):
        assert key in results
    assert results["test/ms_per_image"] > 0
    assert 0.0 <= results["test/map"] <= 1.0
    # The fixture's test split (000003, 000005) has sofa and chair only; other classes are NaN.
    assert math.isnan(results["test/ap_dog"])
    assert task.test_results["class_names"][8] == "chair"


# ---------------------------------------------------------------- configs


def test_detection_config_builds_the_task_and_voc_datamodule(fixtures_dir, tmp_path):
    from hydra.utils import instantiate

    def _compose(overrides):
        return compose_config("train", overrides, tmp_path)

    cfg = _compose(["task=detection", "backbone=mv2_e2", "backbone.width_mult=0.35",
                    f"paths.data_dir={fixtures_dir}"])
    assert cfg.model.num_classes == 20 and cfg.trainer.max_epochs == 200 and cfg.batch_size == 24
    datamodule = instantiate(cfg.data)
    assert datamodule.num_classes == 20 and datamodule.image_size == 300
    task = instantiate(cfg.model)
    assert isinstance(task, DetectionTask)
    assert task.hparams.optimizer == {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                                      "decay_norm_and_bias": True}
    assert task.hparams.scheduler == {"name": "cosine", "min_lr_factor": 0.0, "interval": "epoch", "offset": 1}
    assert cfg.test_ckpt == "last" and cfg.data.augmentation == "mb2_ssd_lite"
    voc0712 = _compose(["task=detection", "data=voc0712"])
    assert list(voc0712.data.years) == ["2007", "2012"] and voc0712.data.eval_year == "2007"
    synthetic = _compose(["task=detection", "data=synthetic"])
    assert synthetic.data.generator.num_classes == synthetic.data.num_classes
    assert synthetic.model.num_classes == synthetic.synthetic.num_classes
    # The demo recipe (configs/synthetic_recipe/detection.yaml) applies to the synthetic set only ...
    assert synthetic.model.optimizer.name == "adamw" and synthetic.batch_size == 8
    assert synthetic.data.augmentation == "none" and synthetic.model.scheduler.interval == "step"
    assert cfg.model.optimizer.name == "sgd" and cfg.data.augmentation == "mb2_ssd_lite"
    # ... and never to the thesis recipe, even on synthetic data.
    thesis = _compose(["experiment=thesis/table5_4_voc2007_mv2_e2", "data=synthetic"])
    assert thesis.model.optimizer == {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                                      "decay_norm_and_bias": True}
    assert thesis.model.scheduler.interval == "epoch" and thesis.model.scheduler.T_max == 200
    assert (thesis.batch_size, thesis.data.image_size, thesis.data.augmentation) == (24, 300, "mb2_ssd_lite")
    assert thesis.model.prior_centers == "mb2_ssd_lite" and thesis.test_ckpt == "last"
    assert thesis.trainer.check_val_every_n_epoch == 5 and thesis.trainer.precision == "32-true"


# ---------------------------------------------------------------- test protocol (train.py)


def _tiny_detection_run(tmp_path, synthetic_dir, *overrides):
    import json

    from train import train

    cfg = compose_config("train", [
        "task=detection", "data=synthetic", f"paths.synthetic_dir={synthetic_dir}", "backbone=mv2_e2",
        "backbone.width_mult=0.35", "synthetic.image_size=64", "synthetic.generator.num_train=8",
        "synthetic.generator.num_test=4", "synthetic.generator.image_size=64", "batch_size=4",
        "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "model.speed_test_runs=0", *overrides,
    ], tmp_path)
    metrics = train(cfg)
    return metrics, json.loads((tmp_path / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_detection_reports_the_final_model_and_labels_test_selected_checkpoints(tmp_path, synthetic_dir):
    metrics, saved = _tiny_detection_run(tmp_path / "default", synthetic_dir)
    assert saved["tested_checkpoint"] == "final weights"
    # Validation read the test split: the best checkpoint's score is labelled as test-selected.
    assert saved["best_checkpoint_selected_on_test_set"] is True
    assert "best_checkpoint_score_test_selected" in metrics and "best_checkpoint_score" not in metrics

    metrics, saved = _tiny_detection_run(tmp_path / "held_out", synthetic_dir, "data.val_fraction=0.25",
                                         "test_ckpt=best")
    assert saved["tested_checkpoint"].endswith(".ckpt")
    assert saved["best_checkpoint_selected_on_test_set"] is False and "best_checkpoint_score" in metrics
