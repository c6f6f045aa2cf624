"""Training-sample pipeline speed: this suite vs the anchors, samples per CPU-second.

    python -m benchmarks.data_pipeline                                   # re-implemented anchors
    python -m benchmarks.data_pipeline --anchor-path ~/pytorch-ssd --deeplab-path ~/DeepLabV3Plus-Pytorch

One process, one thread (``OMP_NUM_THREADS=1`` and ``cv2.setNumThreads(1)``), on the genuine
images in ``tests/fixtures`` (6 VOC2007 JPEGs + XML, 3 VOC2012 JPEGs + PNG masks, 9 Caltech-101
JPEGs; ``--root`` for another tree of the same layout). Every pipeline makes one training
sample per call (read, decode, augment, to tensor; for the anchors also normalise): the
pipelines take turns in every round (``--rounds``, ``--samples`` per turn) and the CPU time
(``time.process_time``, user + system of this process) of each turn is summed, so load from
other processes hits them alike.

Rows per task:
- ``ours``: what the datamodules use (uint8 out; normalisation and, for detection, the
  photometric distortion run on the device, ``data.device_transforms``);
- ``ours + device steps on CPU``: the same plus those device steps run here on the CPU,
  per sample (an upper bound of what moving them to the device saves);
- ``step-by-step (before)``: the albumentations chains the suite used before (float,
  normalised on the CPU);
- the anchor: imported from a checkout (``--anchor-path`` qfgaohao/pytorch-ssd,
  ``--deeplab-path`` VainF/DeepLabV3Plus-Pytorch) and/or re-implemented from its documented
  steps (``benchmarks.data_anchors``); classification's anchor is torchvision itself.

Then the data-loader workers (one CPU core each) needed to feed the fastest model: its training
images/s divided by ours samples per CPU-second. Without a GPU here, the model figure is timm's
published training throughput for ``mobilenetv2_100`` (RTX 3090, AMP, 224 px: 1832 img/s,
``results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv``), scaled by pixel count to each
task's input size; ``--model-ips`` replaces it with a measured figure (e.g. from
``python -m benchmarks.throughput``).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import torch  # noqa: E402

from benchmarks import data_anchors  # noqa: E402
from errors import exit_on_user_error  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIMM_MV2_TRAIN_IPS_224 = 1832.14  # timm results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv
TASKS = ("detection", "segmentation", "classification")
INPUT_SIZE = {"detection": 300, "segmentation": 480, "classification": 224}


@dataclass
class Pipeline:
    task: str
    name: str
    source: str
    sample: Callable[[int], object]
    count: int
    anchor: bool = False
    cpu_seconds: list[float] = field(default_factory=list)
    samples: int = 0

    def run(self, start: int, samples: int) -> None:
        begin = time.process_time()
        for k in range(start, start + samples):
            self.sample(k % self.count)
        self.cpu_seconds.append(time.process_time() - begin)
        self.samples += samples

    @property
    def rate(self) -> float:
        return self.samples / sum(self.cpu_seconds)


# ------------------------------------------------------------------ ours and the old chains
def _seeded(dataset, seed: int = 0):
    """``dataset[k]`` with the augmentation seeded from (seed, 0, k), as the training loader does."""
    from data.loaders import SeededAugmentation

    wrapped = SeededAugmentation(dataset, seed)
    return lambda k: wrapped[(k, 0)]


def detection_pipelines(voc2007: Path) -> list[Pipeline]:
    from torch.utils.data import ConcatDataset

    from data.detection_pipeline import train_pipeline
    from data.detection_transforms import train_transform
    from data.device_transforms import Normalization, prepare_batch_images
    from data.voc_detection import VOCDetection

    def dataset(transform):
        return ConcatDataset([VOCDetection(voc2007, s, keep_difficult=False, transform=transform)
                              for s in ("trainval", "test")])

    ours = dataset(train_pipeline(300))
    ours_sample = _seeded(ours)
    mb2 = Normalization.mb2_ssd_lite()

    def with_device_steps(k: int):
        image, target = ours_sample(k)
        return prepare_batch_images(image[None], mb2, target["photometric"][None], target["image_rect"][None],
                                    target["fill"][None])

    before = dataset(train_transform(300))
    return [Pipeline("detection", "ours", "data.detection_pipeline", ours_sample, len(ours)),
            Pipeline("detection", "ours + device steps on CPU", "+ data.device_transforms", with_device_steps,
                     len(ours)),
            Pipeline("detection", "step-by-step (before)", "data.detection_transforms", _seeded(before), len(before))]


def segmentation_pipelines(voc2012: Path, crop_size: int) -> list[Pipeline]:
    from torch.utils.data import ConcatDataset

    from data.device_transforms import Normalization, prepare_batch_images
    from data.segmentation_pipeline import SegmentationTrainPipeline
    from data.segmentation_transforms import train_transform
    from data.voc_segmentation import VOCSegmentation

    def dataset(transform):
        return ConcatDataset([VOCSegmentation(voc2012, s, transform=transform) for s in ("train", "val")])

    ours = dataset(SegmentationTrainPipeline(crop_size))
    ours_sample = _seeded(ours)
    imagenet = Normalization.imagenet()
    before = dataset(train_transform(crop_size))
    before_sample = _seeded(before)

    def before_normalised(k: int):  # the old chain normalised on the CPU
        image, mask = before_sample(k)
        return prepare_batch_images(image[None], imagenet), mask

    def with_device_steps(k: int):
        image, mask = ours_sample(k)
        return prepare_batch_images(image[None], imagenet), mask

    return [Pipeline("segmentation", "ours", "data.segmentation_pipeline", ours_sample, len(ours)),
            Pipeline("segmentation", "ours + device steps on CPU", "+ data.device_transforms", with_device_steps,
                     len(ours)),
            Pipeline("segmentation", "step-by-step (before)", "albumentations chain + CPU normalise",
                     before_normalised, len(before))]


def classification_pipelines(paths: Sequence[Path], image_size: int) -> list[Pipeline]:
    from data.classification import ImageClassificationDataset
    from data.classification_pipeline import RandomResizedCropPipeline
    from data.device_transforms import Normalization, prepare_batch_images
    from data.transforms import classification_train_transform

    samples = [(str(p), 0) for p in paths]
    ours = ImageClassificationDataset(samples, RandomResizedCropPipeline(image_size))
    ours_sample = _seeded(ours)
    before_sample = _seeded(ImageClassificationDataset(samples, classification_train_transform(image_size)))
    imagenet = Normalization.imagenet()

    def before_normalised(k: int):
        image, label = before_sample(k)
        return prepare_batch_images(image[None], imagenet), label

    def with_device_steps(k: int):
        image, label = ours_sample(k)
        return prepare_batch_images(image[None], imagenet), label

    return [Pipeline("classification", "ours", "data.classification_pipeline", ours_sample, len(samples)),
            Pipeline("classification", "ours + device steps on CPU", "+ data.device_transforms",
                     with_device_steps, len(samples)),
            Pipeline("classification", "step-by-step (before)", "albumentations chain + CPU normalise",
                     before_normalised, len(samples))]


# ------------------------------------------------------------------ the run
def build(args: argparse.Namespace) -> list[Pipeline]:
    root = Path(args.root)
    voc2007, voc2012 = root / "VOCdevkit" / "VOC2007", root / "VOCdevkit" / "VOC2012"
    pipelines: list[Pipeline] = []
    if "detection" in args.tasks:
        pipelines += detection_pipelines(voc2007)
        if args.anchor_path:
            sample, n = data_anchors.qfgaohao_samples(Path(args.anchor_path), voc2007)
            pipelines.append(Pipeline("detection", "qfgaohao/pytorch-ssd", f"checkout {args.anchor_path}",
                                      sample, n, anchor=True))
        sample, n = data_anchors.ssd_reimplemented_samples(voc2007)
        pipelines.append(Pipeline("detection", "qfgaohao/pytorch-ssd", "anchor steps re-implemented", sample, n,
                                  anchor=not args.anchor_path))
    if "segmentation" in args.tasks:
        pipelines += segmentation_pipelines(voc2012, args.crop_size)
        if args.deeplab_path:
            sample, n = data_anchors.vainf_samples(Path(args.deeplab_path), root, args.crop_size)
            pipelines.append(Pipeline("segmentation", "VainF/DeepLabV3Plus-Pytorch", f"checkout {args.deeplab_path}",
                                      sample, n, anchor=True))
        sample, n = data_anchors.deeplab_reimplemented_samples(voc2012, args.crop_size)
        pipelines.append(Pipeline("segmentation", "VainF/DeepLabV3Plus-Pytorch", "anchor steps re-implemented",
                                  sample, n, anchor=not args.deeplab_path))
    if "classification" in args.tasks:
        paths = sorted((root / "classification").glob("*/*.jpg"))
        pipelines += classification_pipelines(paths, args.image_size)
        sample, n = data_anchors.torchvision_classification_samples(paths, args.image_size)
        pipelines.append(Pipeline("classification", "torchvision RandomResizedCrop", "torchvision (installed)",
                                  sample, n, anchor=True))
    return pipelines


def measure(pipelines: Sequence[Pipeline], rounds: int, samples: int, seed: int = 0) -> None:
    order = list(pipelines)
    shuffle = random.Random(seed)
    for pipeline in order:  # warm-up: imports, first-call allocations
        pipeline.run(0, min(3, samples))
        pipeline.cpu_seconds.clear()
        pipeline.samples = 0
    for r in range(rounds):
        shuffle.shuffle(order)
        for pipeline in order:
            pipeline.run(r * samples, samples)


def table(pipelines: Sequence[Pipeline]) -> list[list[str]]:
    rows = []
    for task in TASKS:
        group = [p for p in pipelines if p.task == task]
        anchor = next((p for p in group if p.anchor), None)
        for p in group:
            per_round = [p.samples / len(p.cpu_seconds) / s for s in p.cpu_seconds if s > 0]
            spread = (statistics.pstdev(per_round) / statistics.mean(per_round) * 100) if len(per_round) > 1 else 0
            ratio = f"{p.rate / anchor.rate:.2f}x" if anchor is not None else "-"
            rows.append([task, p.name + (" [anchor]" if p.anchor else ""), p.source, f"{p.rate:.1f}",
                         f"±{spread:.0f}%", ratio])
    return rows


def workers_table(pipelines: Sequence[Pipeline], model_ips: dict[str, float]) -> list[list[str]]:
    rows = []
    for task in TASKS:
        ours = next((p for p in pipelines if p.task == task and p.name == "ours"), None)
        if ours is None:
            continue
        ips = model_ips.get(task, TIMM_MV2_TRAIN_IPS_224 * (224 / INPUT_SIZE[task]) ** 2)
        rows.append([task, f"{INPUT_SIZE[task]} px", f"{ips:.0f}", f"{ours.rate:.1f}",
                     str(math.ceil(ips / ours.rate))])
    return rows


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(REPO / "tests" / "fixtures"),
                        help="folder with VOCdevkit/VOC2007, VOCdevkit/VOC2012 and classification/<class>/*.jpg")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--anchor-path", help="a qfgaohao/pytorch-ssd checkout (imported, not vendored)")
    parser.add_argument("--deeplab-path", help="a VainF/DeepLabV3Plus-Pytorch checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=30, help="samples per pipeline per round")
    parser.add_argument("--crop-size", type=int, default=480, help="segmentation crop (the thesis config's)")
    parser.add_argument("--image-size", type=int, default=224, help="classification input")
    parser.add_argument("--model-ips", nargs="*", default=[], metavar="TASK=IMAGES_PER_S",
                        help="measured training images/s of the fastest model, per task")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Pipeline]:
    args = parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    model_ips = {k: float(v) for k, v in (item.split("=", 1) for item in args.model_ips)}
    INPUT_SIZE["segmentation"], INPUT_SIZE["classification"] = args.crop_size, args.image_size
    pipelines = build(args)
    measure(pipelines, args.rounds, args.samples)
    print(f"\n### training samples per CPU-second · one process, one thread · {args.rounds} rounds x "
          f"{args.samples} samples per pipeline, interleaved · {args.root}\n")
    print(markdown(["task", "pipeline", "source", "samples / CPU-s", "round spread", "vs anchor"], table(pipelines)))
    print("\n### data-loader workers (1 CPU core each) to feed the fastest model\n")
    print(markdown(["task", "input", "model train img/s", "ours samples / CPU-s", "workers"],
                   workers_table(pipelines, model_ips)))
    print("\nmodel img/s: " + ("measured (--model-ips)" if model_ips else
                               f"timm's published mobilenetv2_100 training throughput ({TIMM_MV2_TRAIN_IPS_224:.0f} "
                               "img/s, RTX 3090, AMP, 224 px) scaled by pixel count; no GPU here"))
    return pipelines


if __name__ == "__main__":
    exit_on_user_error(main)()  # a wrong checkout path: one line, exit status 2
