"""Semantic segmentation: DeepLabv3 (ASPP head) on a backbone cut at stride 16, thesis Table 5.5.

Two backbone cuts (``cut``):

- ``"body"`` (default; the MobileNetV2 paper's DeepLabv3 and common PyTorch ports): the backbone
  runs at output stride 16 (or 8) with dilation, up to its last block (role "body", the
  320-channel block of MobileNetV2); the final 1x1 conv to 1280 channels is dropped.
- ``"stride16"`` (the thesis, section 4.5: "the first 5 stages", output 16 times smaller than the
  input): the backbone at output stride 32, cut after its last stride-16 block (role "stride16",
  the 96-channel stage of MobileNetV2, Table 4.3); no dilation. The thesis rows use it.

Logits are upsampled bilinearly to the input size and trained with pixel-wise cross-entropy
(255 = ignore). mIoU and pixel accuracy come from one confusion matrix over the whole evaluation
set (see ``tasks.segmentation_metrics``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from errors import ConfigError
from heads.deeplabv3 import ATROUS_RATES_OS16, DeepLabV3Head, atrous_rates_for
from tasks.base import TaskBase, build_backbone
from tasks.registry import TaskSpec, register_task
from tasks.segmentation_metrics import segmentation_scores

CUTS = ("body", "stride16")  # the backbone role the head reads (see the module docstring)


class SegmentationTask(TaskBase):
    """DeepLabv3 with a MobileNetV2 / COG-MobileNet backbone.

    ``atrous_rates`` are the ASPP rates at output stride 16; they are doubled at stride 8.
    Defaults follow the thesis: AdamW, lr 9e-4, linear warm-up from 9e-6 over 40 epochs, then
    cosine to 9e-6, stepped per iteration.
    """

    task_name = "segmentation"

    def __init__(
        self,
        backbone: str | Mapping[str, Any] = "cog_e2",
        num_classes: int = 21,
        class_names: Sequence[str] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        output_stride: int = 16,
        cut: str = "body",
        ignore_index: int = 255,
        atrous_rates: Sequence[int] = ATROUS_RATES_OS16,
        head_channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if optimizer is None:
            optimizer = {"name": "adamw", "lr": 9e-4, "weight_decay": 0.01}
        if scheduler is None:
            scheduler = {"name": "warmup_cosine", "warmup_epochs": 40,
                         "warmup_start_factor": 0.01, "min_lr_factor": 0.01}
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(
                f"{len(class_names)} class names for num_classes={num_classes} (background included)")
        if cut not in CUTS:
            raise ConfigError(f"unknown segmentation cut {cut!r}; choose one of {list(CUTS)} "
                              "(body: dilated up to the last block; stride16: the thesis' first 5 stages)")
        self.save_hyperparameters()
        if cut == "stride16":
            # The stride-16 stage of the undilated network: nothing is dilated or dropped before it.
            self.backbone = build_backbone(backbone, last_role="stride16", output_stride=32)
        else:
            self.backbone = build_backbone(backbone, last_role="body", output_stride=output_stride)
        feature = self.backbone.feature_for("last")
        rates = atrous_rates_for(feature.stride, atrous_rates)
        self.head = DeepLabV3Head(feature.channels, num_classes, rates, head_channels, dropout)
        self.class_names = list(class_names) if class_names else [f"class{i}" for i in range(num_classes)]
        self.ignore_index = ignore_index
        self.val_confmat = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index)
        self.test_confmat = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index)
        # Image-weighted loss means synced as metric states: exact under DDP with uneven shards.
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.test_results: dict[str, Any] = {}

    def forward(self, images: Tensor) -> Tensor:
        """Logits [B, C, H, W] at the input resolution."""
        return self.head(self.backbone(images), output_size=images.shape[-2:])

    def loss(self, logits: Tensor, masks: Tensor) -> Tensor:
        """Mean cross-entropy over labelled pixels; 0 (not NaN) for a crop that is all ignore."""
        # Sum / count instead of reduction="mean": same value, no NaN and no host sync to check.
        total = F.cross_entropy(logits, masks, ignore_index=self.ignore_index, reduction="sum")
        return total / (masks != self.ignore_index).sum().clamp(min=1)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, masks = batch
        if images.shape[0] < 2:
            raise ConfigError(
                "training batches need at least 2 images: the ASPP image-pooling branch normalises "
                "1x1 maps with BatchNorm; raise batch_size")
        loss = self.loss(self(images), masks)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, confmat: MulticlassConfusionMatrix) -> None:
        images, masks = batch
        logits = self(images)
        loss_mean = self.val_loss if stage == "val" else self.test_loss
        loss_mean.update(self.loss(logits, masks), weight=images.shape[0])
        self.log(f"{stage}/loss", loss_mean)
        confmat.update(logits.argmax(1), masks)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_confmat)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_confmat)

    def on_validation_epoch_end(self) -> None:
        # compute() sums the matrix over DDP processes, so every rank logs the same values.
        scores = segmentation_scores(self.val_confmat.compute())
        self.log("val/miou", scores["miou"], prog_bar=True, sync_dist=True)
        self.log("val/pixel_acc", scores["pixel_acc"], sync_dist=True)
        self.val_confmat.reset()

    def on_test_epoch_end(self) -> None:
        confmat = self.test_confmat.compute()
        scores = segmentation_scores(confmat)
        self.log("test/miou", scores["miou"], sync_dist=True)
        self.log("test/pixel_acc", scores["pixel_acc"], sync_dist=True)
        names = self._class_names()
        for name, iou in zip(names, scores["iou"]):
            # NaN = the class is neither in the ground truth nor predicted (left out of the mean).
            self.log(f"test/iou_{name}", iou, sync_dist=True)
        self.test_results = {
            "miou": scores["miou"].item(),
            "pixel_acc": scores["pixel_acc"].item(),
            "iou_per_class": dict(zip(names, scores["iou"].tolist())),
            "confusion_matrix": confmat.tolist(),
            "class_names": names,
        }
        self.test_confmat.reset()

    def _class_names(self) -> list[str]:
        """Metric-key-safe class names (the datamodule's, given by ``TaskBase.use_dataset_facts``, else class<i>)."""
        names = self.class_names
        if len(names) != self.hparams.num_classes:
            names = [f"class{i}" for i in range(self.hparams.num_classes)]
        return [re.sub(r"[^0-9A-Za-z_.-]+", "_", str(n)) for n in names]


# --------------------------------------------------------------------------- registration
def _benchmark_batch(batch: int, size: int, num_classes: int, generator: torch.Generator):
    images = torch.randn(batch, 3, size, size, generator=generator)
    masks = torch.randint(0, num_classes, (batch, size, size), generator=generator)
    masks[:, :, : size // 16] = 255  # some ignored pixels, as on VOC object boundaries
    return images, masks


def _reference_model(image_size: int, num_classes: int) -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=False,
                                        num_classes=num_classes)


def _reference_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    images, masks = batch
    return F.cross_entropy(model(images)["out"], masks, ignore_index=255)


register_task(TaskSpec(
    name=SegmentationTask.task_name,
    task_class=SegmentationTask,
    title="Semantic segmentation",
    metric="test/miou",
    image_size=480, batch_size=8, quick_size=(128, 2),
    num_classes=21,  # VOC, background included
    description="DeepLabv3, 480 px, OS16, 21 classes",
    make_batch=_benchmark_batch,
    reference_label="tv deeplabv3_mnv3",
    reference_model=_reference_model,
    reference_loss=_reference_loss,
    synthetic={"voc": "data.synthetic_datamodule.synthetic_voc_segmentation"},
    synthetic_bench_generator=lambda count, size, classes: {
        "num_train": count, "num_val": 2, "image_size": size, "num_classes": classes},
    background_class=True,
    order=2,
))
