"""The datamodule contract, over every configs/data/*.yaml: on embedded data written in that
dataset's real layout, the datamodule sets up every stage and serves a batch of each split, and a
checkpoint trained on it lives its whole life: train one step, eval.py, resume, deploy.export and
(classification) analysis.per_class. A dataset whose datamodule a registry forgot fails here
(as data=cifar10 once did: its checkpoints were refused by eval, resume and export)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate
from PIL import Image

from tests.helpers import CONFIG_DIR, FIXTURES, compose_config

TINY = ["backbone=mv2_e2", "backbone.width_mult=0.25", "batch_size=2", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1", "test=false"]
TASK_SETTINGS = {
    "classification": ["image_size=32"],
    "detection": ["image_size=64", "model.extra_channels=[32,16,16,8]", "model.speed_test_runs=0"],
    "segmentation": ["image_size=64", "model.head_channels=16", "model.scheduler.name=cosine"],
}


def _image_folder(root: Path, classes: list[str], name: str = "{:04d}.jpg") -> None:
    """Class folders of small JPEGs (the image-folder readers need only their layout)."""
    for index, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (40, 30), (40 * index, 80 + 30 * k, 120)).save(root / cls / name.format(k + 1))


def _flowers(data: Path) -> list[str]:
    _image_folder(data / "flowers" / "flower_photos", ["daisy", "dandelion", "roses", "sunflowers", "tulips"])
    return []


def _image_folder_splits(data: Path) -> list[str]:
    _image_folder(data / "image_folder", ["beagle", "collie", "pug"], "{:04d}.jpg")
    for cls in ("beagle", "collie", "pug"):  # enough per class for train / val / test
        for k in range(4, 11):
            Image.new("RGB", (40, 30), (20 * k, 90, 60)).save(data / "image_folder" / cls / f"{k:04d}.jpg")
    return []


def _caltech101(data: Path) -> list[str]:
    _image_folder(data / "caltech101" / "101_ObjectCategories",
                  ["BACKGROUND_Google", "accordion", "airplanes", "anchor"], "image_{:04d}.jpg")
    return ["data.num_classes=3"]


def _caltech256(data: Path) -> list[str]:
    folder = data / "caltech256" / "256_ObjectCategories"
    for number, name in ((1, "ak47"), (2, "american-flag"), (257, "clutter")):
        _image_folder(folder, [f"{number:03d}.{name}"], f"{number:03d}_{{:04d}}.jpg")
    return ["data.num_classes=3"]


def _cifar10(data: Path) -> list[str]:
    from data.synthetic import write_cifar10

    write_cifar10(data / "cifar10", images_per_class=2, test_images_per_class=1, image_size=32)
    return ["data.verify_checksums=false"]  # not the official files: their MD5 sums cannot match


def _voc2007(data: Path) -> list[str]:
    shutil.copytree(FIXTURES / "VOCdevkit" / "VOC2007", data / "VOCdevkit" / "VOC2007")
    return []


def _voc0712(data: Path) -> list[str]:
    _voc2007(data)
    # VOC2012 detection in the same layout: the genuine 2007 files under 2012's folder.
    shutil.copytree(FIXTURES / "VOCdevkit" / "VOC2007", data / "VOCdevkit" / "VOC2012")
    return []


def _voc2012(data: Path) -> list[str]:
    shutil.copytree(FIXTURES / "VOCdevkit" / "VOC2012", data / "VOCdevkit" / "VOC2012")
    return []


def _voc2012_aug(data: Path) -> list[str]:
    """VOC2012 plus SBD's additions: 8-bit index masks and the two-path train_aug list."""
    import numpy as np

    _voc2012(data)
    voc = data / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClassAug").mkdir()
    ids = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()  # no val image
    for image_id in ids:
        mask = np.array(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))
        Image.fromarray(mask, mode="L").save(voc / "SegmentationClassAug" / f"{image_id}.png")
    lines = [f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" for i in ids]
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(lines) + "\n")
    return []


def _synthetic(data: Path) -> list[str]:
    return ["synthetic.image_size=32", "synthetic.num_classes=3",
            "synthetic.generator.images_per_class=4", "synthetic.generator.image_size=40"]


# Every configs/data/*.yaml: (task it feeds, writer of its real on-disk layout).
CASES = {
    "flowers": ("classification", _flowers),
    "caltech101": ("classification", _caltech101),
    "caltech256": ("classification", _caltech256),
    "cifar10": ("classification", _cifar10),
    "image_folder": ("classification", _image_folder_splits),
    "synthetic": ("classification", _synthetic),
    "voc2007": ("detection", _voc2007),
    "voc0712": ("detection", _voc0712),
    "voc2012": ("segmentation", _voc2012),
    "voc2012_aug": ("segmentation", _voc2012_aug),
}


# Configs whose datamodule class an earlier case already takes through resume, export and
# per_class: they train and evaluate (their own settings) but skip the class-level rest.
SAME_CLASS_AS_ANOTHER_CASE = {"caltech101", "caltech256", "voc0712", "voc2012_aug"}


def test_every_data_config_is_covered():
    configs = {p.stem for p in (Path(CONFIG_DIR) / "data").glob("*.yaml")}
    assert configs == set(CASES), "add the new dataset's layout writer to CASES"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_datamodule_contract_and_checkpoint_life(name, tmp_path):
    from analysis import per_class
    from cogsuite.evaluation import evaluate
    from deploy import export
    from train import train

    task, write = CASES[name]
    data_dir = tmp_path / "data"
    overrides = [f"task={task}", f"data={name}", *TINY, *TASK_SETTINGS[task], *write(data_dir)]
    run = tmp_path / "run"

    def config(*extra: str):
        cfg = compose_config("train", [*overrides, *extra], run)
        cfg.paths.data_dir, cfg.paths.synthetic_dir = str(data_dir), str(tmp_path / "synthetic")
        return cfg

    # setup for every stage, one batch of each split
    datamodule = instantiate(config().data)
    assert datamodule.num_classes >= 2 and len(datamodule.class_names) == datamodule.num_classes
    for stage in ("fit", "validate", "test"):
        datamodule.setup(stage)
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader(), datamodule.test_dataloader()):
        images, target = next(iter(loader))
        assert images.ndim == 4 and images.shape[1] == 3 and len(target) == images.shape[0]

    # the checkpoint's life (resumed before it is evaluated, so per_class reuses that evaluation)
    train(config())
    ckpt = run / "checkpoints" / "last.ckpt"
    full_life = name not in SAME_CLASS_AS_ANOTHER_CASE
    if full_life:
        resumed = train(config("trainer.max_epochs=2", f"ckpt_path={ckpt}"))
        assert not resumed.get("diverged")
    metrics = evaluate(compose_config("eval", [f"ckpt_path={ckpt}"], tmp_path / "eval"))
    assert any(key.startswith("test/") for key in metrics)
    if not full_life:
        return
    report = export.main([f"ckpt_path={ckpt}", "--out", str(tmp_path / "model.onnx")])
    assert report.path.is_file() and report.max_abs_diff
    if task == "classification":
        written = per_class.main([f"ckpt_path={ckpt}", "--out", str(tmp_path / "per_class"), "num_workers=0"])
        assert all(Path(path).is_file() for path in written.values())
