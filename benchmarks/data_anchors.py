"""The anchors of ``benchmarks.data_pipeline``: the training-sample pipelines this suite is
compared with, either imported from a checkout the user names or re-implemented here.

Re-implementations (labelled "anchor steps re-implemented" in the tables) follow the anchors'
documented behaviour step by step with the same libraries and data types, so they cost what the
anchors cost; they are written for this benchmark, not copied:

- qfgaohao/pytorch-ssd ``VOCDataset`` + ``TrainAugmentation(300, 127, 128)``: ``cv2.imread`` +
  BGR->RGB, XML parse, float32; photometric distortion in float (brightness add, contrast, float
  HSV with saturation and hue, channel swap; each p=0.5, numpy's global RNG); Expand onto a float
  canvas filled with the mean; the SSD random crop (loop over modes and 50 trials, every trial's
  IoUs computed as the reference does); mirror;
  ``cv2.resize``; subtract 127, divide by 128; ``torch.from_numpy(...).permute``.
- VainF/DeepLabV3Plus-Pytorch ``VOCSegmentation`` + its VOC train transforms: PIL open (RGB
  image, palette mask), ``ExtRandomScale((0.5, 2))`` (PIL bilinear / nearest resize), pad to the
  crop if needed and ``ExtRandomCrop``, ``ExtRandomHorizontalFlip``, ``to_tensor`` + ``Normalize``.
- torchvision's classification reference (``ImageFolder``'s PIL loader, ``RandomResizedCrop`` +
  ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize``) is torchvision itself, not re-implemented.
"""
from __future__ import annotations

import importlib.util
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Sample = Callable[[int], object]


# ------------------------------------------------------------------ real anchors (checkouts)
def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def qfgaohao_samples(checkout: Path, voc2007: Path) -> tuple[Sample, int]:
    """qfgaohao/pytorch-ssd's own ``VOCDataset`` with ``TrainAugmentation(300, 127, 128)`` (its
    ``train_ssd.py`` for mb2-ssd-lite), over the trainval and test ids."""
    checkout = Path(checkout).expanduser()
    if not (checkout / "vision" / "ssd" / "data_preprocessing.py").is_file():
        raise ConfigError(f"--anchor-path {checkout} is not a qfgaohao/pytorch-ssd checkout "
                          "(no vision/ssd/data_preprocessing.py); clone github.com/qfgaohao/pytorch-ssd")
    sys.path.insert(0, str(checkout))
    try:
        from vision.datasets.voc_dataset import VOCDataset
        from vision.ssd.data_preprocessing import TrainAugmentation
    finally:
        sys.path.remove(str(checkout))
    transform = TrainAugmentation(300, np.array([127, 127, 127]), 128.0)
    for step in transform.augment.transforms:
        if type(step).__name__ == "RandomSampleCrop":
            # numpy >= 1.24 no longer turns the ragged tuple of modes into an object array by
            # itself (``random.choice`` fails); hand it the object array older numpy made.
            options = np.empty(len(step.sample_options), dtype=object)
            options[:] = list(step.sample_options)
            step.sample_options = options
    parts = [VOCDataset(str(voc2007), transform=transform), VOCDataset(str(voc2007), transform=transform, is_test=True)]
    index = [(p, i) for p in parts for i in range(len(p))]
    return (lambda k: index[k][0][index[k][1]]), len(index)


