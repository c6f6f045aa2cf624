"""Object detection: SSD-Lite on a MobileNetV2 / COG-MobileNet backbone (thesis Table 5.4, VOC2007).

The backbone's "stride16_expansion" feature (MobileNetV2: the expansion output of block 14,
stride 16) and its last feature map (stride 32) feed the SSD-Lite head (``heads.ssd_lite``, qfgaohao/pytorch-ssd's ``mb2-ssd-lite``); training uses the MultiBox loss
(``tasks.ssd_loss``). Validation logs VOC07 11-point mAP at IoU 0.5 (``val/map``); test adds
per-class APs, COCO-style mAP@[.5:.95] (``test/map_coco``) and two batch-1 latencies:
``test/ms_per_image_forward`` (the network with softmax and box decoding, what mb2-ssd-lite's
predictor times: the thesis-comparable figure) and ``test/ms_per_image`` (plus NMS).

Defaults follow the thesis' run of mb2-ssd-lite (``train_ssd.py --net mb2-ssd-lite --batch_size
24 --num_epochs 200 --scheduler cosine --lr 0.01 --t_max 200``): SGD lr 0.01, momentum 0.9,
weight decay 5e-4 on every parameter, cosine annealing stepped per epoch (the reference steps
it before each epoch, so epoch e trains at the lr of e + 1), PyTorch's default init of extras and
predictors, score filter 0.01, per-class NMS at 0.45 over the 200 best, no per-image cap, no
clipping. The one exception is the prior centres (``prior_centers="ssd_paper"``: defined for any
input size); ``docs/fidelity_detection.md`` lists every difference and why.
"""
from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from data.device_transforms import Normalization, prepare_batch_images
from cogsuite.timer import Stopwatch
from errors import ConfigError
from heads.priors import ASPECT_RATIOS, BOX_SIZES, REFERENCE_IMAGE_SIZE, SHRINKAGES
from heads.ssd_lite import (
    EXTRA_CHANNELS,
    EXTRA_EXPAND_RATIOS,
    SSDLiteHead,
    SSDLiteOutput,
    decode,
    postprocess_detections,
    select_detections,
)
from tasks.base import TaskBase, build_backbone
from tasks.registry import TaskSpec, register_task
from tasks.coco_metric import COCOMeanAveragePrecision
from tasks.metrics import VOCMeanAveragePrecision
from tasks.ssd_loss import SSDLoss

# Backbone feature roles SSD-Lite predicts from (see backbones.base): stride 16, then the last map.
FEATURE_ROLES = ("stride16_expansion", "last")
Targets = list[dict[str, Tensor]]


# What qfgaohao's train_ssd.py runs with the thesis' flags (every parameter decayed; the cosine
# schedule stepped before each epoch, so epoch e trains at the lr of e + 1).
THESIS_OPTIMIZER = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                    "decay_norm_and_bias": True}
THESIS_SCHEDULER = {"name": "cosine", "min_lr_factor": 0.0, "interval": "epoch", "offset": 1}


