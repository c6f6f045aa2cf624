"""SSD-Lite head as qfgaohao/pytorch-ssd's ``mb2-ssd-lite``: extra layers, class/box predictors,
priors, and its post-processing.

Detection features: two backbone taps (roles ``stride16_expansion`` at stride 16 and ``last`` at
stride 32; for MobileNetV2 the expansion output of block 14 after its ReLU6, 576 ch, and the last
1x1 conv, 1280 ch; other families: docs/families.md), then four extra layers, six maps in all. Each extra layer is a MobileNetV2 inverted residual with stride 2 (torchvision's
``InvertedResidual``: 1x1 expansion + BN + ReLU6, depthwise 3x3 + BN + ReLU6, linear 1x1 + BN,
no residual as the stride is 2) with expand ratios 0.2 / 0.25 / 0.5 / 0.25: 1280 -> 512 (hidden
256), 512 -> 256 (128), 256 -> 256 (128), 256 -> 64 (64). Class and box predictors on every map
but the last are separable convs: depthwise 3x3 conv *with bias* + BN + ReLU6, then a 1x1 conv
with bias (mb2-ssd-lite's ``SeperableConv2d``, ``onnx_compatible=False`` so ReLU6); the last map
(1x1) gets a plain 1x1 conv. With the ``mv2_e6`` backbone and 20 classes that is 3,388,228
parameters, as ``create_mobilenetv2_ssd_lite(21)``.

The depthwise 3x3 convs come from the spatial-conv registry (``backbones.spatial``): by default
the ``depthwise`` layer (the reference's layers, keys and initialisation), and ``spatial`` at the
roles ``spatial_at`` names ("extras": the extra layers' depthwise convs, "predictors": the
separable predictors') replaces them, e.g. with ``deform_depthwise``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models.detection.ssd import SSDScoringHead
from torchvision.ops import Conv2dNormActivation, batched_nms, clip_boxes_to_image

from backbones.spatial import SpatialPlan, SpatialSpec, is_kernel_module

from errors import ConfigError
from heads.priors import (
    ASPECT_RATIOS,
    BOX_SIZES,
    REFERENCE_IMAGE_SIZE,
    SHRINKAGES,
    SSDPriors,
    box_coder,
)

EXTRA_CHANNELS = (512, 256, 256, 64)
EXTRA_EXPAND_RATIOS = (0.2, 0.25, 0.5, 0.25)
# "pytorch": the layers' own default init (what mb2-ssd-lite trains from scratch with);
# "normal": normal(0, 0.03) weights, zero biases (torchvision's ssdlite320);
# "xavier": xavier-uniform conv weights (mb2-ssd-lite's init of a new head on a pretrained base).
HEAD_INITS = ("pytorch", "normal", "xavier")
HEAD_INIT_STD = 0.03
SPATIAL_ROLES = ("extras", "predictors")  # where ``spatial_at`` may put the head's spatial layer
DEPTHWISE = SpatialPlan.create("depthwise", (), SPATIAL_ROLES)


class SSDLiteOutput(NamedTuple):
    cls_logits: Tensor  # [B, P, num_classes + 1], column 0 = background
    box_regression: Tensor  # [B, P, 4], SSD offsets against the priors
    priors: Tensor  # [P, 4] xyxy in pixels of the input image


class SSDLiteExtra(nn.Module):
    """An extra layer: torchvision's / mb2-ssd-lite's stride-2 ``InvertedResidual`` (``conv``:
    1x1 expansion + BN + ReLU6, depthwise 3x3 stride 2 + BN + ReLU6, linear 1x1 conv, BN; no
    residual), its depthwise conv built by the spatial plan's "extras" role. Built in the same
    order as torchvision's block, so the default draws the same initial weights."""

    use_res_connect = False  # stride 2

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: float,
                 spatial: SpatialPlan = DEPTHWISE, where: str = "extras") -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.stride = 2
        self.out_channels = out_channels
        self._is_cn = True
        self.conv = nn.Sequential(
            Conv2dNormActivation(in_channels, hidden, kernel_size=1, activation_layer=nn.ReLU6),
            spatial.build("extras", hidden, hidden, stride=2, activation_layer=nn.ReLU6, where=where),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def separable_predictor(in_channels: int, out_channels: int, spatial: SpatialPlan = DEPTHWISE,
                        where: str = "predictors") -> nn.Sequential:
    """Depthwise 3x3 (with bias) + BN + ReLU6 (the spatial plan's "predictors" role), then a 1x1
    conv with bias (mb2-ssd-lite)."""
    return nn.Sequential(
        spatial.build("predictors", in_channels, in_channels, bias=True, activation_layer=nn.ReLU6,
                      where=where),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
    )


def _predictors(channels: Sequence[int], anchors: Sequence[int], columns: int,
                spatial: SpatialPlan, what: str) -> nn.ModuleList:
    last = len(channels) - 1
    return nn.ModuleList(
        separable_predictor(c, a * columns, spatial, f"{what} predictor {k}") if k < last
        else nn.Conv2d(c, a * columns, kernel_size=1)
        for k, (c, a) in enumerate(zip(channels, anchors))
    )


def init_head(modules: Sequence[nn.Module], scheme: str) -> None:
    """Re-initialise the conv weights of ``modules`` (BatchNorm keeps ones/zeros; deformable
    convs' zero-initialised offset predictors stay zero)."""
    if scheme not in HEAD_INITS:
        raise ConfigError(f"head_init must be one of {HEAD_INITS}, got {scheme!r}")
    if scheme == "pytorch":
        return
    for module in modules:
        for m in module.modules():
            if is_kernel_module(m):
                if scheme == "normal":
                    nn.init.normal_(m.weight, mean=0.0, std=HEAD_INIT_STD)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                else:
                    nn.init.xavier_uniform_(m.weight)


class SSDLiteHead(nn.Module):
    """Extras + predictors + priors on top of two backbone feature maps.

    Args:
        in_channels: channels of the two backbone taps (stride 16, stride 32).
        num_classes: object classes plus background.
        extra_channels / extra_expand_ratios: output channels and expand ratios of the extras.
        box_sizes / aspect_ratios / reference_size / prior_centers / shrinkages: prior settings
            (see ``heads.priors``).
        head_init: ``pytorch`` | ``normal`` | ``xavier`` (see ``HEAD_INITS``).
        spatial / spatial_at: a spatial layer (``backbones.spatial``) and the roles whose
            depthwise convs it replaces ("extras", "predictors"; default none).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        extra_channels: Sequence[int] = EXTRA_CHANNELS,
        box_sizes: Sequence[float] = BOX_SIZES,
        aspect_ratios: Sequence[int] = ASPECT_RATIOS,
        reference_size: float = REFERENCE_IMAGE_SIZE,
        extra_expand_ratios: Sequence[float] = EXTRA_EXPAND_RATIOS,
        prior_centers: str = "ssd_paper",
        shrinkages: Sequence[float] = SHRINKAGES,
        head_init: str = "pytorch",
        spatial: SpatialSpec = "depthwise",
        spatial_at: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes counts background too and must be >= 2, got {num_classes}")
        in_channels, extra_channels = list(in_channels), list(extra_channels)
        if len(extra_expand_ratios) != len(extra_channels):
            raise ConfigError(f"extra_expand_ratios needs one value per extra layer ({len(extra_channels)}), "
                              f"got {list(extra_expand_ratios)}")
        self.num_classes = num_classes
        plan = SpatialPlan.create(spatial, spatial_at, SPATIAL_ROLES)
        self.extras = nn.ModuleList(
            SSDLiteExtra(c_in, c_out, ratio, plan, where=f"extras.{k}")
            for k, (c_in, c_out, ratio) in enumerate(zip([in_channels[-1], *extra_channels[:-1]],
                                                         extra_channels, extra_expand_ratios))
        )
        channels = in_channels + extra_channels
        self.priors = SSDPriors(len(channels), box_sizes, aspect_ratios, reference_size,
                                centers=prior_centers, shrinkages=shrinkages)
        anchors = self.priors.num_anchors
        self.classification = SSDScoringHead(
            _predictors(channels, anchors, num_classes, plan, "classification"), num_classes)
        self.regression = SSDScoringHead(_predictors(channels, anchors, 4, plan, "regression"), 4)
        init_head([self.extras, self.classification, self.regression], head_init)

    def forward(self, features: Sequence[Tensor], image_size: Sequence[int]) -> SSDLiteOutput:
        maps = list(features)
        x = maps[-1]
        for block in self.extras:
            x = block(x)
            maps.append(x)
        # float32 whatever the autocast dtype: bf16 would round 300 px coordinates to 1-2 px.
        priors = self.priors(image_size, [m.shape[-2:] for m in maps], dtype=torch.float32,
                             device=maps[0].device)
        return SSDLiteOutput(self.classification(maps), self.regression(maps), priors)


def decode(output: SSDLiteOutput) -> tuple[Tensor, Tensor]:
    """Softmax scores ``[B, P, C + 1]`` and boxes ``[B, P, 4]`` (xyxy pixels, not clipped).

    What mb2-ssd-lite's network returns in test mode, so its latency figure covers this too.
    """
    cls_logits, box_regression, priors = output
    batch, num_priors, _ = cls_logits.shape
    scores = torch.softmax(cls_logits.float(), dim=-1)
    boxes = box_coder().decode_single(box_regression.reshape(-1, 4).float(), priors.float().repeat(batch, 1))
    return scores, boxes.view(batch, num_priors, 4)


@torch.no_grad()
def postprocess_detections(
    output: SSDLiteOutput,
    image_size: Sequence[int],
    score_thresh: float = 0.01,
    nms_iou: float = 0.45,
    max_detections: int | None = None,
    candidates_per_class: int = 200,
    clip_boxes: bool = False,
) -> list[dict[str, Tensor]]:
    """mb2-ssd-lite's predictor, batched: per image and class, the ``candidates_per_class``
    best priors scoring above ``score_thresh``, hard NMS at ``nms_iou``; no per-image cap
    (``max_detections=None``) and no clipping before NMS (``clip_boxes=False``) by default.

    Returns per image ``dict(boxes [K,4] xyxy in pixels of the input image, scores [K],
    labels [K] in 1..C)``, sorted by score. (The reference thresholds before taking the top
    candidates; taking the top candidates first and then thresholding keeps the same boxes.)
    """
    return select_detections(*decode(output), image_size, score_thresh, nms_iou, max_detections,
                             candidates_per_class, clip_boxes)


@torch.no_grad()
def select_detections(
    scores: Tensor,
    boxes: Tensor,
    image_size: Sequence[int],
    score_thresh: float = 0.01,
    nms_iou: float = 0.45,
    max_detections: int | None = None,
    candidates_per_class: int = 200,
    clip_boxes: bool = False,
) -> list[dict[str, Tensor]]:
    """``postprocess_detections`` after ``decode``: softmax ``scores [B, P, C + 1]`` and
    ``boxes [B, P, 4]`` to per-image detections."""
    scores = scores[..., 1:]  # [B, P, C]
    batch, num_priors, num_classes = scores.shape
    if clip_boxes:
        boxes = clip_boxes_to_image(boxes, (int(image_size[0]), int(image_size[1])))

    k = min(candidates_per_class, num_priors)
    top_scores, top_idx = scores.topk(k, dim=1)  # [B, k, C]
    top_boxes = boxes.gather(1, top_idx.reshape(batch, k * num_classes, 1).expand(-1, -1, 4))
    labels = torch.arange(1, num_classes + 1, device=scores.device).expand(batch, k, num_classes)
    image_ids = torch.arange(batch, device=scores.device)[:, None, None].expand(batch, k, num_classes)

    top_scores, top_boxes = top_scores.reshape(-1), top_boxes.reshape(-1, 4)
    labels, image_ids = labels.reshape(-1), image_ids.reshape(-1)
    keep = torch.nonzero(top_scores > score_thresh).squeeze(1)
    top_scores, top_boxes, labels, image_ids = top_scores[keep], top_boxes[keep], labels[keep], image_ids[keep]
    # One NMS call for the batch: a group per (image, class).
    kept = batched_nms(top_boxes, top_scores, image_ids * num_classes + labels - 1, nms_iou)
    kept_images = image_ids[kept]
    results = []
    for b in range(batch):
        mine = kept[kept_images == b]  # batched_nms sorts by score
        if max_detections is not None:
            mine = mine[:max_detections]
        results.append({"boxes": top_boxes[mine], "scores": top_scores[mine], "labels": labels[mine]})
    return results
