"""Image classification: backbone -> ClassificationHead, cross-entropy, AdamW + thesis schedules."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from heads.classification import ClassificationHead
from tasks.base import TaskBase, build_backbone
from tasks.classification_report import classification_report
from tasks.registry import TaskSpec, register_task


DEFAULT_DROPOUT = 0.2  # torchvision's MobileNetV2 classifier


class ClassificationTask(TaskBase):
    """Backbone -> ClassificationHead. ``dropout=None`` takes the backbone's
    ``default_classifier_dropout`` (0.2 for families that do not set one)."""

    task_name = "classification"

    def __init__(
        self,
        backbone: str | Mapping[str, Any] = "cog_e2",
        num_classes: int = 1000,
        dropout: float | None = None,
        label_smoothing: float = 0.0,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if optimizer is None:
            optimizer = {"name": "adamw", "lr": 0.002, "weight_decay": 0.01}
        if scheduler is None:
            scheduler = {"name": "cosine", "min_lr_factor": 0.01}
        self.save_hyperparameters()
        self.backbone = build_backbone(backbone)
        if dropout is None:  # the family's own classifier dropout (MobileNetV2: 0.2, MobileNetV1: 1e-3)
            dropout = getattr(self.backbone, "default_classifier_dropout", DEFAULT_DROPOUT)
        self.head = ClassificationHead(self.backbone.out_channels, num_classes, dropout,
                                       init=getattr(self.backbone, "classifier_init", "normal"))
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]

        top5 = {"acc_top5": MulticlassAccuracy(num_classes, top_k=5)} if num_classes > 5 else {}
        # validate_args=False: the check runs torch.unique every step, a host sync on GPU.
        self.train_metrics = MetricCollection(
            {"acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False)},
            prefix="train/")
        self.val_metrics = MetricCollection(
            {"acc": MulticlassAccuracy(num_classes, average="micro"), **top5}, prefix="val/")
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        # Sample-weighted loss means, synced as metric states: exact under DDP with uneven shards
        # (a per-rank mean averaged across ranks is not).
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.test_per_class = MulticlassAccuracy(num_classes, average=None)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_results: dict[str, Any] = {}

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        self.train_metrics.update(logits.detach(), labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_loss.update(F.cross_entropy(logits, labels), weight=labels.numel())
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.val_metrics.update(logits, labels)
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.test_loss.update(F.cross_entropy(logits, labels), weight=labels.numel())
        self.log("test/loss", self.test_loss)
        self.test_metrics.update(logits, labels)
        self.test_per_class.update(logits, labels)
        self.test_confusion.update(logits, labels)
        self.log_dict(self.test_metrics)

    def on_test_epoch_end(self) -> None:
        per_class = self.test_per_class.compute()
        confusion = self.test_confusion.compute()
        for name, acc in zip(self.class_names, per_class):
            self.log(f"test/acc_class/{name}", acc)
        self.test_results = {
            "per_class_accuracy": dict(zip(self.class_names, per_class.tolist())),
            "confusion_matrix": confusion.tolist(),
            "class_names": self.class_names,
            # per-class precision / recall / F1 (seed 003's report); eval.py prints it
            "classification_report": classification_report(confusion.tolist(), self.class_names),
        }
        self.test_per_class.reset()
        self.test_confusion.reset()


# --------------------------------------------------------------------------- registration
def _benchmark_batch(batch: int, size: int, num_classes: int, generator: torch.Generator):
    images = torch.randn(batch, 3, size, size, generator=generator)
    return images, torch.randint(0, num_classes, (batch,), generator=generator)


def _reference_model(image_size: int, num_classes: int) -> nn.Module:
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(weights=None, num_classes=num_classes)


def _reference_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    images, labels = batch
    return F.cross_entropy(model(images), labels)


register_task(TaskSpec(
    name=ClassificationTask.task_name,
    task_class=ClassificationTask,
    title="Image classification",
    metric="test/acc",
    image_size=224, batch_size=16, quick_size=(96, 4),
    num_classes=1000,  # an ImageNet-size classifier (thesis Table 5.2)
    description="classifier, 224 px, 1000 classes",
    make_batch=_benchmark_batch,
    reference_label="tv mobilenet_v2",
    reference_backbone="mv2_e6",  # torchvision's mobilenet_v2, layer for layer
    reference_model=_reference_model,
    reference_loss=_reference_loss,
    synthetic={"imagefolder": "data.synthetic_datamodule.synthetic_image_folder",
               "cifar10": "data.synthetic_datamodule.synthetic_cifar10",
               "image_folder_splits": "data.synthetic_datamodule.synthetic_image_folder_splits"},
    # The synthetic set's 8 classes each hold out 10 % from training (configs/task/classification.yaml).
    synthetic_train_images=lambda count: {"images_per_class": math.ceil(count / 8 / 0.9) + 1},
    synthetic_bench_generator=lambda count, size, classes: {
        "images_per_class": max(2, math.ceil(count / classes / 0.9)), "image_size": size},
    per_class_analysis=True,
    model_size_by_classes=True,  # the head grows with the classes (Caltech-256 vs Flowers)
    order=0,
))
