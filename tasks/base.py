"""What every task shares: building the backbone from a config, optimizers and lr schedules."""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from data.device_transforms import Normalization, prepare_batch_images
from data.facts import DatasetFacts

from cogsuite.checkpoint_keys import SUITE_KEY  # written by on_save_checkpoint
from errors import ConfigError
from tasks.schedules import build_scheduler

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
INTERVALS = ("step", "epoch")  # how often the lr schedule is stepped


def backbone_spec(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a backbone spec (registry name or mapping) to a dict with ``name``."""
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, Mapping) and "name" in spec:
        return dict(spec)
    raise ConfigError(
        f"backbone must be a registry name or a mapping with a 'name' key, got {spec!r}"
    )


def build_backbone(
    spec: str | Mapping[str, Any], last_role: str | None = None, **task_defaults: Any
) -> nn.Module:
    """Create a backbone from its spec, truncate it after the tap playing ``last_role``, then
    load ``pretrained``.

    Task defaults (e.g. ``output_stride=16`` for segmentation) apply unless the spec sets the
    same key to something other than None. Loading after truncation means a checkpoint may hold
    more layers than the task uses (they are reported as ignored), never fewer.
    """
    from backbones import create_backbone, load_backbone_weights

    spec = backbone_spec(spec)
    name = spec.pop("name")
    pretrained = spec.pop("pretrained", None)
    overrides = {**task_defaults, **{k: v for k, v in spec.items() if v is not None}}
    backbone = create_backbone(name, **overrides)
    if last_role is not None:
        backbone.truncate_at_role(last_role)
    if pretrained:
        load_backbone_weights(backbone, pretrained)
    return backbone


def parameter_groups(module: nn.Module, weight_decay: float,
                     decay_norm_and_bias: bool = False, lr: float | None = None) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only: decaying BN affine and biases only hurts.

    ``decay_norm_and_bias=True`` decays every parameter, as a plain ``torch.optim.SGD(
    model.parameters(), weight_decay=...)`` does (qfgaohao's train_ssd.py, the thesis' detector).
    A module with an ``lr_mult`` attribute other than 1 (a deformable conv's offset predictor,
    ``backbones.spatial``) gets groups of its own at ``lr * lr_mult``; without such modules the
    groups are exactly the two above (optimizer states of earlier runs still load).
    """
    mult_of = {id(p): float(getattr(m, "lr_mult", 1.0))
               for m in module.modules() for p in m.parameters(recurse=False)}
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {(True, 1.0): [], (False, 1.0): []}
    for p in module.parameters():
        if not p.requires_grad:
            continue
        key = (p.ndim > 1 or decay_norm_and_bias, mult_of.get(id(p), 1.0))
        groups.setdefault(key, []).append(p)
    if any(mult != 1.0 for _, mult in groups) and lr is None:
        raise ValueError("parameter_groups needs the base lr for modules with an lr_mult")
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0,
             **({} if mult == 1.0 else {"lr": lr * mult})}
            for (decay, mult), params in groups.items()]


def build_optimizer(module: nn.Module, name: str = "adamw", lr: float = 1e-3,
                    weight_decay: float = 0.01, momentum: float | None = None,
                    betas: tuple[float, float] = (0.9, 0.999), alpha: float = 0.99,
                    eps: float = 1e-8, decay_norm_and_bias: bool = False) -> torch.optim.Optimizer:
    """``momentum``: SGD's (default 0.9) or RMSprop's (default 0); ``alpha`` / ``eps``: RMSprop's
    smoothing constant and denominator term (torch defaults 0.99 / 1e-8; the Keras RMSprop that
    seeds 002 and 004 trained with: alpha 0.9 (its rho), eps 1e-7); ``decay_norm_and_bias``:
    weight decay on every parameter (mb2-ssd-lite) instead of conv/linear weights only."""
    groups = parameter_groups(module, weight_decay, decay_norm_and_bias, lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "adam":  # L2 weight decay added to the gradient (torch.optim.Adam's), seed 001
        return torch.optim.Adam(groups, lr=lr, betas=tuple(betas))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9 if momentum is None else momentum, nesterov=False)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=alpha, eps=eps,
                                   momentum=0.0 if momentum is None else momentum)
    raise ConfigError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


