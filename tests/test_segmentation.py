"""DeepLabv3 head, segmentation task, mIoU / pixel accuracy, thesis lr schedule, configs."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from heads.deeplabv3 import DeepLabV3Head, atrous_rates_for
from tasks.segmentation import SegmentationTask
from tasks.segmentation_metrics import iou_per_class, segmentation_scores

REPO = Path(__file__).resolve().parents[1]
from tests.helpers import FIXTURES  # noqa: E402
VOC_ROOT = FIXTURES  # holds VOCdevkit/VOC2012
IGNORE = 255


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One intra-op thread: on shared, busy cores OpenMP workers spin-wait and make small
    convolutions tens of times slower than running them on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small_backbone(name: str, **overrides) -> dict:
    return {"name": name, "width_mult": 0.5, **overrides}


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def confmat_of(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    metric = MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE)
    metric.update(preds, target)
    return metric.compute()


def test_miou_ignores_255_and_leaves_out_absent_classes():
    target = torch.tensor([[0, 0, 1, 1, IGNORE, IGNORE]])
    preds = torch.tensor([[0, 1, 1, 1, 2, 0]])  # the only "2" falls on an ignored pixel
    scores = segmentation_scores(confmat_of(preds, target, 4))
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; classes 2 and 3: empty union.
    iou = scores["iou"]
    assert iou[:2].tolist() == pytest.approx([1 / 2, 2 / 3])
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert scores["miou"].item() == pytest.approx((1 / 2 + 2 / 3) / 2)  # not / 4
    assert scores["pixel_acc"].item() == pytest.approx(3 / 4)


def test_class_predicted_but_absent_from_ground_truth_counts_as_zero():
    target = torch.tensor([[0, 0, 0, 0]])
    preds = torch.tensor([[0, 0, 0, 2]])
    iou = iou_per_class(confmat_of(preds, target, 3))
    assert iou[0].item() == pytest.approx(3 / 4) and iou[2].item() == 0.0 and math.isnan(iou[1])
    assert segmentation_scores(confmat_of(preds, target, 3))["miou"].item() == pytest.approx(3 / 8)


def test_miou_matches_torchmetrics_macro_jaccard_on_random_masks():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (3, 20, 20), generator=generator)
    target[target == 5] = IGNORE  # class 5 never labelled
    target[:, :5] = IGNORE
    preds = torch.randint(0, 4, (3, 20, 20), generator=generator)  # class 4 never predicted
    jaccard = MulticlassJaccardIndex(6, ignore_index=IGNORE, average="macro")
    expected = jaccard(preds, target)
    assert segmentation_scores(confmat_of(preds, target, 6))["miou"].item() == pytest.approx(expected.item())


def test_whole_set_miou_is_not_the_mean_of_per_image_mious():
    target_a, preds_a = torch.tensor([[0, 0, 0, 1]]), torch.tensor([[0, 0, 0, 0]])
    target_b, preds_b = torch.tensor([[1, 1, 1, 1]]), torch.tensor([[1, 1, 1, 1]])
    metric = MulticlassConfusionMatrix(2, ignore_index=IGNORE)
    metric.update(preds_a, target_a)
    metric.update(preds_b, target_b)
    whole = segmentation_scores(metric.compute())["miou"].item()
    assert whole == pytest.approx((3 / 4 + 4 / 5) / 2)
    per_image = (segmentation_scores(confmat_of(preds_a, target_a, 2))["miou"]
                 + segmentation_scores(confmat_of(preds_b, target_b, 2))["miou"]) / 2
    assert whole != pytest.approx(per_image.item())


# ---------------------------------------------------------------------------------------------
# Head
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("output_stride, rates", [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_head_rates_follow_output_stride(output_stride, rates):
    head = DeepLabV3Head(40, 21, atrous_rates_for(output_stride), channels=32)
    atrous = [branch[0].dilation[0] for branch in head.aspp.convs[1:4]]
    assert tuple(atrous) == rates == head.atrous_rates
    features = torch.randn(2, 40, 64 // output_stride, 64 // output_stride)
    assert head(features).shape == (2, 21, 64 // output_stride, 64 // output_stride)
    assert head(features, output_size=(64, 64)).shape == (2, 21, 64, 64)
    assert head.aspp.project[-1].p == pytest.approx(0.1)


def test_thesis_cut_is_the_first_five_stages_without_dilation():
    # Thesis section 4.5 read against Table 4.3: up to the 96-channel stage, stride 16.
    task = SegmentationTask("mv2_e6", num_classes=21, cut="stride16")
    assert sum(p.numel() for p in task.parameters()) == 2_181_717
    assert task.backbone.tap_names[-1] == "stage4" and task.backbone.out_channels == 96
    assert task.backbone.feature_for("last").stride == 16
    assert all(m.dilation == (1, 1) for m in task.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert task.head.atrous_rates == (6, 12, 18)
    logits = task(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 21, 64, 64)
    # The default cut: dilated up to the 320-channel block (5,113,877 parameters for mv2_e6).
    assert sum(p.numel() for p in SegmentationTask("mv2_e6", num_classes=21).parameters()) == 5_113_877
    with pytest.raises(ValueError, match="unknown segmentation cut 'first5'"):
        SegmentationTask("mv2_e6", cut="first5")


def test_head_refuses_unsupported_output_stride():
    with pytest.raises(ValueError, match="output stride 16 or 8"):
        atrous_rates_for(32)


# ---------------------------------------------------------------------------------------------
# Task
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, output_stride", [("mv2_e2", 16), ("cog_e2", 16), ("cog_e2", 8)])
def test_task_forward_and_training_step(name, output_stride):
    torch.manual_seed(0)
    task = SegmentationTask(small_backbone(name), num_classes=5, output_stride=output_stride)
    stage6 = task.backbone.feature("stage6")
    assert task.backbone.tap_names[-1] == "stage6" and "last_conv" not in task.backbone.tap_names
    assert task.head.aspp.convs[0][0].in_channels == stage6.channels == task.backbone.out_channels
    assert task.head.atrous_rates == atrous_rates_for(output_stride)

    images = torch.randn(2, 3, 64, 64)
    features = task.backbone(images)
    assert features.shape[-1] == 64 // output_stride
    logits = task(images)
    assert logits.shape == (2, 5, 64, 64)

    masks = torch.randint(0, 5, (2, 64, 64))
    masks[:, :16] = IGNORE
    task.log = lambda *args, **kwargs: None  # no Trainer attached
    loss = task.training_step((images, masks), 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert task.backbone.features[0][0].weight.grad.abs().sum() > 0
    assert task.head.classifier.weight.grad.abs().sum() > 0


def test_loss_ignores_255_and_an_all_ignored_crop_is_zero():
    task = SegmentationTask(small_backbone("mv2_e2"), num_classes=3)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    masks = torch.randint(0, 3, (2, 4, 4))
    masks[0, 0] = IGNORE
    labelled = masks != IGNORE
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[labelled], masks[labelled])
    assert task.loss(logits, masks).item() == pytest.approx(expected.item(), rel=1e-6)
    empty = task.loss(logits, torch.full_like(masks, IGNORE))
    empty.backward()
    assert empty.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_backbone_output_stride_from_spec_wins_and_sets_rates():
    task = SegmentationTask(small_backbone("mv2_e2", output_stride=8), num_classes=3)
    assert task.backbone.output_stride == 8 and task.head.atrous_rates == (12, 24, 36)


def test_warmup_cosine_schedule_is_the_thesis_curve():
    """lr: linear 9e-6 -> 9e-4 over 40 of 200 epochs, then cosine back to 9e-6, per iteration."""
    task = SegmentationTask(small_backbone("mv2_e2"), num_classes=3)
    steps_per_epoch, epochs = 7, 200
    total = steps_per_epoch * epochs
    task._trainer = SimpleNamespace(estimated_stepping_batches=total, max_epochs=epochs)
    config = task.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    assert isinstance(optimizer, torch.optim.AdamW)

    lo, hi, warmup = 9e-6, 9e-4, 40 * steps_per_epoch

    def thesis_lr(t: int) -> float:
        if t < warmup:
            return lo + (hi - lo) * t / warmup
        return lo + (hi - lo) * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))

    checkpoints = {0, 1, warmup // 2, warmup - 1, warmup, warmup + 1, (warmup + total) // 2, total - 1, total}
    seen = {}
    for t in range(total + 1):
        if t in checkpoints:
            seen[t] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    for t, lr in seen.items():
        assert lr == pytest.approx(thesis_lr(t), rel=1e-9, abs=1e-12), t
    assert seen[0] == pytest.approx(9e-6) and seen[warmup] == pytest.approx(9e-4)
    assert seen[total] == pytest.approx(9e-6)


# ---------------------------------------------------------------------------------------------
# Lightning on the genuine VOC2012 fixture
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def voc_root() -> Path:
    if not (VOC_ROOT / "VOCdevkit" / "VOC2012").is_dir():
        pytest.fail(f"genuine VOC2012 fixture missing under {VOC_ROOT}")
    return VOC_ROOT


def make_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mv2_e2", "cog_e2"])
def test_fit_and_test_on_voc2012_fixture(voc_root, name):
    from data.facts import dataset_facts
    from data.voc_segmentation import VOC_SEG_CLASSES, VOCSegmentationDataModule

    L.seed_everything(0)
    datamodule = VOCSegmentationDataModule(root=voc_root, batch_size=2, num_workers=0, crop_size=96)
    task = SegmentationTask(
        small_backbone(name), num_classes=21,
        scheduler={"name": "warmup_cosine", "warmup_epochs": 1, "warmup_start_factor": 0.01,
                   "min_lr_factor": 0.01},
    ).use_dataset_facts(dataset_facts(datamodule))
    trainer = make_trainer(max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=datamodule)
    assert trainer.global_step == 2
    metrics = trainer.callback_metrics
    assert 0.0 <= metrics["val/miou"].item() <= 1.0 and 0.0 <= metrics["val/pixel_acc"].item() <= 1.0

    trainer.test(task, datamodule=datamodule)
    results = task.test_results
    assert list(results["iou_per_class"]) == list(VOC_SEG_CLASSES)
    ious = torch.tensor(list(results["iou_per_class"].values()))
    assert results["miou"] == pytest.approx(ious.nanmean().item())
    # The val image holds background and aeroplane only: every other class is NaN or 0.
    others = ious[2:]
    assert bool(((others == 0) | others.isnan()).all())
    for class_name in VOC_SEG_CLASSES:
        assert f"test/iou_{class_name}" in trainer.callback_metrics
    confmat = torch.tensor(results["confusion_matrix"])
    _, val_mask = datamodule.dataset("test").load(0)
    assert int(confmat.sum()) == int((val_mask != IGNORE).sum())  # every labelled pixel, once
    assert int(confmat[2:].sum()) == 0  # no ground-truth pixels of other classes


def test_validation_mIoU_is_accumulated_over_the_whole_set(voc_root):
    from data.voc_segmentation import VOCSegmentationDataModule

    torch.manual_seed(0)
    datamodule = VOCSegmentationDataModule(root=voc_root, val_split="train", num_workers=0)
    task = SegmentationTask(small_backbone("mv2_e2"), num_classes=21)
    trainer = make_trainer()
    logged = trainer.validate(task, datamodule=datamodule)[0]

    task.eval()
    confmat = MulticlassConfusionMatrix(21, ignore_index=IGNORE)
    with torch.no_grad():
        for images, masks in datamodule.val_dataloader():
            confmat.update(task(task.prepare_images(images, None)).argmax(1), masks)  # uint8 -> normalised
    expected = segmentation_scores(confmat.compute())
    assert logged["val/miou"] == pytest.approx(expected["miou"].item(), rel=1e-5)
    assert logged["val/pixel_acc"] == pytest.approx(expected["pixel_acc"].item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------
def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def test_config_builds_the_thesis_model_and_data(voc_root):
    from hydra.utils import instantiate

    cfg = compose(["task=segmentation", "backbone=mv2_e2", f"paths.data_dir={voc_root}",
                   "num_workers=0"])
    assert cfg.task_name == "segmentation" and cfg.monitor == "val/miou"
    assert cfg.batch_size == 8 and cfg.image_size == 480 and cfg.trainer.max_epochs == 200
    datamodule = instantiate(cfg.data)
    assert datamodule.crop_size == 480 and datamodule.num_classes == 21 and not datamodule.use_sbd_aug
    task = instantiate(cfg.model)
    assert task.backbone.output_stride == 16 and task.head.atrous_rates == (6, 12, 18)
    assert task.hparams.optimizer == {"name": "adamw", "lr": 9e-4, "weight_decay": 0.01}
    assert task.hparams.scheduler["warmup_epochs"] == 40

    aug = compose(["task=segmentation", "data=voc2012_aug", f"paths.data_dir={voc_root}"])
    assert aug.data.use_sbd_aug is True and aug.data._target_ == cfg.data._target_


def test_synthetic_config_matches_generator_and_fits_the_warmup():
    cfg = compose(["task=segmentation", "data=synthetic"])
    assert cfg.data.num_classes == cfg.synthetic.generator.num_classes + 1  # + background
    assert cfg.data.image_size == cfg.synthetic.image_size
    # A warm-up as long as the whole short run makes the schedule refuse to start.
    assert cfg.model.scheduler.warmup_epochs < cfg.trainer.max_epochs == cfg.synthetic.max_epochs
