"""SSD training targets and MultiBox loss, vectorised over the batch (no host syncs).

Matching (SSD paper, ssd.pytorch ``match``, mb2-ssd-lite ``assign_priors``): a prior is positive
for the ground-truth box it overlaps most when that IoU is >= ``iou_threshold``; in addition every
ground-truth box is forced onto its best-overlapping prior, whatever the IoU, and that prior is
assigned to *this* box (when several boxes share a best prior, the last one wins, as in the
reference loop). torchvision's ``Matcher(allow_low_quality_matches=True)`` differs: it keeps the
best priors positive but assigns them to their own best box, and it also promotes every tied
prior, so it is not used here.

Loss: smooth-L1 on the positives' SSD offsets + cross-entropy on positives and the hardest
negatives (``neg_pos_ratio`` per positive, per image), both summed and divided by the number of
positives in the batch (at least 1, so images without boxes only contribute nothing).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_iou

from errors import ConfigError
from heads.priors import box_coder


class PaddedTargets(NamedTuple):
    boxes: Tensor  # [B, N, 4] xyxy, zeros where padded
    labels: Tensor  # [B, N] long, 0 where padded
    valid: Tensor  # [B, N] bool


def pad_targets(targets: Sequence[dict[str, Tensor]], device: torch.device) -> PaddedTargets:
    """Stacks per-image boxes/labels into padded tensors (N = max boxes, at least 1)."""
    boxes = [t["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4) for t in targets]
    labels = [t["labels"].to(device=device, dtype=torch.long).reshape(-1) for t in targets]
    valid = [torch.ones(len(b), dtype=torch.bool, device=device) for b in boxes]
    # A dummy invalid column keeps every shape non-empty when no image has a box.
    boxes.append(torch.zeros(1, 4, device=device))
    labels.append(torch.zeros(1, dtype=torch.long, device=device))
    valid.append(torch.zeros(1, dtype=torch.bool, device=device))
    return PaddedTargets(
        pad_sequence(boxes, batch_first=True)[:-1],
        pad_sequence(labels, batch_first=True)[:-1],
        pad_sequence(valid, batch_first=True, padding_value=False)[:-1],
    )


class MatchResult(NamedTuple):
    matched_idx: Tensor  # [B, P] index of the ground-truth box each prior is assigned to
    positive: Tensor  # [B, P] bool


def match_priors(priors: Tensor, gt_boxes: Tensor, gt_valid: Tensor, iou_threshold: float = 0.5) -> MatchResult:
    """SSD matching of ``priors [P,4]`` to padded ``gt_boxes [B,N,4]`` (see module docstring)."""
    batch, num_gt = gt_valid.shape
    num_priors = priors.shape[0]
    iou = box_iou(priors, gt_boxes.reshape(-1, 4)).view(num_priors, batch, num_gt).permute(1, 0, 2)
    iou = iou.masked_fill(~gt_valid[:, None, :], -1.0)  # [B, P, N]
    best_gt_iou, best_gt_idx = iou.max(dim=2)  # [B, P]
    best_prior_idx = iou.argmax(dim=1)  # [B, N]
    # Force-match: scatter each valid box's index onto its best prior (padded boxes go to a
    # spare column P that is dropped); "amax" makes the last box win deterministically.
    target_column = torch.where(gt_valid, best_prior_idx, torch.full_like(best_prior_idx, num_priors))
    gt_index = torch.arange(num_gt, device=priors.device).expand(batch, num_gt)
    forced = torch.full((batch, num_priors + 1), -1, dtype=torch.long, device=priors.device)
    forced = forced.scatter_reduce(1, target_column, gt_index, reduce="amax")[:, :num_priors]
    is_forced = forced >= 0
    matched_idx = torch.where(is_forced, forced, best_gt_idx)
    positive = is_forced | (best_gt_iou >= iou_threshold)
    return MatchResult(matched_idx, positive)


def hard_negative_mask(background_loss: Tensor, positive: Tensor, neg_pos_ratio: float) -> Tensor:
    """Positives plus, per image, the ``neg_pos_ratio * num_pos`` negatives of highest loss."""
    num_neg = (positive.sum(dim=1, keepdim=True) * neg_pos_ratio).floor()
    loss = background_loss.masked_fill(positive, float("-inf"))
    order = loss.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)
    return positive | (rank < num_neg)


class SSDLoss(nn.Module):
    """MultiBox loss; returns ``dict(loss, loss_box, loss_cls, num_positives)``."""

    def __init__(self, iou_threshold: float = 0.5, neg_pos_ratio: float = 3.0) -> None:
        super().__init__()
        if not 0 < iou_threshold <= 1:
            raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if neg_pos_ratio < 0:
            raise ConfigError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
        self.iou_threshold = iou_threshold
        self.neg_pos_ratio = neg_pos_ratio
        self.box_coder = box_coder()

    def forward(self, cls_logits: Tensor, box_regression: Tensor, priors: Tensor,
                targets: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        batch, num_priors, num_columns = cls_logits.shape
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch} images")
        cls_logits, box_regression = cls_logits.float(), box_regression.float()
        priors = priors.float()
        gt = pad_targets(targets, cls_logits.device)
        match = match_priors(priors, gt.boxes, gt.valid, self.iou_threshold)
        positive = match.positive

        labels = gt.labels.gather(1, match.matched_idx) * positive
        matched_boxes = gt.boxes.gather(1, match.matched_idx[..., None].expand(-1, -1, 4))
        # Negatives get their own prior as target (zero offsets) so no log(0) reaches the loss.
        prior_boxes = priors.expand(batch, num_priors, 4)
        matched_boxes = torch.where(positive[..., None], matched_boxes, prior_boxes)
        box_targets = self.box_coder.encode_single(matched_boxes.reshape(-1, 4), prior_boxes.reshape(-1, 4))
        box_loss = F.smooth_l1_loss(box_regression.reshape(-1, 4), box_targets, reduction="none")
        box_loss = (box_loss.sum(dim=1).view(batch, num_priors) * positive).sum()

        cls_loss = F.cross_entropy(cls_logits.reshape(-1, num_columns), labels.reshape(-1),
                                   reduction="none").view(batch, num_priors)
        with torch.no_grad():
            selected = hard_negative_mask(cls_loss.detach(), positive, self.neg_pos_ratio)
        cls_loss = (cls_loss * selected).sum()

        num_positives = positive.sum()
        normaliser = num_positives.clamp(min=1).float()
        loss_box, loss_cls = box_loss / normaliser, cls_loss / normaliser
        return {"loss": loss_box + loss_cls, "loss_box": loss_box, "loss_cls": loss_cls,
                "num_positives": num_positives}
