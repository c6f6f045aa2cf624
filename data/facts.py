"""What a datamodule found in its dataset, handed one way to the model.

The datamodule is built first and reports its facts (class count, class names, how its uint8
batches are normalised); ``train.py`` and ``cogsuite.evaluation`` then build / prepare the model
from them, as LightningCLI's ``link_arguments(..., apply_on="instantiate")`` does. Nothing
reads them back through the trainer, and nothing rewrites the run's config: ``num_classes:
null`` stays null in the config and is passed to the model's constructor (its hyper-parameters,
hence the checkpoint, record the resolved count); likewise a segmentation model's
``ignore_index: null`` takes the datamodule's, and two different values are refused. A datamodule whose ``num_classes`` argument
was null records the count it found in its own hyper-parameters
(``record_found_num_classes``), because Lightning refuses a model and a datamodule whose shared
hyper-parameters disagree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from data.device_transforms import Normalization
from errors import ConfigError


@dataclass(frozen=True)
class DatasetFacts:
    """What a datamodule reports before the model is built."""

    num_classes: int
    class_names: tuple[str, ...] | None = None
    # None: the datamodule does not say; the task keeps its own default normalisation.
    input_normalization: Normalization | None = None
    # The mask value that marks unlabelled pixels (segmentation datamodules); None: no masks.
    ignore_index: int | None = None

    def model_arguments(self, model_config: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments linked from the dataset: ``num_classes`` where the model's
        config leaves it null ("what the dataset holds"); a count the config sets is kept (the
        datamodule has already checked that it agrees with the data)."""
        linked: dict[str, Any] = {}
        if model_config.get("num_classes") is None:
            linked["num_classes"] = self.num_classes
        if self.ignore_index is not None and "ignore_index" in model_config:
            configured = model_config.get("ignore_index")
            if configured is None:
                linked["ignore_index"] = self.ignore_index
            elif int(configured) != self.ignore_index:
                # The loss and metrics would count the datamodule's unlabelled pixels as a class.
                raise ConfigError(f"model.ignore_index={configured} but the datamodule marks unlabelled "
                                  f"pixels with {self.ignore_index}; set both to the same value "
                                  f"(or model.ignore_index=null to take the datamodule's)")
        return linked


def dataset_facts(datamodule: Any) -> DatasetFacts:
    """The facts of ``datamodule`` (indexes a lazy datamodule now, so a missing or broken
    dataset stops the run before any model is built)."""
    names = getattr(datamodule, "class_names", None)
    found = getattr(datamodule, "num_classes", None)
    if found is None:
        if names is None:
            raise TypeError(f"{type(datamodule).__name__} reports neither num_classes nor class_names")
        found = len(names)
    ignore_index = getattr(datamodule, "ignore_index", None)
    return DatasetFacts(num_classes=int(found),
                        class_names=tuple(str(n) for n in names) if names else None,
                        input_normalization=getattr(datamodule, "input_normalization", None),
                        ignore_index=None if ignore_index is None else int(ignore_index))


def record_found_num_classes(datamodule: Any, found: int) -> None:
    """Called by a datamodule when it has indexed its dataset: a ``num_classes`` hyper-parameter
    left null becomes the count found (what a checkpoint's ``datamodule_hyper_parameters``
    record, and what Lightning compares with the model's ``num_classes``)."""
    hparams: Sequence[Any] | Mapping[str, Any] = getattr(datamodule, "hparams", {})
    if "num_classes" in hparams and hparams["num_classes"] is None:
        datamodule.save_hyperparameters({**dict(hparams), "num_classes": int(found)})
