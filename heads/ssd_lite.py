"""SSD-Lite head (MobileNetV2 paper, ``mb2-ssd-lite``): extra layers, class/box predictors, priors.

Detection features: two backbone taps (roles ``stride16_expansion`` at stride 16 and ``last`` at
stride 32; MobileNetV2: ``stage5_expand`` and ``last_conv``, other families: docs/families.md),
then four extra layers (1x1 to half the channels, depthwise 3x3 stride 2, 1x1 to the output
channels, each with BN + ReLU6), six maps in all. Class and box predictors are separable
convs (depthwise 3x3 + BN + ReLU6, then a 1x1 conv) on every map but the last, which gets a plain
1x1 conv as in mb2-ssd-lite (its map is 1x1, so a 3x3 depthwise would only see padding).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models.detection.ssd import SSDScoringHead
from torchvision.ops import Conv2dNormActivation, batched_nms, clip_boxes_to_image

from errors import ConfigError
from heads.priors import ASPECT_RATIOS, BOX_SIZES, REFERENCE_IMAGE_SIZE, SSDPriors, box_coder

EXTRA_CHANNELS = (512, 256, 256, 64)
HEAD_INIT_STD = 0.03  # torchvision ssdlite: normal(0, 0.03) for extras and predictors


class SSDLiteOutput(NamedTuple):
    cls_logits: Tensor  # [B, P, num_classes + 1], column 0 = background
    box_regression: Tensor  # [B, P, 4], SSD offsets against the priors
    priors: Tensor  # [P, 4] xyxy in pixels of the input image


def extra_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 -> out/2, depthwise 3x3 stride 2, 1x1 -> out; BN + ReLU6 after each."""
    mid = out_channels // 2
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid, kernel_size=1, activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, mid, kernel_size=3, stride=2, groups=mid, activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, out_channels, kernel_size=1, activation_layer=nn.ReLU6),
    )


def separable_predictor(in_channels: int, out_channels: int) -> nn.Sequential:
    """Depthwise 3x3 + BN + ReLU6, then a 1x1 conv with bias (SSD-Lite's predictor)."""
    return nn.Sequential(
        Conv2dNormActivation(in_channels, in_channels, kernel_size=3, groups=in_channels,
                             activation_layer=nn.ReLU6),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
    )


def _predictors(channels: Sequence[int], anchors: Sequence[int], columns: int) -> nn.ModuleList:
    last = len(channels) - 1
    return nn.ModuleList(
        separable_predictor(c, a * columns) if k < last else nn.Conv2d(c, a * columns, kernel_size=1)
        for k, (c, a) in enumerate(zip(channels, anchors))
    )


class SSDLiteHead(nn.Module):
    """Extras + predictors + priors on top of two backbone feature maps.

    Args:
        in_channels: channels of the two backbone taps (stride 16, stride 32).
        num_classes: object classes plus background.
        extra_channels: output channels of the extra layers.
        box_sizes / aspect_ratios / reference_size: prior settings (see ``heads.priors``).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        extra_channels: Sequence[int] = EXTRA_CHANNELS,
        box_sizes: Sequence[float] = BOX_SIZES,
        aspect_ratios: Sequence[int] = ASPECT_RATIOS,
        reference_size: float = REFERENCE_IMAGE_SIZE,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes counts background too and must be >= 2, got {num_classes}")
        in_channels, extra_channels = list(in_channels), list(extra_channels)
        self.num_classes = num_classes
        self.extras = nn.ModuleList(
            extra_block(c_in, c_out)
            for c_in, c_out in zip([in_channels[-1], *extra_channels[:-1]], extra_channels)
        )
        channels = in_channels + extra_channels
        self.priors = SSDPriors(len(channels), box_sizes, aspect_ratios, reference_size)
        anchors = self.priors.num_anchors
        self.classification = SSDScoringHead(_predictors(channels, anchors, num_classes), num_classes)
        self.regression = SSDScoringHead(_predictors(channels, anchors, 4), 4)
        for module in (self.extras, self.classification, self.regression):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, mean=0.0, std=HEAD_INIT_STD)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

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


@torch.no_grad()
def postprocess_detections(
    output: SSDLiteOutput,
    image_size: Sequence[int],
    score_thresh: float = 0.01,
    nms_iou: float = 0.45,
    max_detections: int = 200,
    candidates_per_class: int = 200,
) -> list[dict[str, Tensor]]:
    """Softmax scores, per-class NMS, top ``max_detections`` per image.

    As mb2-ssd-lite: each class keeps its ``candidates_per_class`` best priors above
    ``score_thresh``, then NMS at ``nms_iou`` per class and image. Returns per image
    ``dict(boxes [K,4] xyxy in pixels of the input image, scores [K], labels [K] in 1..C)``,
    sorted by score.
    """
    cls_logits, box_regression, priors = output
    batch, num_priors, num_columns = cls_logits.shape
    num_classes = num_columns - 1
    scores = torch.softmax(cls_logits.float(), dim=-1)[..., 1:]  # [B, P, C]
    boxes = box_coder().decode_single(box_regression.reshape(-1, 4).float(),
                                      priors.float().repeat(batch, 1))
    boxes = clip_boxes_to_image(boxes, (int(image_size[0]), int(image_size[1]))).view(batch, num_priors, 4)

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
        mine = kept[kept_images == b][:max_detections]  # batched_nms sorts by score
        results.append({"boxes": top_boxes[mine], "scores": top_scores[mine], "labels": labels[mine]})
    return results
