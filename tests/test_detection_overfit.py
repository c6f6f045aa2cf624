"""End-to-end proof that matching, box coding, loss, decoding, NMS and the VOC metric fit together:
SSD-Lite (mb2-ssd-lite head and priors, 300 px) trained on the 6 genuine VOC2007 fixture images,
augmentation off, must reach VOC07 mAP >= 0.9 on those same images (difficult boxes ignored as
VOC does). Under a minute on one thread (25 s wall, 48 CPU-s measured)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import ConcatDataset

from data.detection_transforms import eval_transform, train_transform
from data.voc_detection import VOCDetection, collate_detection
from tasks.detection import DetectionTask
from tasks.metrics import VOCMeanAveragePrecision


@pytest.mark.slow
def test_detector_overfits_the_six_voc_fixture_images(fixtures_dir):
    voc2007 = fixtures_dir / "VOCdevkit" / "VOC2007"
    splits = ("trainval", "test")  # 4 + 2 images, 18 objects (2 difficult)
    train = ConcatDataset([VOCDetection(voc2007, s, keep_difficult=False, transform=train_transform(300, "none"))
                           for s in splits])
    evaluation = ConcatDataset([VOCDetection(voc2007, s, keep_difficult=True, transform=eval_transform(300))
                                for s in splits])
    images, targets = collate_detection([train[i] for i in range(len(train))])
    eval_images, eval_targets = collate_detection([evaluation[i] for i in range(len(evaluation))])
    assert len(images) == 6 and sum(len(t["boxes"]) for t in eval_targets) == 18

    torch.manual_seed(0)
    task = DetectionTask({"name": "mv2_e2", "width_mult": 0.35}, num_classes=20, prior_centers="mb2_ssd_lite")
    optimizer = torch.optim.AdamW(task.parameters(), lr=0.003, weight_decay=0.0)
    history = []
    for step in range(1, 201):
        task.train()
        loss = task._loss(task(images), targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            task.eval()
            metric = VOCMeanAveragePrecision(num_classes=20, use_07_metric=True)
            metric.update(task.detect(eval_images), eval_targets)
            history.append((step, round(loss.item(), 3), round(float(metric.compute()["map"]), 3)))
            if history[-1][2] >= 0.9:
                break
    assert history[-1][2] >= 0.9, history
