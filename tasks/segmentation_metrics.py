"""Segmentation scores from a pixel confusion matrix accumulated over a whole evaluation set.

The matrix itself is torchmetrics' ``MulticlassConfusionMatrix`` (its state is summed across
DDP processes). The reduction is written here because torchmetrics' per-class Jaccard
(``average=None``) reports classes that never occur (no ground truth, no prediction) as
``zero_division`` (0), while the VOC evaluation leaves them out of the mean; here they are NaN
and ``miou`` is the mean over the classes with a non-empty union. This equals torchmetrics'
``MulticlassJaccardIndex(average="macro")``, which also drops classes of empty union.
"""
from __future__ import annotations

import torch


def iou_per_class(confmat: torch.Tensor) -> torch.Tensor:
    """IoU of each class from a [C, C] matrix (rows = ground truth); NaN where the union is empty."""
    if confmat.ndim != 2 or confmat.shape[0] != confmat.shape[1]:
        raise ValueError(f"expected a square [C, C] confusion matrix, got shape {tuple(confmat.shape)}")
    confmat = confmat.double()
    intersection = confmat.diag()
    union = confmat.sum(0) + confmat.sum(1) - intersection
    iou = intersection / union
    return torch.where(union > 0, iou, torch.full_like(iou, float("nan")))


def mean_iou(confmat: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the classes present in the ground truth or the predictions."""
    return iou_per_class(confmat).nanmean()


def pixel_accuracy(confmat: torch.Tensor) -> torch.Tensor:
    """Fraction of labelled (not ignored) pixels predicted correctly."""
    confmat = confmat.double()
    return confmat.diag().sum() / confmat.sum()


def segmentation_scores(confmat: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"miou", "pixel_acc", "iou": [C] tensor}`` as float32 scalars/tensor."""
    iou = iou_per_class(confmat)
    return {
        "miou": iou.nanmean().float(),
        "pixel_acc": pixel_accuracy(confmat).float(),
        "iou": iou.float(),
    }