def vainf_samples(checkout: Path, voc_root: Path, crop_size: int) -> tuple[Sample, int]:
    """VainF/DeepLabV3Plus-Pytorch's ``VOCSegmentation`` with ``main.py``'s VOC train transforms
    (its ``utils/__init__`` imports visdom, so the two files are loaded on their own)."""
    checkout = Path(checkout).expanduser()
    ext_path, voc_path = checkout / "utils" / "ext_transforms.py", checkout / "datasets" / "voc.py"
    if not ext_path.is_file() or not voc_path.is_file():
        raise ConfigError(f"--deeplab-path {checkout} is not a VainF/DeepLabV3Plus-Pytorch checkout "
                          "(no utils/ext_transforms.py, datasets/voc.py)")
    et = _load_module("_anchor_ext_transforms", ext_path)
    voc = _load_module("_anchor_vainf_voc", voc_path)
    transform = et.ExtCompose([
        et.ExtRandomScale((0.5, 2.0)),
        et.ExtRandomCrop(size=(crop_size, crop_size), pad_if_needed=True),
        et.ExtRandomHorizontalFlip(),
        et.ExtToTensor(),
        et.ExtNormalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    ])
    parts = [voc.VOCSegmentation(str(voc_root), image_set=s, transform=transform) for s in ("train", "val")]
    index = [(p, i) for p in parts for i in range(len(p))]
    return (lambda k: index[k][0][index[k][1]]), len(index)


def torchvision_classification_samples(paths: Sequence[Path], image_size: int) -> tuple[Sample, int]:
    """torchvision's reference: PIL loader (``ImageFolder``'s), RandomResizedCrop + flip +
    ToTensor + Normalize."""
    from torchvision import transforms as T

    transform = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def sample(k: int):
        with open(paths[k], "rb") as f:
            image = Image.open(f).convert("RGB")
        return transform(image)

    return sample, len(paths)


# ------------------------------------------------------------------ re-implementations
_VOC = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
        "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def _voc_boxes(xml_path: Path) -> tuple[np.ndarray, np.ndarray]:
    boxes, labels = [], []
    for obj in ET.parse(xml_path).findall("object"):
        if int(obj.findtext("difficult") or 0):
            continue
        box = obj.find("bndbox")
        boxes.append([float(box.findtext(k)) - 1 for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(_VOC.index(obj.findtext("name").strip()) + 1)
    return np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64)


def _ssd_photometric(image: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    if rng.randint(2):
        image += rng.uniform(-32, 32)
    contrast_first = rng.randint(2)
    if contrast_first and rng.randint(2):
        image *= rng.uniform(0.5, 1.5)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    if rng.randint(2):
        hsv[:, :, 1] *= rng.uniform(0.5, 1.5)
    if rng.randint(2):
        hsv[:, :, 0] += rng.uniform(-18.0, 18.0)
        hsv[:, :, 0][hsv[:, :, 0] > 360.0] -= 360.0
        hsv[:, :, 0][hsv[:, :, 0] < 0.0] += 360.0
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first and rng.randint(2):
        image *= rng.uniform(0.5, 1.5)
    if rng.randint(2):
        order = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))[rng.randint(6)]
        image = image[:, :, order]
    return image


def _ssd_crop(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.RandomState):
    height, width = image.shape[:2]
    modes = (None, 0.1, 0.3, 0.7, 0.9, 0.0)
    while True:
        mode = modes[rng.randint(len(modes))]
        if mode is None:
            return image, boxes, labels
        for _ in range(50):
            w, h = rng.uniform(0.3 * width, width), rng.uniform(0.3 * height, height)
            if h / w < 0.5 or h / w > 2:
                continue
            left, top = rng.uniform(width - w), rng.uniform(height - h)
            rect = np.array([int(left), int(top), int(left + w), int(top + h)])
            # The reference computes every trial's IoUs, though its test (min < mode and inf < max)
            # never rejects; computed here too, so the cost is the reference's.
            inter_wh = np.clip(np.minimum(boxes[:, 2:], rect[2:]) - np.maximum(boxes[:, :2], rect[:2]), 0, np.inf)
            inter = inter_wh[:, 0] * inter_wh[:, 1]
            union = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                     + (rect[2] - rect[0]) * (rect[3] - rect[1]) - inter)
            overlap = inter / union
            if overlap.min() < (mode or 0.0) and np.inf < overlap.max():
                continue
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
            inside = ((rect[0] < centres[:, 0]) & (rect[1] < centres[:, 1]) &
                      (rect[2] > centres[:, 0]) & (rect[3] > centres[:, 1]))
            if not inside.any():
                continue
            kept = boxes[inside].copy()
            kept[:, :2] = np.maximum(kept[:, :2], rect[:2]) - rect[:2]
            kept[:, 2:] = np.minimum(kept[:, 2:], rect[2:]) - rect[:2]
            return image[rect[1]:rect[3], rect[0]:rect[2], :], kept, labels[inside]


