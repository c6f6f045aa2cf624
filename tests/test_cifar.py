"""CIFAR-10: the synthetic set written in the official pickle layout, read by the suite's reader;
splits (official test batch, seeded stratified validation), sizes, clear errors; the seeds' recipes
(RMSprop, per-epoch exponential decay) as the experiment configs build them."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from data.device_transforms import Normalization, prepare_batch_images
from hydra.utils import instantiate

from data.cifar import CIFAR10DataModule, read_cifar10, stratified_indices
from data.errors import DatasetNotFoundError
from data.image_folder import held_out_count
from data.synthetic import SYNTHETIC_CLASSES, write_cifar10
from data.synthetic_datamodule import synthetic_datamodule
from tasks.base import build_optimizer
from tasks.schedules import build_scheduler
from tests.helpers import compose_config

PER_CLASS, TEST_PER_CLASS = 20, 4


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, images_per_class=PER_CLASS, test_images_per_class=TEST_PER_CLASS, image_size=48)
    return root


def datamodule(root, **kwargs):
    options = {"batch_size": 4, "num_workers": 0, "verify_checksums": False, **kwargs}
    return CIFAR10DataModule(str(root), **options)


def test_synthetic_set_has_the_official_layout(cifar_root):
    folder = cifar_root / "cifar-10-batches-py"
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert names == ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                     "data_batch_5", "test_batch"]
    with open(folder / "data_batch_1", "rb") as handle:
        batch = pickle.load(handle, encoding="latin1")  # how the official Python 2 pickles are read
    assert set(batch) == {"batch_label", "labels", "data", "filenames"}
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (len(batch["labels"]), 3072)
    with open(folder / "batches.meta", "rb") as handle:
        assert pickle.load(handle, encoding="latin1")["label_names"] == list(SYNTHETIC_CLASSES)


def test_reader_reads_it(cifar_root):
    train = read_cifar10(cifar_root, train=True, verify_checksums=False)
    test = read_cifar10(cifar_root, train=False, verify_checksums=False)
    assert train.images.shape == (10 * PER_CLASS, 32, 32, 3) and train.images.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [PER_CLASS] * 10
    assert np.bincount(test.labels).tolist() == [TEST_PER_CLASS] * 10
    assert train.class_names == list(SYNTHETIC_CLASSES)
    # The row format (R plane, G plane, B plane) comes back as the HWC image that was written.
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        row = pickle.load(handle, encoding="latin1")["data"][0]
    assert np.array_equal(test.images[0], row.reshape(3, 32, 32).transpose(1, 2, 0))
    # Root may also be the batches folder itself.
    same = read_cifar10(cifar_root / "cifar-10-batches-py", train=False, verify_checksums=False)
    assert np.array_equal(same.images, test.images)


def test_splits_official_test_batch_and_stratified_seeded_validation(cifar_root):
    dm = datamodule(cifar_root, val_fraction=0.1, seed=3)
    dm.setup()
    assert dm.num_classes == 10 and dm.class_names == list(SYNTHETIC_CLASSES)
    per_class_val = held_out_count(PER_CLASS, 0.1)  # 2 of 20
    assert dm.split_sizes == {"train": 10 * (PER_CLASS - per_class_val), "val": 10 * per_class_val,
                              "test": 10 * TEST_PER_CLASS}
    assert np.bincount(dm.val_dataset.labels).tolist() == [per_class_val] * 10
    test = read_cifar10(cifar_root, train=False, verify_checksums=False)
    assert np.array_equal(dm.test_dataset.images, test.images)
    labels = read_cifar10(cifar_root, train=True, verify_checksums=False).labels
    train_idx, val_idx = stratified_indices(labels, 0.1, seed=3)
    assert not set(train_idx) & set(val_idx) and len(train_idx) + len(val_idx) == len(labels)
    again = stratified_indices(labels, 0.1, seed=3)
    other = stratified_indices(labels, 0.1, seed=4)
    assert np.array_equal(again[1], val_idx) and not np.array_equal(other[1], val_idx)
    assert len(stratified_indices(labels, 0.25, seed=3)[1]) == 10 * held_out_count(PER_CLASS, 0.25)


@pytest.mark.parametrize("image_size,augment", [(32, "crop_flip"), (64, "crop_flip"), (64, "keras"), (40, "none")])
def test_batches_native_or_resized(cifar_root, image_size, augment):
    dm = datamodule(cifar_root, image_size=image_size, augment=augment)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, image_size, image_size) and images.dtype == torch.uint8  # normalised on the device
    assert labels.dtype == torch.long
    val_images, _ = next(iter(dm.val_dataloader()))
    again, _ = next(iter(dm.val_dataloader()))
    assert val_images.shape == (4, 3, image_size, image_size) and torch.equal(val_images, again)


def test_native_eval_image_is_the_stored_image_normalised(cifar_root):
    dm = datamodule(cifar_root, image_size=32)
    dm.setup()
    image, _ = dm.test_dataset[0]
    image = prepare_batch_images(image[None], Normalization.imagenet())[0]  # as the task does on the device
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    stored = torch.from_numpy(dm.test_dataset.images[0]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(image * std + mean, stored, atol=1e-5, rtol=0)


def test_missing_dataset_is_explained(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        datamodule(tmp_path / "nowhere").num_classes
    message = str(caught.value)
    assert str(tmp_path / "nowhere") in message and "cifar-10-batches-py" in message
    assert "data=synthetic" in message and "does not exist" in message
    assert pickle.loads(pickle.dumps(caught.value)).args == caught.value.args  # survives workers
    (tmp_path / "partial" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "partial" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match=r"Missing file\(s\): data_batch_2, .*test_batch, batches.meta"):
        read_cifar10(tmp_path / "partial", train=True)


def test_checksums_are_verified_by_default(cifar_root):
    with pytest.raises(DatasetNotFoundError, match="official CIFAR-10 MD5 checksums.*verify_checksums=false"):
        CIFAR10DataModule(str(cifar_root), num_workers=0).num_classes


def test_bad_settings_are_clear_errors(cifar_root):
    with pytest.raises(ValueError, match="num_classes=100 but 10 class names"):
        datamodule(cifar_root, num_classes=100).num_classes
    with pytest.raises(ValueError, match="unknown CIFAR augmentation 'mixup'"):
        datamodule(cifar_root, augment="mixup")
    with pytest.raises(ValueError, match="val_fraction must be in"):
        datamodule(cifar_root, val_fraction=0.0)


def test_synthetic_datamodule_writes_and_reads_the_pickle_format(tmp_path):
    dm = synthetic_datamodule("classification", tmp_path, batch_size=4, num_workers=0, image_size=32,
                              num_classes=4, generator={"images_per_class": 10, "image_size": 40},
                              format="cifar10")
    assert isinstance(dm, CIFAR10DataModule) and dm.num_classes == 4
    assert (Path(dm.hparams.root) / "cifar-10-batches-py" / "test_batch").is_file()
    assert Path(dm.hparams.root).parent == tmp_path and Path(dm.hparams.root).name.startswith("cifar10-")
    with pytest.raises(ValueError, match="synthetic format 'cifar10' is not available for detection"):
        synthetic_datamodule("detection", tmp_path, 4, 0, 64, 2, format="cifar10")


def test_data_cifar10_config(tmp_path):
    cfg = compose_config("train", ["task=classification", "data=cifar10", "backbone=mobilenet_v1",
                                   "paths.data_dir=/data"], tmp_path)
    dm = instantiate(cfg.data)
    assert isinstance(dm, CIFAR10DataModule)
    assert dm.hparams.root == "/data/cifar10" and dm.hparams.verify_checksums
    assert cfg.model.num_classes == 10


# --------------------------------------------------------------------------- the seeds' recipes
def test_rmsprop_and_per_epoch_exponential_decay():
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(model, name="rmsprop", lr=0.003, alpha=0.9, eps=1e-7, weight_decay=0.0)
    assert isinstance(optimizer, torch.optim.RMSprop)
    assert optimizer.defaults["alpha"] == 0.9 and optimizer.defaults["eps"] == 1e-7
    assert optimizer.defaults["momentum"] == 0.0  # RMSprop's default, not SGD's 0.9
    assert build_optimizer(model, name="sgd").defaults["momentum"] == 0.9
    scheduler = build_scheduler(optimizer, "exponential", total_steps=50, steps_per_epoch=10, gamma=0.99)
    seen = []
    for _ in range(35):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.003 * 0.99 ** (step // 10) for step in range(35)], rel=1e-12)
    with pytest.raises(ValueError, match="gamma"):
        build_scheduler(optimizer, "exponential", total_steps=50, steps_per_epoch=10, gamma=1.5)


@pytest.mark.parametrize("experiment,batch,lr,schedule,augment", [
    ("gpcmobilenet/table6_1_cifar10_gpc_mobilenet_16", 16, 0.001, "constant", "crop_flip"),
    ("keffnet/table1_cifar10_keffnet_b0", 64, 0.003, "exponential", "keras"),
])
def test_seed_experiment_configs(tmp_path, experiment, batch, lr, schedule, augment):
    cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
    assert (cfg.batch_size, cfg.image_size, cfg.trainer.max_epochs) == (batch, 224, 50)
    assert cfg.data._target_ == "data.cifar.CIFAR10DataModule" and cfg.data.val_fraction == 0.1
    assert cfg.data.augment == augment
    assert (cfg.model.optimizer.name, cfg.model.optimizer.lr, cfg.model.scheduler.name) == ("rmsprop", lr, schedule)
    model = instantiate(cfg.model)
    assert model.backbone.name == cfg.backbone.name
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all((m.eps, m.momentum) == (1e-3, 0.01) for m in norms)  # the authors' Keras BatchNorm
    optimizer = build_optimizer(model, **cfg.model.optimizer)
    assert isinstance(optimizer, torch.optim.RMSprop) and optimizer.defaults["alpha"] == 0.9


@pytest.mark.slow
def test_train_on_synthetic_cifar_through_the_real_reader(tmp_path, synthetic_dir):
    from train import train

    cfg = compose_config("train", [
        "experiment=keffnet/table1_cifar10_keffnet_b0", "data=synthetic",
        f"paths.synthetic_dir={synthetic_dir}/cifar_run", "synthetic.generator.images_per_class=10",
        "synthetic.generator.image_size=48", "batch_size=4", "backbone.width_mult=0.5",
        "+trainer.fast_dev_run=true",
    ], tmp_path)
    assert cfg.data.format == "cifar10"
    metrics = train(cfg)
    assert "test/acc" in metrics
