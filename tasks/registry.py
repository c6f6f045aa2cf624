"""Task registry: each task module registers one ``TaskSpec`` describing everything the rest of
the suite needs to know about it (the checkpoint allowlist, the synthetic dataset, benchmarks,
ONNX export, the report), so that no other module names a task.

    from tasks.registry import get_task, list_tasks
    spec = get_task("detection"); model = spec.build(backbone="mv2_e2")
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from errors import ConfigError

Batch = tuple[Tensor, Any]


def _call(model: nn.Module, images: Tensor) -> Any:
    return model(images)


@dataclass(frozen=True)
class TaskSpec:
    """What the suite knows about one task.

    The benchmark hooks build models and batches at the thesis' settings; ``num_classes`` is the
    benchmark / complexity models' class count (ImageNet or VOC). ``synthetic`` maps each on-disk
    format of the embedded dataset (the first is the default) to the dotted path of a function
    ``(root, generator, seed, num_classes, image_size, common) -> LightningDataModule`` that
    writes it and reads it back with the real datamodule. ``export`` (dotted path, optional)
    wraps a model whose output is not a plain tensor for ONNX: ``(model, example, **options) ->
    (module, output names)``.
    """

    name: str
    task_class: type  # the LightningModule
    title: str  # report table title
    metric: str  # the test metric that is the run's result (report default)
    image_size: int  # thesis input size (export default, complexity, throughput)
    batch_size: int  # thesis batch size (throughput)
    quick_size: tuple[int, int]  # (image size, batch size) of `throughput --quick`
    num_classes: int  # classes of the benchmark / complexity models
    description: str  # one line for the complexity table
    make_batch: Callable[[int, int, int, torch.Generator], Batch]  # (batch, size, classes, gen)
    reference_label: str
    reference_model: Callable[[int, int], nn.Module]  # torchvision's closest: (image size, classes)
    reference_loss: Callable[[nn.Module, Batch], Tensor]
    synthetic: Mapping[str, str]
    reference_backbone: str | None = None  # our backbone that is the reference's architecture
    # Generator settings of its synthetic set (configs/task/<task>.yaml `synthetic.generator`)
    # for at least ``count`` training images (benchmarks.throughput_loop).
    synthetic_train_images: Callable[[int], dict[str, int]] = lambda count: {"num_train": count}
    # Generator settings of a small synthetic set for the data-pipeline benchmark (benchmarks.
    # throughput --data): (training images, source image size, object classes) -> settings.
    synthetic_bench_generator: Callable[[int, int, int], dict[str, int]] = (
        lambda count, size, classes: {"num_train": count, "num_test": 2, "image_size": size,
                                      "num_classes": classes})
    background_class: bool = False  # the model's class count includes a background class
    per_class_analysis: bool = False  # analysis.per_class applies (per-class accuracy, confusion)
    inference: Callable[[nn.Module, Tensor], Any] = _call
    reference_inference: Callable[[nn.Module, Tensor], Any] = _call
    export: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # passed to build() by benchmarks
    model_size_by_classes: bool = False  # complexity: model-size columns per class count
    order: int = 100  # position in tables and CLI defaults (the thesis' chapter order)

    @property
    def class_path(self) -> str:
        return f"{self.task_class.__module__}.{self.task_class.__qualname__}"

    def build(self, backbone: Any, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
        """The task model with its default (thesis) settings, for benchmarks and export tests."""
        return self.task_class(backbone=backbone,
                               num_classes=self.num_classes if num_classes is None else num_classes,
                               **{**self.options, **kwargs})


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name].class_path != spec.class_path:
        raise ValueError(f"Task {spec.name!r} is already registered.")
    _REGISTRY[spec.name] = spec
    return spec


def _registry() -> dict[str, TaskSpec]:
    from cogsuite.discovery import import_submodules

    import_submodules("tasks")
    return _REGISTRY


def list_tasks() -> list[str]:
    """Registered task names in table order (``TaskSpec.order``, then name)."""
    registry = _registry()
    return sorted(registry, key=lambda name: (registry[name].order, name))


def get_task(name: str) -> TaskSpec:
    registry = _registry()
    if name not in registry:
        raise ConfigError(f"unknown task {name!r}; registered tasks: {', '.join(list_tasks())}")
    return registry[name]


def task_for_class(cls: type) -> TaskSpec | None:
    """The spec of a task class (or a subclass of one), None for other modules."""
    for spec in _registry().values():
        if issubclass(cls, spec.task_class):
            return spec
    return None


def task_class_paths() -> frozenset[str]:
    """``module.Class`` of every registered task: the checkpoint allowlist."""
    return frozenset(spec.class_path for spec in _registry().values())

