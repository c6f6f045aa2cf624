"""PASCAL VOC detection metric (mean average precision at one IoU threshold).

Written by hand because torchmetrics' ``MeanAveragePrecision`` implements the COCO protocol
(101-point interpolation, area ranges, crowd handling, IoU 0.50:0.95), not VOC's 11-point /
all-points AP with its ``difficult`` rules. This module mirrors the reference ``voc_eval.py``
(py-faster-rcnn, Detectron) decision for decision; ``tests/voc_eval_reference.py`` holds a
port of that code and the tests compare both on randomized datasets.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn
from torchmetrics.utilities.data import dim_zero_cat
from torchvision.ops import box_iou

from errors import ConfigError

# The 11 recall points exactly as voc_eval's ``np.arange(0., 1.1, 0.1)`` computes them (i * 0.1,
# so the fourth is 0.30000000000000004 and a recall of exactly 3/10 does not reach it).
_ELEVEN_RECALL_POINTS = torch.arange(11, dtype=torch.float64) * 0.1
# voc_eval's guard against 0/0 precision when the top detections only hit difficult boxes.
_EPS = torch.finfo(torch.float64).eps


class VOCMeanAveragePrecision(Metric):
    """VOC mAP: per-class AP at IoU > ``iou_threshold``, averaged over classes.

    Inputs (one dict per image, torchmetrics style):

    - ``preds``: ``boxes`` [N, 4] xyxy float, ``scores`` [N], ``labels`` [N] int.
    - ``target``: ``boxes`` [M, 4], ``labels`` [M], optional ``difficult`` [M] bool.

    Labels are object class ids ``1..num_classes`` (0 is the background and is rejected).

    ``compute()`` returns ``map`` (scalar), ``map_per_class`` [K] and ``classes`` [K] (label
    ids; ``1..num_classes`` when ``num_classes`` is given, else the ids seen). A class with no
    non-difficult ground-truth box has no defined recall: its entry in ``map_per_class`` is NaN
    and it is left out of ``map`` (``map`` is NaN if no class has one). As for every torchmetrics
    metric, one-element results come back squeezed to 0-dim.

    Rules, as in ``voc_eval.py``:

    - Detections of a class are ranked by score over the whole dataset. The sort is stable:
      equal scores keep the order in which they arrived (image order, then the order inside an
      image; under DDP the gathered order, rank by rank). ``voc_eval`` uses ``np.argsort``'s
      default (unstable) quicksort, whose tie order is unspecified; the reference port used by
      the tests sorts with ``kind="stable"``.
    - Each detection takes the ground-truth box of its class in its image with the largest IoU
      (the first on ties), difficult or already matched ones included. It is a true positive
      if that IoU is strictly greater than ``iou_threshold`` and the box is neither difficult
      nor already matched; it is ignored (neither TP nor FP) if the box is difficult; anything
      else (duplicates included) is a false positive. Difficult boxes are not positives.
    - ``use_07_metric=True``: VOC2007 11-point interpolated AP; ``False``: VOC2010+ area under
      the interpolated precision envelope (all points).

    Boxes are continuous pixel coordinates. VOC annotations hold 1-based inclusive integer
    pixels and ``voc_eval`` adds 1 to widths and heights; the data pipeline converts them on
    load to ``(xmin - 1, ymin - 1, xmax, ymax)``, for which the plain continuous IoU
    (``torchvision.ops.box_iou``, computed here in float64) equals ``voc_eval``'s IoU on the
    original boxes exactly. Detections map the same way (``voc_eval``'s ``(x1 + 1, y1 + 1, x2,
    y2)``).

    State is kept per box (boxes and scores as float32) with per-image box counts and is
    concatenated across processes, so DDP gives the single-process result (up to the order of
    equal scores). ``update`` only validates shapes and stores; all the work (and every
    device-to-host sync) happens in ``compute``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        iou_threshold: float = 0.5,
        use_07_metric: bool = True,
        dist_sync_on_step: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(dist_sync_on_step=dist_sync_on_step, **kwargs)
        if class_names is not None:
            class_names = [str(name) for name in class_names]
            if num_classes is None:
                num_classes = len(class_names)
            elif len(class_names) != num_classes:
                raise ConfigError(
                    f"class_names has {len(class_names)} names but num_classes is {num_classes}; "
                    "give one name per object class (background excluded)"
                )
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ConfigError(f"num_classes must be a positive int (object classes, background excluded), "
                             f"got {num_classes!r}")
        if not 0.0 <= float(iou_threshold) < 1.0:
            raise ConfigError(f"iou_threshold must be in [0, 1), got {iou_threshold!r}")
        self.num_classes = num_classes
        self.class_names = class_names
        self.iou_threshold = float(iou_threshold)
        self.use_07_metric = bool(use_07_metric)

        for name in ("pred_boxes", "pred_scores", "pred_labels", "pred_counts",
                     "gt_boxes", "gt_labels", "gt_difficult", "gt_counts"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[Mapping[str, Tensor]], target: Sequence[Mapping[str, Tensor]]) -> None:
        """Store one batch: ``preds`` and ``target`` hold one dict per image, in the same order."""
        if not isinstance(preds, Sequence) or not isinstance(target, Sequence):
            raise ValueError("preds and target must be lists with one dict per image, "
                             f"got {type(preds).__name__} and {type(target).__name__}")
        if len(preds) != len(target):
            raise ValueError(f"preds and target must hold one dict per image, got {len(preds)} preds "
                             f"and {len(target)} targets")
        pred_boxes, pred_scores, pred_labels = [], [], []
        gt_boxes, gt_labels, gt_difficult = [], [], []
        for index, (pred, gt) in enumerate(zip(preds, target)):
            boxes, (scores, labels) = _boxes_and_fields(pred, "preds", index, ("scores", "labels"))
            pred_boxes.append(boxes)
            pred_scores.append(scores)
            pred_labels.append(labels)
            optional = ("difficult",) if isinstance(gt, Mapping) and "difficult" in gt else ()
            boxes, fields = _boxes_and_fields(gt, "target", index, ("labels", *optional))
            gt_boxes.append(boxes)
            gt_labels.append(fields[0])
            gt_difficult.append(fields[1].bool() if optional else torch.zeros_like(fields[0], dtype=torch.bool))
        for index, (scores, labels) in enumerate(zip(pred_scores, pred_labels)):
            if not scores.is_floating_point():
                raise ValueError(f"preds[{index}]['scores'] must be floating point, got {scores.dtype}")
            _check_integer_labels(labels, "preds", index)
        for index, labels in enumerate(gt_labels):
            _check_integer_labels(labels, "target", index)

        device = self.device
        self.pred_boxes.append(_cat(pred_boxes, (0, 4), torch.float32, device))
        self.pred_scores.append(_cat(pred_scores, (0,), torch.float32, device))
        self.pred_labels.append(_cat(pred_labels, (0,), torch.long, device))
        self.pred_counts.append(torch.tensor([len(b) for b in pred_boxes], dtype=torch.long, device=device))
        self.gt_boxes.append(_cat(gt_boxes, (0, 4), torch.float32, device))
        self.gt_labels.append(_cat(gt_labels, (0,), torch.long, device))
        # Stored as int64: every all-gather backend supports it.
        self.gt_difficult.append(_cat(gt_difficult, (0,), torch.long, device))
        self.gt_counts.append(torch.tensor([len(b) for b in gt_boxes], dtype=torch.long, device=device))

    def compute(self) -> dict[str, Tensor]:
        device = self.device
        pred_boxes = _state(self.pred_boxes, (0, 4), torch.float64, device)
        pred_scores = _state(self.pred_scores, (0,), torch.float32, device)
        pred_labels = _state(self.pred_labels, (0,), torch.long, device)
        pred_counts = _state(self.pred_counts, (0,), torch.long, device)
        gt_boxes = _state(self.gt_boxes, (0, 4), torch.float64, device)
        gt_labels = _state(self.gt_labels, (0,), torch.long, device)
        gt_difficult = _state(self.gt_difficult, (0,), torch.long, device).bool()
        gt_counts = _state(self.gt_counts, (0,), torch.long, device)
        self._check_values(pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels)

        if self.num_classes is not None:
            classes = torch.arange(1, self.num_classes + 1, device=device)
        else:
            classes = torch.unique(torch.cat([gt_labels, pred_labels]))

        num_gt = gt_boxes.shape[0]
        best_iou, best_gt = _best_overlaps(pred_boxes, pred_labels, pred_counts, gt_boxes, gt_labels, gt_counts)
        above = best_iou > self.iou_threshold  # strict, as voc_eval's ``ovmax > ovthresh``
        # Index num_gt is a padding slot (not difficult) for detections of images without boxes.
        difficult_padded = torch.cat([gt_difficult, gt_difficult.new_zeros(1)])
        ignored = above & difficult_padded[best_gt]
        candidate = above & ~ignored

        # Rank over all detections; restricted to one class it is that class's ranking.
        order = torch.sort(pred_scores, descending=True, stable=True).indices
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=device)
        # Of the candidates pointing at a ground-truth box, the best ranked one matches it; the
        # others are duplicates (false positives), as in voc_eval's sequential ``det`` flags.
        first_rank = torch.full((num_gt + 1,), order.numel(), dtype=torch.long, device=device)
        first_rank.scatter_reduce_(0, best_gt[candidate], rank[candidate], reduce="amin")
        is_tp = candidate & (rank == first_rank[best_gt])
        is_fp = ~(is_tp | ignored)

        by_class = order[torch.sort(pred_labels[order], stable=True).indices]
        labels_sorted = pred_labels[by_class]
        tp_sorted = is_tp[by_class].double()
        fp_sorted = is_fp[by_class].double()
        starts = torch.searchsorted(labels_sorted, classes, side="left").tolist()
        ends = torch.searchsorted(labels_sorted, classes, side="right").tolist()
        positives = gt_labels[~gt_difficult]
        num_positives = (positives[:, None] == classes[None, :]).sum(0).tolist()

        ap_fn = _eleven_point_ap if self.use_07_metric else _area_ap
        ap_per_class = []
        for start, end, npos in zip(starts, ends, num_positives):
            if npos == 0:
                ap_per_class.append(torch.tensor(float("nan"), dtype=torch.float64, device=device))
                continue
            tp = tp_sorted[start:end].cumsum(0)
            fp = fp_sorted[start:end].cumsum(0)
            recall = tp / float(npos)
            precision = tp / torch.clamp(tp + fp, min=_EPS)
            ap_per_class.append(ap_fn(recall, precision))
        map_per_class = (torch.stack(ap_per_class) if ap_per_class
                         else torch.zeros(0, dtype=torch.float64, device=device))
        if not any(n > 0 for n in num_positives):
            rank_zero_warn("VOCMeanAveragePrecision: no class has a non-difficult ground-truth box; map is NaN.")
        return {
            "map": map_per_class.nanmean().float(),
            "map_per_class": map_per_class.float(),
            "classes": classes,
        }

    def per_class(self, result: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{class name: AP}`` from a ``compute()`` result (``class_<id>`` when no names were given)."""
        names = {}
        # reshape: torchmetrics squeezes one-element results to 0-dim.
        for label, ap in zip(result["classes"].reshape(-1).tolist(), result["map_per_class"].reshape(-1)):
            if self.class_names is not None:
                names[self.class_names[label - 1]] = ap
            else:
                names[f"class_{label}"] = ap
        return names

    def _check_values(self, pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels) -> None:
        labels = torch.cat([pred_labels, gt_labels])
        low, high = (labels.aminmax() if labels.numel() else (labels.new_tensor(1), labels.new_tensor(1)))
        checks = torch.stack([
            torch.isfinite(pred_boxes).all() & torch.isfinite(gt_boxes).all(),
            torch.isfinite(pred_scores).all(),
            (pred_boxes[:, 2:] >= pred_boxes[:, :2]).all() & (gt_boxes[:, 2:] >= gt_boxes[:, :2]).all(),
            low >= 1,
            high <= (self.num_classes if self.num_classes is not None else high),
        ]).tolist()  # one device-to-host sync
        messages = [
            "boxes must be finite",
            "scores must be finite (a NaN score cannot be ranked)",
            "boxes must be xyxy with x2 >= x1 and y2 >= y1",
            f"labels must be object class ids >= 1 (0 is the background), got a minimum of {int(low)}",
            f"labels must be <= num_classes={self.num_classes}, got a maximum of {int(high)}; "
            "check that num_classes counts the object classes of the dataset",
        ]
        for ok, message in zip(checks, messages):
            if not ok:
                raise ValueError(f"VOCMeanAveragePrecision: {message}")


def _boxes_and_fields(item, kind: str, index: int, fields: tuple[str, ...]) -> tuple[Tensor, list[Tensor]]:
    if not isinstance(item, Mapping):
        raise ValueError(f"{kind}[{index}] must be a dict, got {type(item).__name__}")
    missing = [key for key in ("boxes", *fields) if key not in item]
    if missing:
        raise ValueError(f"{kind}[{index}] lacks the key(s) {missing}; expected 'boxes' and {list(fields)}")
    values = [item[key] for key in ("boxes", *fields)]
    for key, value in zip(("boxes", *fields), values):
        if not isinstance(value, Tensor):
            raise ValueError(f"{kind}[{index}]['{key}'] must be a tensor, got {type(value).__name__}")
    boxes = values[0].detach()
    if boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{kind}[{index}]['boxes'] must have shape [N, 4] (xyxy), got {tuple(boxes.shape)}")
    others = [value.detach() for value in values[1:]]
    for key, value in zip(fields, others):
        if value.ndim != 1 or value.shape[0] != boxes.shape[0]:
            raise ValueError(f"{kind}[{index}]['{key}'] must have shape [{boxes.shape[0]}] (one per box), "
                             f"got {tuple(value.shape)}")
    return boxes, others


def _check_integer_labels(labels: Tensor, kind: str, index: int) -> None:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{kind}[{index}]['labels'] must be an integer tensor, got {labels.dtype}")


def _cat(tensors: list[Tensor], empty_shape: tuple[int, ...], dtype: torch.dtype, device) -> Tensor:
    if not tensors:
        return torch.zeros(empty_shape, dtype=dtype, device=device)
    return torch.cat([t.to(device=device, dtype=dtype) for t in tensors])


def _state(value: list[Tensor] | Tensor, empty_shape: tuple[int, ...], dtype: torch.dtype, device) -> Tensor:
    """A list state (or its synced concatenation) as one tensor, also when nothing was stored."""
    if isinstance(value, list) and not value:
        return torch.zeros(empty_shape, dtype=dtype, device=device)
    return dim_zero_cat(value).to(dtype).reshape(-1, *empty_shape[1:])


def _best_overlaps(pred_boxes, pred_labels, pred_counts, gt_boxes, gt_labels, gt_counts) -> tuple[Tensor, Tensor]:
    """Per detection: largest IoU with a same-class ground-truth box of its image, and that box's index.

    The index is ``len(gt_boxes)`` (a padding slot) and the IoU -inf where the image has no box.
    """
    num_preds, num_gt = pred_boxes.shape[0], gt_boxes.shape[0]
    best_iou = torch.full((num_preds,), float("-inf"), dtype=torch.float64, device=pred_boxes.device)
    best_gt = torch.full((num_preds,), num_gt, dtype=torch.long, device=pred_boxes.device)
    pred_start = gt_start = 0
    for n_pred, n_gt in zip(pred_counts.tolist(), gt_counts.tolist()):
        if n_pred and n_gt:
            preds = slice(pred_start, pred_start + n_pred)
            gts = slice(gt_start, gt_start + n_gt)
            iou = box_iou(pred_boxes[preds], gt_boxes[gts]).nan_to_num(nan=0.0)
            same_class = pred_labels[preds, None] == gt_labels[None, gts]
            iou = torch.where(same_class, iou, float("-inf"))
            column = iou.argmax(dim=1)  # first maximum, as np.argmax
            best_iou[preds] = iou.gather(1, column[:, None]).squeeze(1)
            best_gt[preds] = column + gt_start
        pred_start += n_pred
        gt_start += n_gt
    return best_iou, best_gt


def _eleven_point_ap(recall: Tensor, precision: Tensor) -> Tensor:
    """VOC2007: mean over recall points t of the best precision at recall >= t (0 if none)."""
    if recall.numel() == 0:
        return recall.new_zeros(())
    # Recall never decreases, so ``recall >= t`` is a suffix; its best precision is the envelope.
    envelope = precision.flip(0).cummax(0).values.flip(0)
    points = _ELEVEN_RECALL_POINTS.to(recall.device)
    first = torch.searchsorted(recall, points, side="left")
    reached = first < recall.numel()
    best = torch.where(reached, envelope[first.clamp(max=recall.numel() - 1)], 0.0)
    return (best / 11.0).sum()


def _area_ap(recall: Tensor, precision: Tensor) -> Tensor:
    """VOC2010+: area under the monotone precision envelope, summed where recall changes."""
    zero, one = recall.new_zeros(1), recall.new_ones(1)
    mrec = torch.cat([zero, recall, one])
    mpre = torch.cat([zero, precision, zero])
    mpre = mpre.flip(0).cummax(0).values.flip(0)
    changes = torch.nonzero(mrec[1:] != mrec[:-1]).squeeze(1)
    return ((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]).sum()
