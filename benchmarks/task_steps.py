"""Per task (from its TaskSpec): the benchmark model, a random batch, the torchvision reference and
their training / inference step functions, shared by the throughput modes."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from lightning.fabric.utilities.apply_func import move_data_to_device
import torch
from torch import Tensor, nn

from benchmarks.timing import Runtime
from tasks.registry import get_task, list_tasks


BACKBONES = ("mv2_e2", "cog_e2", "mv2_e6", "cog_e6")


@dataclass(frozen=True)
class Size:
    image_size: int
    batch_size: int


# Every task registered in tasks/ (tasks.registry) with the settings its TaskSpec gives: the
# benchmark models' classes (an ImageNet-size classifier, thesis Table 5.2; VOC for the rest),
# the thesis sizes and the --quick ones (CPU smoke runs), and its torchvision reference.
TASKS = tuple(list_tasks())
REFERENCE_LABEL = {task: get_task(task).reference_label for task in TASKS}
NUM_CLASSES = {task: get_task(task).num_classes for task in TASKS}
THESIS_SIZES = {task: Size(get_task(task).image_size, get_task(task).batch_size) for task in TASKS}
QUICK_SIZES = {task: Size(*get_task(task).quick_size) for task in TASKS}

# Training without a Trainer: the tasks' self.log calls are no-ops that warn; the warning is noise.
warnings.filterwarnings("ignore", message=r".*self\.log\(\)` but the `self\.trainer` reference.*")



def build_task_model(task: str, backbone: str | Mapping[str, Any],
                     num_classes: int | None = None) -> L.LightningModule:
    """Our LightningModule of ``task`` with its default (thesis) settings."""
    return get_task(task).build(backbone, num_classes)


def build_reference_model(task: str, image_size: int, num_classes: int | None = None) -> nn.Module:
    """torchvision's closest model for ``task``, from scratch."""
    spec = get_task(task)
    return spec.reference_model(image_size, spec.num_classes if num_classes is None else num_classes)


def make_batch(task: str, size: Size, runtime: Runtime, num_classes: int | None = None,
               seed: int = 0) -> tuple[Tensor, Any]:
    """A random training batch in the task's batch format (see ARCHITECTURE.md)."""
    spec = get_task(task)
    gen = torch.Generator().manual_seed(seed)
    images, target = spec.make_batch(size.batch_size, size.image_size,
                                     spec.num_classes if num_classes is None else num_classes, gen)
    return runtime.place_images(images), move_data_to_device(target, runtime.device)


def task_optimizer(model: L.LightningModule) -> torch.optim.Optimizer:
    """The optimizer ``configure_optimizers`` builds, without the lr schedule (needs a Trainer)."""
    from tasks.base import build_optimizer
    return build_optimizer(model, **dict(model.hparams.get("optimizer") or {}))


def ours_loss(model: L.LightningModule, batch: tuple[Tensor, Any]) -> Tensor:
    out = model.training_step(batch, 0)
    return out["loss"] if isinstance(out, Mapping) else out


def reference_loss(task: str, model: nn.Module, batch: tuple[Tensor, Any]) -> Tensor:
    return get_task(task).reference_loss(model, batch)


def ours_inference(task: str, model: L.LightningModule, images: Tensor) -> Any:
    return get_task(task).inference(model, images)


def reference_inference(task: str, model: nn.Module, images: Tensor) -> Any:
    return get_task(task).reference_inference(model, images)


def train_step_fn(model: nn.Module, loss_fn: Callable[[], Tensor], optimizer: torch.optim.Optimizer,
                  runtime: Runtime) -> Callable[[], None]:
    def step() -> None:
        if not model.training:  # the top flag only: a recursive .train() per step is not free
            model.train()
        with runtime.autocast():
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def inference_step_fn(model: nn.Module, infer: Callable[[], Any], runtime: Runtime) -> Callable[[], None]:
    def step() -> None:
        if model.training:
            model.eval()
        with torch.inference_mode(), runtime.autocast():
            infer()
    return step


@dataclass
class Entry:
    """One model under test with its training and inference step functions."""

    label: str
    train: Callable[[], None]
    infer: Callable[[], None]
    model: nn.Module = field(repr=False)


def ours_entry(task: str, backbone: str | Mapping[str, Any], batch: tuple[Tensor, Any],
               runtime: Runtime, label: str | None = None) -> Entry:
    model = runtime.place_model(build_task_model(task, backbone))
    optimizer = task_optimizer(model)
    name = label or (backbone if isinstance(backbone, str) else backbone["name"])
    return Entry(name, train_step_fn(model, lambda: ours_loss(model, batch), optimizer, runtime),
                 inference_step_fn(model, lambda: ours_inference(task, model, batch[0]), runtime), model)


def reference_entry(task: str, size: Size, batch: tuple[Tensor, Any], runtime: Runtime,
                    optimizer_settings: Mapping[str, Any]) -> Entry:
    from tasks.base import build_optimizer

    model = runtime.place_model(build_reference_model(task, size.image_size))
    optimizer = build_optimizer(model, **dict(optimizer_settings))
    return Entry(REFERENCE_LABEL[task],
                 train_step_fn(model, lambda: reference_loss(task, model, batch), optimizer, runtime),
                 inference_step_fn(model, lambda: reference_inference(task, model, batch[0]), runtime),
                 model)