def ssd_reimplemented_samples(voc2007: Path, size: int = 300, seed: int = 0) -> tuple[Sample, int]:
    """qfgaohao's mb2-ssd-lite training sample, re-implemented from its documented steps."""
    ids = [i for split in ("trainval", "test")
           for i in (voc2007 / "ImageSets" / "Main" / f"{split}.txt").read_text().split()]
    rng = np.random.RandomState(seed)

    def sample(k: int):
        boxes, labels = _voc_boxes(voc2007 / "Annotations" / f"{ids[k]}.xml")
        image = cv2.cvtColor(cv2.imread(str(voc2007 / "JPEGImages" / f"{ids[k]}.jpg")), cv2.COLOR_BGR2RGB)
        image = _ssd_photometric(image.astype(np.float32), rng)
        if rng.randint(2):  # Expand onto a canvas filled with the mean
            height, width, depth = image.shape
            ratio = rng.uniform(1, 4)
            left, top = int(rng.uniform(0, width * ratio - width)), int(rng.uniform(0, height * ratio - height))
            canvas = np.full((int(height * ratio), int(width * ratio), depth), 127.0, dtype=image.dtype)
            canvas[top:top + height, left:left + width] = image
            image, boxes = canvas, boxes + np.array([left, top, left, top], dtype=np.float32)
        image, boxes, labels = _ssd_crop(image, boxes, labels, rng)
        if rng.randint(2):
            image = image[:, ::-1]
            boxes = boxes.copy()
            boxes[:, 0::2] = image.shape[1] - boxes[:, 2::-2]
        height, width = image.shape[:2]
        boxes = boxes / np.array([width, height, width, height], dtype=np.float32)
        image = cv2.resize(image, (size, size))
        image = (image.astype(np.float32) - 127.0) / 128.0
        return torch.from_numpy(image).permute(2, 0, 1), boxes, labels

    return sample, len(ids)


def deeplab_reimplemented_samples(voc2012: Path, crop_size: int, seed: int = 0) -> tuple[Sample, int]:
    """VainF's VOC training sample, re-implemented from its documented steps (PIL + torchvision)."""
    import random

    import torchvision.transforms.functional as F

    ids = [i for split in ("train", "val")
           for i in (voc2012 / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()]
    rng = random.Random(seed)

    def sample(k: int):
        image = Image.open(voc2012 / "JPEGImages" / f"{ids[k]}.jpg").convert("RGB")
        mask = Image.open(voc2012 / "SegmentationClass" / f"{ids[k]}.png")
        scale = rng.uniform(0.5, 2.0)
        size = (int(image.size[1] * scale), int(image.size[0] * scale))
        image = F.resize(image, size, F.InterpolationMode.BILINEAR)
        mask = F.resize(mask, size, F.InterpolationMode.NEAREST)
        pad_w, pad_h = max(0, crop_size - image.size[0]), max(0, crop_size - image.size[1])
        if pad_w or pad_h:  # pad both sides by the shortfall, as ExtRandomCrop(pad_if_needed)
            image = F.pad(image, [pad_w, pad_h], fill=0)
            mask = F.pad(mask, [pad_w, pad_h], fill=255)
        top = rng.randint(0, image.size[1] - crop_size)
        left = rng.randint(0, image.size[0] - crop_size)
        image, mask = F.crop(image, top, left, crop_size, crop_size), F.crop(mask, top, left, crop_size, crop_size)
        if rng.random() < 0.5:
            image, mask = F.hflip(image), F.hflip(mask)
        tensor = F.normalize(F.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
        return tensor, torch.from_numpy(np.array(mask, dtype=np.uint8))

    return sample, len(ids)
