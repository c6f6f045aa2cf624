"""Pointwise surgery on a timm model: which 1x1 convs play which role, and replacing them by a
registered pointwise layer while timm's own norm and activation modules stay where they are.

timm has no layer-swap mechanism and its blocks are many classes (InvertedResidual,
UniversalInvertedResidual, GhostBottleneck, EdgeResidual, ConvBnAct, ...), so roles come from
what the convs *do* in one recorded forward pass, not from class names:

- ``se``: a 1x1 conv applied to a 1x1 (globally pooled) map: squeeze-excitation;
- ``conv``: a 1x1 conv of a block that has no spatial conv (timm's ``ConvBnAct`` "cn" blocks, e.g.
  MobileNetV3's and MobileNetV4's final 960-channel conv);
- ``expand``: the first other 1x1 conv a block runs, when it widens (out > in channels);
- ``project``: every other 1x1 conv of a block (the projection, GhostNet's second ghost module
  and its shortcut conv).

A block is each child of a stage ``nn.Sequential`` (or a top-level layer that is not a stage).
The replacement layer is built with the conv's own in/out channels, no norm and no activation
(timm's norm and activation follow it as before), and a bias exactly when the conv had one
(squeeze-excitation convs). A conv that cannot be replaced (grouped, strided, or channels the
layer cannot split) is listed with the reason in one log message and kept.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn

from errors import ConfigError

from .pointwise import PointwiseLayer, build_pointwise, pointwise_spec

log = logging.getLogger("backbones")

CONV_ROLES = ("expand", "project", "conv", "se")
ALL = "all"


@dataclass
class ConvRecord:
    """One conv seen in the recorded forward pass (``path`` relative to the backbone)."""

    path: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    groups: int
    bias: bool
    input_hw: tuple[int, int]
    block: str
    role: Optional[str] = None  # for 1x1 convs

    @property
    def pointwise(self) -> bool:
        return self.kernel_size == (1, 1)


@dataclass
class SurgeryReport:
    """What ``replace_pointwise_convs`` did; ``replaced`` maps conv path -> role."""

    layer: str
    at: tuple[str, ...]
    replaced: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)  # path -> why it was not replaced
    params_before: int = 0
    params_after: int = 0
    initialised_from_dense: list[str] = field(default_factory=list)
    newly_initialised: list[str] = field(default_factory=list)

    def summary(self, model_name: str) -> str:
        return (f"timm {model_name}: replaced {len(self.replaced)} 1x1 convs ({', '.join(self.at)}) "
                f"with {self.layer!r}; params {self.params_before:,} -> {self.params_after:,}")


def resolve_roles(at: Any) -> tuple[str, ...]:
    """``pointwise_at`` as a tuple of roles; "all" means every role."""
    at = [at] if isinstance(at, str) else list(at or ())
    if ALL in at:
        return CONV_ROLES
    unknown = sorted(set(at) - set(CONV_ROLES))
    if unknown:
        raise ConfigError(f"pointwise_at names unknown conv role(s) {unknown}; a timm backbone's 1x1 "
                          f"convs are {list(CONV_ROLES)} (or 'all').")
    return tuple(r for r in CONV_ROLES if r in at)


def record_convs(layers: nn.Sequential, example: Tensor, prefix: str = "features"
                 ) -> tuple[list[ConvRecord], list[tuple[str, str]], dict[str, Tensor]]:
    """Runs ``layers`` once on ``example``; returns every conv in execution order with its role,
    the (conv, norm) pairs where the norm reads exactly the conv's output (foldable at
    inference), and each spatial conv's input (for the expansion tap)."""
    names = {m: f"{prefix}.{n}" for n, m in layers.named_modules() if n}
    blocks = {}
    for index, (child, layer) in enumerate(layers.named_children()):
        if isinstance(layer, nn.Sequential):
            for sub, _ in layer.named_children():
                blocks[f"{prefix}.{child}.{sub}"] = None
        else:
            blocks[f"{prefix}.{child}"] = None

    def block_of(path: str) -> str:
        return next((b for b in blocks if path == b or path.startswith(b + ".")), path)

    convs: list[ConvRecord] = []
    outputs: dict[int, tuple[str, Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    inputs: dict[str, Tensor] = {}

    def conv_hook(module: nn.Conv2d, args: tuple[Tensor, ...], output: Tensor) -> None:
        path = names[module]
        x = args[0]
        convs.append(ConvRecord(path, module.in_channels, module.out_channels, tuple(module.kernel_size),
                                tuple(module.stride), module.groups, module.bias is not None,
                                tuple(x.shape[-2:]), block_of(path)))
        inputs[path] = x
        outputs[id(output)] = (path, output)

    def norm_hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        found = outputs.get(id(args[0]))
        if found is not None and found[1] is args[0]:
            pairs.append((found[0], names[module]))

    handles = []
    for module in names:
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(norm_hook))
    try:
        with torch.no_grad():
            layers(example)
    finally:
        for handle in handles:
            handle.remove()
    _assign_roles(convs)
    return convs, pairs, inputs


def _assign_roles(convs: list[ConvRecord]) -> None:
    by_block: dict[str, list[ConvRecord]] = {}
    for record in convs:
        by_block.setdefault(record.block, []).append(record)
    for records in by_block.values():
        has_spatial = any(not r.pointwise for r in records)
        first = True
        for r in records:
            if not r.pointwise:
                continue
            if r.input_hw == (1, 1):
                r.role = "se"
            elif not has_spatial:
                r.role = "conv"
            elif first and r.out_channels > r.in_channels:
                r.role = "expand"
                first = False
            else:
                r.role = "project"
                first = False


def _module(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def build_replacement(spec: Mapping[str, Any], conv: nn.Conv2d, where: str) -> nn.Module:
    """The registry layer for ``conv``: same channels, no norm and no activation (timm's follow),
    a bias exactly when ``conv`` has one (an Identity norm tells the layer not to add one)."""
    norm_layer = None if conv.bias is not None else nn.Identity
    return build_pointwise(spec, conv.in_channels, conv.out_channels, norm_layer=norm_layer,
                           activation_layer=None, where=where)


def project_dense_weight(layer: nn.Module, weight: Tensor, bias: Optional[Tensor] = None) -> bool:
    """Sets ``layer``'s parameters to the orthogonal projection of the dense 1x1 ``weight``
    (out, in, 1, 1) onto the layer's structure, if the layer is one linear map whose every
    parameter lands on its own entry of the dense matrix (group, group_shuffle, cog: the dense
    weight is kept where the structure has a weight, zero elsewhere). Returns False (layer
    untouched) for layers that are not (kgroup: a product of two grouped convs)."""
    params = [p for p in layer.parameters()]
    if not params:
        return False
    c_in = weight.shape[1]
    target = weight.detach().reshape(weight.shape[0], c_in).to(params[0])
    eye = torch.eye(c_in, dtype=params[0].dtype, device=params[0].device).reshape(c_in, c_in, 1, 1)
    saved = [p.detach().clone() for p in params]
    was_training = layer.training
    layer.eval()

    def dense_matrix() -> Tensor:  # (out, in): the layer applied to every unit input
        out = layer(eye).reshape(c_in, -1).T
        return out - (layer(torch.zeros_like(eye[:1])).reshape(1, -1).T if has_bias else 0)

    has_bias = any(n.endswith("bias") for n, _ in layer.named_parameters())
    try:
        with torch.enable_grad():
            for p in params:
                p.data.fill_(1.0)
            ones_matrix = dense_matrix()
            support = ones_matrix.detach() != 0
            aligned = torch.autograd.grad((ones_matrix * target).sum(), params, allow_unused=True,
                                          retain_graph=True)
            counts = torch.autograd.grad((ones_matrix * ones_matrix).sum() / 2, params, allow_unused=True)
        with torch.no_grad():
            for p, a, c in zip(params, aligned, counts):
                if a is None or c is None:
                    raise ValueError("a parameter outside the linear map")
                p.copy_(torch.where(c != 0, a / c.clamp(min=1e-12), torch.zeros_like(p)))
            named = dict(layer.named_parameters())
            for name, p in named.items():  # biases: the dense conv's, where it had one
                if name.endswith("bias"):
                    p.copy_(bias.to(p) if bias is not None else torch.zeros_like(p))
            exact = torch.allclose(dense_matrix(), torch.where(support, target, torch.zeros_like(target)),
                                   atol=1e-5, rtol=1e-4)
    except (ValueError, RuntimeError):
        exact = False
    finally:
        layer.train(was_training)
    if not exact:
        with torch.no_grad():
            for p, old in zip(params, saved):
                p.copy_(old)
    return exact


def _kaiming_init(layer: nn.Module) -> None:
    for name, p in layer.named_parameters():
        if name.endswith("weight") and p.dim() == 4:
            nn.init.kaiming_normal_(p, mode="fan_out")
        elif name.endswith("bias"):
            nn.init.zeros_(p)


def replace_pointwise_convs(model: nn.Module, convs: Iterable[ConvRecord], spec: Any, at: Any
                            ) -> SurgeryReport:
    """Replaces the 1x1 convs of ``model`` playing the roles ``at`` by the layer ``spec``
    (see the module docstring); every new layer starts from the projection of the dense conv it
    replaces where its structure allows one (``project_dense_weight``), else kaiming fan-out."""
    spec = pointwise_spec(spec)
    roles = resolve_roles(at)
    report = SurgeryReport(spec["name"], roles, params_before=_count(model))
    for record in convs:
        if not record.pointwise or record.role not in roles:
            continue
        conv = _module(model, record.path)
        reason = None
        if record.stride != (1, 1):
            reason = f"strided (stride {record.stride[0]})"
        elif record.groups != 1:
            reason = f"grouped (groups={record.groups})"
        if reason is None:
            try:
                layer = build_replacement(spec, conv, record.path)
            except ConfigError as error:
                reason = str(error)
        if reason is not None:
            report.kept[record.path] = f"{record.role}, {record.in_channels} -> {record.out_channels}: {reason}"
            continue
        layer.train(conv.training)
        if project_dense_weight(layer, conv.weight, conv.bias):
            report.initialised_from_dense.append(record.path)
        else:
            _kaiming_init(layer)
            report.newly_initialised.append(record.path)
        _set_module(model, record.path, layer)
        report.replaced[record.path] = record.role
    report.params_after = _count(model)
    return report


def log_report(report: SurgeryReport, model_name: str) -> None:
    log.info(report.summary(model_name))
    if report.kept:
        log.warning("timm %s: %d selected 1x1 convs were NOT replaced by %r:\n%s", model_name,
                    len(report.kept), report.layer,
                    "\n".join(f"  {path} ({why})" for path, why in report.kept.items()))


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def is_replaced(module: nn.Module) -> bool:
    return isinstance(module, PointwiseLayer)
