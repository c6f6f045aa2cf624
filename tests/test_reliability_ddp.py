"""Detection and segmentation evaluation under DDP with uneven shards equals one process: the
losses are image-weighted means kept as metric states (torchmetrics MeanMetric; a mean of
per-process means would not be), and the mAP / mIoU states are gathered whole (COCO mAP through
tasks.coco_metric, which accepts a different number of images per process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import compose_config

REPO = Path(__file__).resolve().parents[1]

# 5 evaluation images: 2 processes get 3 + 2 (no padding), so a mean of per-process means differs.
TINY = {
    "detection": ["task=detection", "synthetic.image_size=64", "synthetic.generator.num_train=8",
                  "synthetic.generator.num_test=5", "synthetic.generator.image_size=72",
                  "batch_size=4"],
    "segmentation": ["task=segmentation", "synthetic.image_size=64", "synthetic.generator.num_train=8",
                     "synthetic.generator.num_val=5", "synthetic.generator.image_size=72",
                     "synthetic.warmup_epochs=0", "batch_size=4"],
}


# Metrics that must not change when the 5 test images are split 3 + 2 over two processes.
SAME_UNDER_DDP = {"detection": ["test/loss", "test/map", "test/map_coco", "test/map_coco_50"],
                  "segmentation": ["test/loss", "test/miou", "test/pixel_acc"]}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_ddp_test_loss_equals_single_process(task, tmp_path):
    from eval import evaluate
    from train import train

    overrides = [*TINY[task], "data=synthetic", f"paths.synthetic_dir={tmp_path / 'data'}",
                 "backbone=mv2_e2", "backbone.width_mult=0.35", "trainer.max_epochs=1", "test=false",
                 "logger=csv"]
    train(compose_config("train", overrides, tmp_path / "train"))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    single = evaluate(compose_config("eval", [f"ckpt_path={ckpt}", "+data.batch_size=1"],
                                     tmp_path / "eval1"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COG_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "eval.py", f"ckpt_path={ckpt}", "trainer=ddp", "trainer.devices=2",
         "trainer.accelerator=cpu", "num_workers=0", "+data.batch_size=1",
         f"hydra.run.dir={tmp_path / 'eval2'}"],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr
    ddp = json.loads(Path(str(ckpt) + ".eval.json").read_text())["metrics"]
    for key in SAME_UNDER_DDP[task]:
        assert ddp[key] == pytest.approx(single[key], rel=1e-5, abs=1e-9), (key, ddp[key], single[key])


def _batches(task: str):
    generator = torch.Generator().manual_seed(0)
    for scale, size in ((1.0, 3), (4.0, 1), (0.25, 2)):
        images = scale * torch.randn(size, 3, 64, 64, generator=generator)
        if task == "segmentation":
            yield images, torch.randint(0, 3, (size, 64, 64), generator=generator)
        else:  # a different number of objects per batch: different matching and loss
            boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 2.0, 62.0, 20.0],
                                  [10.0, 40.0, 24.0, 60.0]])[: int(4 - size)]
            targets = [{"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.long),
                        "difficult": torch.zeros(len(boxes), dtype=torch.bool)} for _ in range(size)]
            yield images, targets


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_evaluation_loss_is_an_image_weighted_metric_state(task):
    """Uneven batches (3, 1, 2 images): the logged loss is the image-weighted mean, and two
    shards' states merged (what the DDP sync does) give the same value as one process."""
    from tasks.detection import DetectionTask
    from tasks.segmentation import SegmentationTask

    backbone = {"name": "mv2_e2", "width_mult": 0.35}
    model = (DetectionTask(backbone=backbone, num_classes=2) if task == "detection"
             else SegmentationTask(backbone=backbone, num_classes=3)).eval()
    if task == "segmentation":
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():  # confident predictions: the batches' losses differ clearly
            for parameter in model.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    losses, sizes = [], []
    with torch.no_grad():
        for batch in _batches(task):
            model.validation_step(batch, 0)
            output = model(batch[0])
            losses.append(float(model._loss(output, batch[1])["loss"] if task == "detection"
                                else model.loss(output, batch[1])))
            sizes.append(batch[0].shape[0])
    expected = sum(l * n for l, n in zip(losses, sizes)) / sum(sizes)
    assert float(model.val_loss.compute()) == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(sum(losses) / len(losses), rel=1e-3)  # weighting matters here

    shard_a, shard_b = type(model.val_loss)(), type(model.val_loss)()
    shard_a.update(torch.tensor(losses[:2]), weight=torch.tensor(sizes[:2], dtype=torch.float))
    shard_b.update(torch.tensor(losses[2:]), weight=torch.tensor(sizes[2:], dtype=torch.float))
    shard_a.merge_state(shard_b)
    assert float(shard_a.compute()) == pytest.approx(expected, rel=1e-5)
