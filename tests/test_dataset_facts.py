"""Dataset facts flow one way (issue 19, item 3): the datamodule reports what it found, the model
is built from it, the run's config is not rewritten, the checkpoint's record holds the resolved
count, and no task reads the datamodule back through the trainer."""
from __future__ import annotations

import inspect

from omegaconf import OmegaConf

from cogsuite.runtime import StoreConfigInCheckpoint
from data.cifar import CIFAR10DataModule
from data.device_transforms import Normalization
from data.facts import DatasetFacts, dataset_facts
from data.synthetic import SYNTHETIC_CLASSES, write_cifar10
from tasks.base import TaskBase
from tasks.classification import ClassificationTask


def test_datamodule_reports_its_facts_and_records_the_count_it_found(tmp_path):
    write_cifar10(tmp_path, images_per_class=2, test_images_per_class=1, image_size=32)
    datamodule = CIFAR10DataModule(str(tmp_path), num_classes=None, batch_size=2, num_workers=0,
                                   verify_checksums=False, normalize="keras_tf")
    assert datamodule.hparams_initial["num_classes"] is None  # nothing indexed yet

    facts = dataset_facts(datamodule)
    assert facts.num_classes == 10 and facts.class_names == tuple(SYNTHETIC_CLASSES)
    assert facts.input_normalization == datamodule.input_normalization != Normalization.imagenet()
    # What Lightning compares with the model's hyper-parameters, and a checkpoint records.
    assert datamodule.hparams["num_classes"] == datamodule.hparams_initial["num_classes"] == 10

    model_cfg = OmegaConf.create({"num_classes": None})
    linked = facts.model_arguments(model_cfg)
    assert linked == {"num_classes": 10}
    assert facts.model_arguments(OmegaConf.create({"num_classes": 7})) == {}  # a set count stays

    model = ClassificationTask("mv2_e2", **linked).use_dataset_facts(facts)
    assert model.hparams.num_classes == 10
    assert model.class_names == list(SYNTHETIC_CLASSES)
    assert model.input_normalization == facts.input_normalization


def test_the_run_config_stays_as_given_and_the_checkpoint_record_is_resolved():
    cfg = OmegaConf.create({"data": {"num_classes": None}, "model": {"num_classes": "${data.num_classes}"}})
    callback = StoreConfigInCheckpoint(cfg, DatasetFacts(num_classes=5))
    checkpoint: dict = {}
    callback.on_save_checkpoint(None, None, checkpoint)
    stored = next(iter(checkpoint.values()))
    assert stored["data"]["num_classes"] == stored["model"]["num_classes"] == 5
    assert cfg.data.num_classes is None  # the run's own config is not rewritten


def test_tasks_do_not_pull_dataset_facts_through_the_trainer():
    assert TaskBase.setup is TaskBase.__mro__[1].setup  # Lightning's no-op hook, not overridden
    assert "trainer.datamodule" not in inspect.getsource(TaskBase)


def test_ignore_index_is_linked_and_a_disagreement_refused():
    import pytest

    from errors import ConfigError

    facts = DatasetFacts(num_classes=21, ignore_index=255)
    assert facts.model_arguments({"num_classes": 21, "ignore_index": None}) == {"ignore_index": 255}
    assert facts.model_arguments({"num_classes": 21, "ignore_index": 255}) == {}
    assert facts.model_arguments({"num_classes": 21}) == {}  # a model without masks
    with pytest.raises(ConfigError, match="model.ignore_index=0 but the datamodule marks"):
        facts.model_arguments({"num_classes": 21, "ignore_index": 0})
