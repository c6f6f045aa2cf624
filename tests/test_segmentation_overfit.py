"""End-to-end proof on genuine data: DeepLabv3 with the thesis' backbone cut learns the three
VOC2012 fixture images (mIoU >= 0.8 on them), through the real reader, loss and metric."""
import albumentations as A
import cv2
import pytest
import torch
from albumentations.pytorch import ToTensorV2
from torchmetrics.classification import MulticlassConfusionMatrix

from data.voc_segmentation import VOCSegmentation
from tasks.segmentation import SegmentationTask
from tasks.segmentation_metrics import segmentation_scores
from tests.helpers import FIXTURES

SIZE = 224
CHECK_EVERY, MAX_STEPS = 25, 300  # measured: mIoU passes 0.8 after ~100 steps


@pytest.mark.slow
def test_deeplabv3_overfits_the_genuine_voc2012_images():
    torch.manual_seed(0)
    resize = A.Compose([A.Resize(SIZE, SIZE, interpolation=cv2.INTER_LINEAR,
                                 mask_interpolation=cv2.INTER_NEAREST),
                        A.Normalize(), ToTensorV2()])
    voc = FIXTURES / "VOCdevkit" / "VOC2012"
    samples = [VOCSegmentation(voc, split, transform=resize)[i] for split in ("train", "val")
               for i in range(len(VOCSegmentation(voc, split)))]
    images = torch.stack([image for image, _ in samples])
    masks = torch.stack([mask for _, mask in samples])
    assert images.shape[0] == 3 and set(masks.unique().tolist()) == {0, 1, 9, 12, 15, 255}

    task = SegmentationTask(backbone="mv2_e2", num_classes=21, cut="stride16")
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3, weight_decay=0.0)
    history = []
    for step in range(1, MAX_STEPS + 1):
        task.train()
        loss = task.loss(task(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % CHECK_EVERY == 0:
            task.eval()
            confusion = MulticlassConfusionMatrix(21, ignore_index=255)
            with torch.no_grad():
                confusion.update(task(images).argmax(1), masks)
            miou = float(segmentation_scores(confusion.compute())["miou"])
            history.append((step, round(loss.item(), 4), round(miou, 3)))
            if miou >= 0.8:
                break
    assert history[-1][2] >= 0.8, history