class DetectionTask(TaskBase):
    """SSD-Lite detector.

    Args:
        backbone: registry name or ``{name, pretrained, **overrides}``.
        num_classes: object classes (background excluded; the head adds it as class 0).
        class_names: names of the object classes, for per-class AP keys.
        extra_channels / extra_expand_ratios: the four inverted-residual extra layers.
        box_sizes / aspect_ratios / reference_size: priors (``heads.priors``).
        prior_centers / shrinkages: ``ssd_paper`` ((i + 0.5) / f_k) or ``mb2_ssd_lite``
            ((i + 0.5) * shrinkage / 300, only for 300 px inputs).
        head_init: ``pytorch`` (layer defaults, as the reference from scratch), ``normal``
            (normal(0, 0.03), torchvision's ssdlite) or ``xavier``.
        head_spatial / head_spatial_at: a spatial layer (``backbones.spatial``, e.g.
            ``deform_depthwise``) and the head's depthwise convs it replaces ("extras",
            "predictors"; default none: the reference's depthwise convs).
        iou_threshold / neg_pos_ratio: matching threshold and hard-negative ratio of the loss.
        score_thresh / nms_iou / candidates_per_class / max_detections / clip_boxes: inference
            post-processing (``heads.ssd_lite.postprocess_detections``).
        speed_test_runs: timed batch-1 passes at test time (0 disables the latency figures).
    """

    task_name = "detection"

    def __init__(
        self,
        backbone: str | Mapping[str, Any] = "cog_e2",
        num_classes: int = 20,
        class_names: Sequence[str] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        extra_channels: Sequence[int] = EXTRA_CHANNELS,
        box_sizes: Sequence[float] = BOX_SIZES,
        aspect_ratios: Sequence[int] = ASPECT_RATIOS,
        reference_size: float = REFERENCE_IMAGE_SIZE,
        iou_threshold: float = 0.5,
        neg_pos_ratio: float = 3.0,
        score_thresh: float = 0.01,
        nms_iou: float = 0.45,
        max_detections: int | None = None,
        candidates_per_class: int = 200,
        speed_test_runs: int = 20,
        speed_test_warmup: int = 3,
        extra_expand_ratios: Sequence[float] = EXTRA_EXPAND_RATIOS,
        prior_centers: str = "ssd_paper",
        shrinkages: Sequence[float] = SHRINKAGES,
        head_init: str = "pytorch",
        clip_boxes: bool = False,
        head_spatial: str | Mapping[str, Any] = "depthwise",
        head_spatial_at: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if optimizer is None:
            optimizer = dict(THESIS_OPTIMIZER)
        if scheduler is None:
            scheduler = dict(THESIS_SCHEDULER)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes counts object classes (background excluded) and must be "
                              f">= 1, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names for num_classes={num_classes} "
                              "(object classes, background excluded)")
        if max_detections is not None and max_detections < 1:
            raise ConfigError(f"max_detections must be >= 1 or null (no cap), got {max_detections!r}")
        self.save_hyperparameters()
        self.backbone = build_backbone(backbone)
        taps = [self.backbone.feature_for(role) for role in FEATURE_ROLES]
        self.feature_taps = [tap.name for tap in taps]
        tap_channels = [tap.channels for tap in taps]
        self.head = SSDLiteHead(
            tap_channels, num_classes + 1, extra_channels=extra_channels, box_sizes=box_sizes,
            aspect_ratios=aspect_ratios, reference_size=reference_size,
            extra_expand_ratios=extra_expand_ratios, prior_centers=prior_centers,
            shrinkages=shrinkages, head_init=head_init, spatial=head_spatial,
            spatial_at=head_spatial_at)
        self.loss_fn = SSDLoss(iou_threshold, neg_pos_ratio)
        self.class_names = list(class_names) if class_names else [f"class{i}" for i in range(1, num_classes + 1)]
        self.val_map = VOCMeanAveragePrecision(num_classes=num_classes, use_07_metric=True)
        self.test_map = VOCMeanAveragePrecision(num_classes=num_classes, use_07_metric=True)
        self.test_map_coco = COCOMeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
        # COCO scores the top 100 detections per image by definition; keeping more is intended.
        self.test_map_coco.warn_on_many_detections = False
        # Image-weighted loss means synced as metric states: exact under DDP with uneven shards.
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self._speed_images: Tensor | None = None
        self._epoch_positives: Tensor | None = None
        self._epoch_batches = 0
        self.test_results: dict[str, Any] = {}

    # The VOC datamodule's default; ``setup`` reads the datamodule's own.
    default_normalization = Normalization.mb2_ssd_lite()

    def prepare_images(self, images: Tensor, batch: Any) -> Tensor:
        """uint8 -> float on the device; mb2-ssd-lite training targets carry their photometric
        distortion (``data.detection_pipeline``), applied here before normalising."""
        targets = batch[1] if len(batch) > 1 else None
        if images.dtype != torch.uint8 or not targets or "photometric" not in targets[0]:
            return super().prepare_images(images, batch)
        return prepare_batch_images(images, self.input_normalization or self.default_normalization,
                                    photometric=torch.stack([t["photometric"] for t in targets]),
                                    image_rects=torch.stack([t["image_rect"] for t in targets]),
                                    fill=torch.stack([t["fill"] for t in targets]))

    def forward(self, images: Tensor) -> SSDLiteOutput:
        features = self.backbone.forward_features(images, self.feature_taps)
        return self.head([features[tap] for tap in self.feature_taps], images.shape[-2:])

    def postprocess(self, output: SSDLiteOutput, image_size: Sequence[int]) -> Targets:
        hp = self.hparams
        return postprocess_detections(output, image_size, hp.score_thresh, hp.nms_iou,
                                      hp.max_detections, hp.candidates_per_class, hp.clip_boxes)

    @torch.no_grad()
    def detect(self, images: Tensor) -> Targets:
        """Detections per image: boxes (xyxy pixels of ``images``), scores, labels in 1..C."""
        return self.postprocess(self(images), images.shape[-2:])

    def _loss(self, output: SSDLiteOutput, targets: Targets) -> dict[str, Tensor]:
        return self.loss_fn(output.cls_logits, output.box_regression, output.priors, targets)

    def training_step(self, batch: tuple[Tensor, Targets], batch_idx: int) -> Tensor:
        images, targets = batch
        if images.shape[0] < 2:
            raise ConfigError("training batches need at least 2 images: the last SSD extra layer "
                             "normalises 1x1 maps with BatchNorm; raise batch_size")
        losses = self._loss(self(images), targets)
        batch_size = images.shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        self.log("train/loss_box", losses["loss_box"], batch_size=batch_size)
        self.log("train/loss_cls", losses["loss_cls"], batch_size=batch_size)
        # Summed on the device; read once per epoch (no per-step host sync).
        positives = losses["num_positives"].detach()
        self._epoch_positives = positives if self._epoch_positives is None else self._epoch_positives + positives
        self._epoch_batches += 1
        return losses["loss"]

    def on_train_epoch_start(self) -> None:
        self._epoch_positives, self._epoch_batches = None, 0

    def on_train_epoch_end(self) -> None:
        if self._epoch_positives is None:
            return
        total = self.trainer.strategy.reduce(self._epoch_positives.float(), reduce_op="sum")
        if float(total) == 0:
            rank_zero_warn(no_positives_message(self.current_epoch, self._epoch_batches, self.trainer))

    def _evaluate(self, batch: tuple[Tensor, Targets], stage: str) -> Targets:
        images, targets = batch
        output = self(images)
        # Loss on the targets as given (difficult boxes included at evaluation).
        loss_mean = self.val_loss if stage == "val" else self.test_loss
        loss_mean.update(self._loss(output, targets)["loss"], weight=images.shape[0])
        self.log(f"{stage}/loss", loss_mean)
        return self.postprocess(output, images.shape[-2:])

    def validation_step(self, batch: tuple[Tensor, Targets], batch_idx: int) -> None:
        self.val_map.update(self._evaluate(batch, "val"), batch[1])

    def on_validation_epoch_end(self) -> None:
        result = self.val_map.compute()
        self.log("val/map", result["map"], prog_bar=True, sync_dist=True)
        self.val_map.reset()

    def test_step(self, batch: tuple[Tensor, Targets], batch_idx: int) -> None:
        images, targets = batch
        detections = self._evaluate(batch, "test")
        self.test_map.update(detections, targets)
        # COCO has no "difficult"; crowd regions are its way of ignoring ground truth.
        self.test_map_coco.update(
            detections, [{"boxes": t["boxes"], "labels": t["labels"], "iscrowd": t["difficult"].long()}
                         for t in targets])
        if batch_idx == 0 and self.hparams.speed_test_runs > 0:
            self._speed_images = images[: self.hparams.speed_test_runs].detach()

    def on_test_epoch_end(self) -> None:
        # compute() gathers every rank's state, so all ranks log the same values.
        result = self.test_map.compute()
        names = self._metric_names()
        per_class = result["map_per_class"].reshape(-1)  # torchmetrics squeezes a single class to 0-d
        self.log("test/map", result["map"], sync_dist=True)
        for name, ap in zip(names, per_class):
            self.log(f"test/ap_{name}", ap, sync_dist=True)  # NaN: no non-difficult box of that class in the set
        coco = self.test_map_coco.compute()
        self.log("test/map_coco", coco["map"], sync_dist=True)
        self.log("test/map_coco_50", coco["map_50"], sync_dist=True)
        ms_forward = ms = None
        if self._speed_images is not None:
            ms_forward, ms = self.measure_latency(self._speed_images)
            self.log("test/ms_per_image_forward", ms_forward, sync_dist=True)
            self.log("test/ms_per_image", ms, sync_dist=True)
        self.test_results = {
            "map": float(result["map"]),
            "ap_per_class": dict(zip(names, per_class.tolist())),
            "map_coco": float(coco["map"]),
            "ms_per_image_forward": ms_forward,
            "ms_per_image": ms,
            "class_names": names,
        }
        self.test_map.reset()
        self.test_map_coco.reset()
        self._speed_images = None

    @torch.inference_mode()
    def measure_latency(self, images: Tensor) -> tuple[float, float]:
        """Median ms per image (batch 1) of the forward pass and of the whole detection.

        Each timed pass runs the network with softmax and box decoding (what mb2-ssd-lite's
        predictor times: its test-mode forward, the thesis' figure), then per-class NMS; both
        figures come from the same passes, CUDA synchronised at each clock reading. Runs
        ``speed_test_warmup`` + ``speed_test_runs`` passes cycling over ``images``, under the
        trainer's precision context when there is one.
        """
        context = self._precision_context()
        watch = Stopwatch(("wall",), torch.cuda.synchronize if images.is_cuda else None)
        warmup, runs = self.hparams.speed_test_warmup, self.hparams.speed_test_runs
        hp = self.hparams
        forward_ms, total_ms = [], []
        with context:
            for step in range(warmup + runs):
                image = images[step % images.shape[0]][None]
                start = watch.read()
                scores, boxes = decode(self(image))
                middle = watch.read()
                select_detections(scores, boxes, image.shape[-2:], hp.score_thresh, hp.nms_iou,
                                  hp.max_detections, hp.candidates_per_class, hp.clip_boxes)
                stop = watch.read()
                if step >= warmup:
                    forward_ms.append(watch.elapsed_ms(start, middle)[0])
                    total_ms.append(watch.elapsed_ms(start, stop)[0])
        return statistics.median(forward_ms), statistics.median(total_ms)

    def _precision_context(self):
        trainer = self._trainer
        plugin = getattr(trainer, "precision_plugin", None) if trainer is not None else None
        return plugin.forward_context() if plugin is not None else torch.autocast("cpu", enabled=False)

    def _metric_names(self) -> list[str]:
        """Metric-key-safe class names (the task's, else the datamodule's, else class<i>)."""
        names = self.hparams.class_names
        if names is None and getattr(self, "class_names", None) and len(self.class_names) == self.hparams.num_classes:
            names = self.class_names
        names = list(names) if names is not None else [f"class{i}" for i in range(1, self.hparams.num_classes + 1)]
        return [re.sub(r"[^0-9A-Za-z_.-]+", "_", str(n)) for n in names]


