"""COCO mAP@[.5:.95] that stays correct under DDP when ranks hold different numbers of images.

torchmetrics' ``MeanAveragePrecision`` keeps one tensor per image and syncs by gathering each
list element with its own ``all_gather``; that assumes every rank saw the same number of images
(DistributedSampler padding, which repeats images and biases the score). The suite's evaluation
loaders shard without padding (``data/loaders.py``), so a 5-image test set gives 3 + 2 images
and the collectives mismatch (gloo: "Received data size doesn't match expected size"). This
subclass gathers each rank's whole per-image lists as one object instead; the scoring itself is
torchmetrics' (pycocotools backend) unchanged.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from lightning_utilities.core.apply_func import apply_to_collection
from torchmetrics.detection import MeanAveragePrecision


class COCOMeanAveragePrecision(MeanAveragePrecision):
    """``MeanAveragePrecision`` whose sync accepts a different number of images per rank."""

    def _sync_dist(self, dist_sync_fn: Callable | None = None, process_group: Any | None = None) -> None:
        group = process_group or self.process_group
        world_size = dist.get_world_size(group=group)
        for name in self._reductions:
            local = getattr(self, name)
            if not isinstance(local, list):  # every state of this metric is a per-image list
                raise TypeError(f"{type(self).__name__}: state {name!r} is not a list; "
                                "torchmetrics changed MeanAveragePrecision, revisit this sync")
            # CPU copies: objects are pickled, and a CUDA tensor would unpickle on its source GPU
            # (also inside the RLE tuples of "segm" masks: apply_to_collection walks those).
            shards: list[Any] = [None] * world_size
            dist.all_gather_object(shards, apply_to_collection(local, torch.Tensor, _to_cpu), group=group)
            # Round-robin: the evaluation sampler gives rank r the images r, r + W, r + 2W, ...,
            # so this restores the single-process image order (pycocotools breaks score ties by
            # order). Every state is gathered the same way, so an image's detections and ground
            # truth stay at the same index.
            longest = max(len(shard) for shard in shards)
            merged = [shard[j] for j in range(longest) for shard in shards if j < len(shard)]
            setattr(self, name, apply_to_collection(merged, torch.Tensor, torch.Tensor.to, self.device))


def _to_cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().cpu()