class TaskBase(L.LightningModule):
    """Optimizer + lr schedule from ``hparams.optimizer`` / ``hparams.scheduler``.

    The schedule is stepped per iteration unless ``scheduler.interval: epoch`` (then its lengths,
    ``T_max`` and ``warmup_epochs`` count epochs and the lr changes once per epoch).

    Subclasses call ``self.save_hyperparameters()`` with ``backbone``, ``optimizer`` and
    ``scheduler`` among their arguments and set ``self.backbone`` and ``self.head``.
    """

    task_name: str = "task"

    def configure_optimizers(self):
        opt_cfg = dict(self.hparams.get("optimizer") or {})
        sch_cfg = dict(self.hparams.get("scheduler") or {"name": "constant"})
        if self._trainer is not None and getattr(self.trainer, "fast_dev_run", False):
            # One step checks the wiring only; a 40-epoch warm-up cannot fit in it.
            sch_cfg = {"name": "constant"}
        interval = sch_cfg.pop("interval", "step")
        if interval not in INTERVALS:
            raise ConfigError(f"scheduler.interval must be one of {INTERVALS}, got {interval!r}")
        optimizer = build_optimizer(self, **opt_cfg)
        max_epochs = self.trainer.max_epochs or 0
        if interval == "epoch":
            if max_epochs <= 0:
                raise ConfigError("scheduler.interval=epoch needs trainer.max_epochs (the schedule's length)")
            total_steps, steps_per_epoch = max_epochs, 1.0
        else:
            total_steps = int(self.trainer.estimated_stepping_batches)
            if not math.isfinite(total_steps) or total_steps <= 0:
                raise ConfigError("set trainer.max_epochs or trainer.max_steps: the lr schedule needs a length")
            steps_per_epoch = total_steps / max_epochs if max_epochs > 0 else float(total_steps)
        scheduler = build_scheduler(optimizer, total_steps=total_steps,
                                    steps_per_epoch=steps_per_epoch, **sch_cfg)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": interval, "frequency": 1}}

    channels_last: bool = False  # set by train.py/eval.py (on by default on CUDA)
    # How uint8 batches are normalised on the device: the datamodule's ``input_normalization``
    # (read in ``setup``), else ``default_normalization``.
    input_normalization: Normalization | None = None
    default_normalization: Normalization = Normalization.imagenet()

    def prepare_images(self, images: Tensor, batch: Any) -> Tensor:
        """uint8 images straight from the loader -> normalised float, on the device (tasks with
        per-sample device augmentation override it)."""
        return prepare_batch_images(images, self.input_normalization or self.default_normalization)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Batches are (images, targets...) tuples: loaders yield uint8 images (data.device_transforms);
        # NHWC images let cuDNN pick its fast kernels.
        if isinstance(batch, (tuple, list)) and torch.is_tensor(batch[0]):
            images = self.prepare_images(batch[0], batch)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            batch = (images, *batch[1:])
        return batch

    def use_dataset_facts(self, facts: DatasetFacts) -> TaskBase:
        """Take what the datamodule reported (``data.facts.dataset_facts``): class names for the
        per-class metrics, the input normalisation of its uint8 batches. Called by whoever builds
        the model beside the datamodule (train.py, eval.py); the task never reads the datamodule
        through the trainer. ``num_classes`` goes through the constructor instead."""
        if facts.class_names:
            self.class_names = list(facts.class_names)
        if facts.input_normalization is not None:
            self.input_normalization = facts.input_normalization
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        spec = backbone_spec(self.hparams["backbone"])
        checkpoint[SUITE_KEY] = {
            "task": self.task_name,
            "backbone": spec["name"],
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
        }