def no_positives_message(epoch: int, batches: int, trainer: Any = None) -> str:
    """Why a whole training epoch can have no positive prior, and what to check."""
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    size = getattr(datamodule, "image_size", None)
    resize = f" to image_size={size} px" if size else ""
    return (
        f"training epoch {epoch}: no prior was matched to any ground-truth box in all {batches} "
        "batches, so the box loss was 0 and the classifier saw only background. Every target box "
        f"was gone before the loss. Likely causes: boxes filtered out by the resize{resize} or "
        "by the crop (objects too small after resizing: raise image_size, or check the boxes' "
        "units), every object marked difficult (dropped from training unless "
        "data.keep_difficult_in_train=true), or annotations without objects. Inspect a few "
        "training samples with data.augmentation=none."
    )


# --------------------------------------------------------------------------- registration
BENCHMARK_BOXES_PER_IMAGE = 3  # random ground-truth boxes per benchmark image (VOC averages ~2.4)


def _benchmark_batch(batch: int, size: int, num_classes: int, generator: torch.Generator):
    images = torch.randn(batch, 3, size, size, generator=generator)
    n = BENCHMARK_BOXES_PER_IMAGE
    targets = []
    for _ in range(batch):
        corner = torch.rand(n, 2, generator=generator) * 0.6 * size
        extent = (0.1 + 0.3 * torch.rand(n, 2, generator=generator)) * size
        targets.append({
            "boxes": torch.cat([corner, (corner + extent).clamp(max=size)], dim=1),
            "labels": torch.randint(1, num_classes + 1, (n,), generator=generator),
            "difficult": torch.zeros(n, dtype=torch.bool),
        })
    return images, targets


def _reference_model(image_size: int, num_classes: int) -> torch.nn.Module:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                          num_classes=num_classes + 1)  # + background
    # Its transform resizes every image to 320x320; use our input size instead.
    model.transform.min_size = (image_size,)
    model.transform.max_size = image_size
    model.transform.fixed_size = (image_size, image_size)
    return model


def _reference_loss(model: torch.nn.Module, batch: tuple[Tensor, Targets]) -> Tensor:
    images, targets = batch
    plain = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
    return sum(model(list(images), plain).values())


register_task(TaskSpec(
    name=DetectionTask.task_name,
    task_class=DetectionTask,
    title="Object detection",
    metric="test/map",
    image_size=300, batch_size=24, quick_size=(160, 4),
    num_classes=20,  # VOC
    description="SSD-Lite, 300 px, 20 classes",
    make_batch=_benchmark_batch,
    reference_label="tv ssdlite320_mnv3",
    reference_model=_reference_model,
    reference_loss=_reference_loss,
    synthetic={"voc": "data.synthetic_datamodule.synthetic_voc_detection"},
    inference=lambda model, images: model.detect(images),
    reference_inference=lambda model, images: model(list(images)),
    export="deploy.export.SSDLiteExport",
    order=1,
))
