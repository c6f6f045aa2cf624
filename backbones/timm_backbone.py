"""Any timm model as a backbone: ``backbone=timm backbone.model_name=<name>`` (registry name ``timm``).

The model is built by ``timm.create_model(name, features_only=True, pretrained=False)`` (at the
requested ``output_stride`` through timm's own dilation where the model supports it) and its
layers are laid out as this suite's ``features`` sequence, exactly as timm's ``FeatureListNet``
flattens them (one level of ``nn.Sequential`` unrolled, names joined with "_": timm's
``blocks.4`` is ``features.blocks_4``). Construction runs the sequence once on a small image and
checks that every tap equals what timm's features model returns, so a model whose features are
not one sequence (hooks, FX) fails here with its name, never silently.

Taps and roles (``docs/timm.md``): every module of timm's ``feature_info`` is a tap named as
timm names it (``blocks.4``); ``stride16`` is the last one at reduction 16 (at output stride 32);
``body`` is the last layer, or the one before it when the last is only a 1x1 conv (MobileNetV3's
and MobileNetV4's 960-channel conv); ``stride16_expansion`` is the input of the first stride-2
spatial conv after the stride-16 stage when that conv is wider than the stage (the expansion
output of the first stride-32 block: MobileNetV3's 672 channels, torchvision's SSDLite map),
else the ``stride16`` tap. Surgery (``backbone.pointwise``) is ``backbones/timm_surgery.py``.

No download ever happens here: ``pretrained=False`` always; ``backbone.pretrained`` loads a
local timm checkpoint (``load_timm_checkpoint``).
"""
from __future__ import annotations

import difflib
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import torch
from torch import Tensor, nn

from errors import CheckpointError, ConfigError

from .base import EXPANSION, OUTPUT, Backbone, FeatureInfo, check_output_stride
from .pointwise.registry import PointwiseSpec
from .registry import register_backbone
from .timm_surgery import (
    ConvRecord,
    SurgeryReport,
    log_report,
    project_dense_weight,
    record_convs,
    replace_pointwise_convs,
    resolve_roles,
)

log = logging.getLogger("backbones")

DEFAULT_MODEL = "mobilenetv4_conv_small"  # the smallest of the four ready configs
PROBE_SIZE = 128  # the construction probe: big enough that stride-32 maps (4x4) differ from SE's 1x1


def create_timm_features(model_name: str, output_stride: int = 32, **kwargs: Any) -> nn.Module:
    """``timm.create_model(model_name, features_only=True, pretrained=False)`` at ``output_stride``,
    with one clear error for an unknown name or an output stride the model cannot run at."""
    import timm

    if not isinstance(model_name, str) or not timm.is_model(model_name):
        close = difflib.get_close_matches(str(model_name), timm.list_models(), n=5)
        raise ConfigError(f"unknown timm model {model_name!r}" + (f"; close names: {close}" if close else "")
                          + "; list them with python -c \"import timm; print(timm.list_models('*mobilenet*'))\"")
    settings = dict(kwargs)
    if output_stride != 32:
        settings["output_stride"] = output_stride
    try:
        return timm.create_model(model_name, pretrained=False, features_only=True, **settings)
    except (AssertionError, TypeError, ValueError, NotImplementedError, RuntimeError) as error:
        if output_stride != 32:
            raise ConfigError(
                f"timm model {model_name!r} cannot run at output_stride={output_stride} (timm: "
                f"{str(error).strip() or type(error).__name__}); use backbone.output_stride=32 (segmentation: "
                "model.cut=stride16, which reads the stride-16 stage) or a model with dilation support "
                "(timm's EfficientNet / MobileNetV3 / MobileNetV4 / ResNet families)") from None
        raise ConfigError(f"timm cannot build {model_name!r} with features_only=True and {settings}: "
                          f"{str(error).strip() or type(error).__name__}") from None


def _feature_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """timm's features model as one ordered list of layers, flattened as FeatureListNet does."""
    from timm.models import FeatureDictNet

    if isinstance(model, FeatureDictNet):  # FeatureListNet too: already flat
        return list(model.named_children())
    layers = []
    for name, module in model.named_children():
        if isinstance(module, nn.Sequential):
            layers.extend((f"{name}_{child}", sub) for child, sub in module.named_children())
        else:
            layers.append((name, module))
    return layers


def _flat_name(timm_module: str) -> str:
    """timm's module name (``blocks.4``) -> the features child it is (``blocks_4``)."""
    return timm_module.replace(".", "_")


class ExpansionTapSequential(nn.Sequential):
    """A stage (same children, same checkpoint keys) that also returns the input of one of its
    spatial convs, ``tap_conv`` (a path inside it): the expansion output before a stride-2
    depthwise conv."""

    tap_conv: str

    def _capture(self, run) -> tuple[Tensor, Tensor]:
        captured: list[Tensor] = []
        handle = self.get_submodule(self.tap_conv).register_forward_pre_hook(
            lambda module, args: captured.append(args[0]))
        try:
            out = run()
        finally:
            handle.remove()
        return out, captured[0]

    def forward_with_expansion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._capture(lambda: self(x))

    def expansion_output(self, x: Tensor) -> Tensor:
        block = int(self.tap_conv.split(".", 1)[0])  # only the blocks up to the tapped one run
        return self._capture(lambda: self[: block + 1](x))[1]


class TimmBackbone(Backbone):
    """A timm model's feature layers behind the suite's Backbone contract (module docstring).

    Args:
        model_name: any name of ``timm.list_models()``.
        output_stride: 32, 16 or 8 (timm's dilation; a clear error where the model has none).
        pointwise / pointwise_at: the pointwise layer and the 1x1 conv roles it replaces
            (``expand``, ``project``, ``conv``, ``se`` or ``all``; ``timm_surgery``).
        drop_path_rate: timm's stochastic depth (None: the model's default).
        model_kwargs: further keyword arguments for ``timm.create_model``.
    """

    def __init__(
        self,
        name: str = "timm",
        *,
        model_name: str = DEFAULT_MODEL,
        output_stride: int = 32,
        pointwise: PointwiseSpec = "dense",
        pointwise_at: Iterable[str] | str = ("expand",),
        drop_path_rate: Optional[float] = None,
        model_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(name, check_output_stride(output_stride))
        self.model_name = model_name
        kwargs = dict(model_kwargs or {})
        if drop_path_rate is not None:
            kwargs["drop_path_rate"] = drop_path_rate
        roles = resolve_roles(pointwise_at)  # fail on a bad role before building anything
        timm_model = create_timm_features(model_name, output_stride, **kwargs)
        self.features = nn.Sequential(OrderedDict(_feature_layers(timm_model)))
        self.timm_feature_info = timm_model.feature_info.get_dicts()
        self.default_cfg = dict(getattr(timm_model, "pretrained_cfg", None) or {})

        probe = torch.randn(1, 3, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
        was_training = self.training
        self.eval()
        self._check_same_as_timm(timm_model, probe)
        convs, self._norm_pairs, _ = record_convs(self.features, probe)
        nominal = self if output_stride == 32 else _NominalLayout(model_name, kwargs)
        self.feature_info = self._taps(probe, nominal)
        self.conv_records: list[ConvRecord] = convs
        self.surgery: SurgeryReport = replace_pointwise_convs(self, convs, pointwise, roles)
        if self.surgery.replaced or self.surgery.kept:
            log_report(self.surgery, model_name)
        self.train(was_training)

    # ------------------------------------------------------------------ construction
    def _layer_index(self, timm_module: str) -> int:
        names = list(self.features._modules)
        flat = _flat_name(timm_module)
        if flat not in names:
            raise ConfigError(f"timm model {self.model_name!r}: feature module {timm_module!r} is not one "
                              f"of its sequential layers {names}; it cannot be used as a backbone here")
        return names.index(flat)

    def _check_same_as_timm(self, timm_model: nn.Module, probe: Tensor) -> None:
        with torch.no_grad():
            expected = timm_model.eval()(probe)
            got, x = {}, probe
            wanted = {self._layer_index(i["module"]): n for n, i in enumerate(self.timm_feature_info)}
            for index, layer in enumerate(self.features):
                x = layer(x)
                if index in wanted:
                    got[wanted[index]] = x
        if len(got) != len(expected) or any(not torch.equal(got[n], e) for n, e in enumerate(expected)):
            raise ConfigError(f"timm model {self.model_name!r} does not run its features as one sequence of "
                              "layers (timm builds them with hooks or FX); it cannot be a backbone here")

    def _taps(self, probe: Tensor, nominal: "TimmBackbone | _NominalLayout") -> list[FeatureInfo]:
        """Taps from timm's feature metadata; roles from the output-stride-32 layout ``nominal``."""
        layout = nominal.layout()
        taps: dict[str, tuple[int, str]] = {}
        for info in self.timm_feature_info:
            index = self._layer_index(info["module"])
            # A bare conv whose norm follows (GhostNet's conv_stem): its pre-norm output would
            # change when fusion folds the norm into it, so it is no tap here.
            following = self.features[index + 1] if index + 1 < len(self.features) else None
            if not (isinstance(self.features[index], nn.Conv2d) and isinstance(following, nn.BatchNorm2d)):
                taps[info["module"]] = (index, OUTPUT)
        body_name = layout["body"]
        if body_name not in taps:
            taps[body_name] = (self._layer_index(body_name), OUTPUT)
        expansion = layout["expansion"]
        if expansion is not None:
            layer_name, conv_path = expansion
            index = self._layer_index(layer_name)
            stage = self.features[index]
            tapped = ExpansionTapSequential(OrderedDict(stage.named_children()))
            tapped.tap_conv = conv_path
            self.features[index] = tapped
            taps[f"{layer_name}.expansion"] = (index, EXPANSION)
        exp_tap = f"{expansion[0]}.expansion" if expansion else layout["stride16"]
        roles: dict[str, list[str]] = {}
        for tap, role in ((body_name, "body"), (layout["stride16"], "stride16"), (exp_tap, "stride16_expansion")):
            roles.setdefault(tap, []).append(role)
        ordered = sorted(taps.items(), key=lambda kv: (kv[1][0], kv[1][1] == OUTPUT))
        with torch.no_grad():
            names = [n for n, _ in ordered]
            self.feature_info = [FeatureInfo(n, 0, 0, i, k) for n, (i, k) in ordered]
            outs = self.forward_features(probe, names)
        return [FeatureInfo(n, outs[n].shape[1], PROBE_SIZE // outs[n].shape[-1], i, k,
                            tuple(roles.get(n, ())))
                for n, (i, k) in ordered]

    def layout(self) -> dict[str, Any]:
        """Role names at output stride 32: body and stride16 taps, the expansion (layer, conv)."""
        names = list(self.features._modules)
        stride16 = [i["module"] for i in self.timm_feature_info if i["reduction"] == 16]
        if not stride16:
            raise ConfigError(f"timm model {self.model_name!r} has no stride-16 feature "
                              f"({[(i['module'], i['reduction']) for i in self.timm_feature_info]}); "
                              "the heads here need one")
        last = self.features[-1]
        convs = [m for m in last.modules() if isinstance(m, nn.Conv2d)]
        only_pointwise = bool(convs) and all(tuple(c.kernel_size) == (1, 1) for c in convs)
        last_name = self.timm_feature_info[-1]["module"]
        body = names[-2] if only_pointwise and len(names) > 1 else _flat_name(last_name)
        body = _timm_name(body, self.timm_feature_info)
        return {"body": body, "stride16": stride16[-1], "expansion": self._expansion(stride16[-1])}

    def _expansion(self, stride16: str) -> Optional[tuple[str, str]]:
        start = self._layer_index(stride16) + 1
        channels = self._probe_channels(stride16)
        for index in range(start, len(self.features)):
            layer = self.features[index]
            for path, module in layer.named_modules():
                if isinstance(module, nn.Conv2d) and tuple(module.stride) == (2, 2) \
                        and tuple(module.kernel_size) != (1, 1):
                    if not isinstance(layer, nn.Sequential) or module.in_channels <= channels:
                        return None
                    return _timm_name(list(self.features._modules)[index], self.timm_feature_info), path
        return None

    def _probe_channels(self, timm_module: str) -> int:
        return next(i["num_chs"] for i in self.timm_feature_info if i["module"] == timm_module)

    # ------------------------------------------------------------------ inference fusion
    def fold_norms_for_inference(self) -> None:
        """Folds each BatchNorm that reads exactly one conv's output (recorded at construction)
        into that conv, for the pairs ``fuse_for_inference``'s Sequential rule cannot see (timm
        blocks keep conv and norm as sibling attributes). Called on the fused copy only."""
        from .fuse import fold_norm_into

        for conv_path, norm_path in self._norm_pairs:
            try:
                norm = self.get_submodule(norm_path)
                conv = self.get_submodule(conv_path)
            except AttributeError:  # truncated away
                continue
            replacement = fold_norm_into(conv, norm)
            if replacement is not None:
                _set(self, conv_path, replacement[0])
                _set(self, norm_path, replacement[1])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, model_name={self.model_name!r}"


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _timm_name(flat: str, feature_info: list[dict[str, Any]]) -> str:
    """The timm spelling of a features child (``blocks_5`` -> ``blocks.5``) for tap names."""
    for info in feature_info:
        if _flat_name(info["module"]) == flat:
            return info["module"]
    head, _, tail = flat.rpartition("_")
    return f"{head}.{tail}" if head and tail.isdigit() else flat


class _NominalLayout:
    """The output-stride-32 twin of a dilated model, built only to read its role layout."""

    def __init__(self, model_name: str, kwargs: Mapping[str, Any]) -> None:
        self.model_name, self.kwargs = model_name, dict(kwargs)

    def layout(self) -> dict[str, Any]:
        return TimmBackbone(model_name=self.model_name, model_kwargs=self.kwargs).layout()


# ---------------------------------------------------------------------- timm checkpoints
def is_timm_state_dict(backbone: nn.Module, state: Mapping[str, Any]) -> bool:
    """A timm model's state dict (full model or features_only) for this timm backbone."""
    return isinstance(backbone, TimmBackbone) and not any(k.startswith("features.") for k in state) \
        and any(k.startswith(("conv_stem.", "blocks.", "blocks_", "stem.")) for k in state)


def timm_key_candidates(key: str) -> list[str]:
    """Our ``features.blocks_5.0.conv_pw.weight`` -> timm's ``blocks.5.0.conv_pw.weight`` (full or
    MobileNetV3/EfficientNet features model) or ``blocks_5.0...`` (FeatureListNet)."""
    rest = key[len("features."):]
    child, _, inner = rest.partition(".")
    head, _, tail = child.rpartition("_")
    dotted = f"{head}.{tail}" if head and tail.isdigit() else child
    return [f"{dotted}.{inner}", f"{child}.{inner}"]


def load_timm_checkpoint(backbone: TimmBackbone, state: Mapping[str, Tensor], path: str) -> dict[str, Any]:
    """Loads a timm state dict into the unmodified parts of ``backbone``; each layer replaced by
    surgery starts from the projection of the checkpoint's dense conv where its structure allows
    one (group, group_shuffle, cog), else stays newly initialised (kgroup). Returns a summary."""
    target = backbone.state_dict()
    replaced = backbone.surgery.replaced
    loaded: dict[str, Tensor] = {}
    missing, mismatched, used = [], [], set()
    for key, tensor in target.items():
        if any(key.startswith(p + ".") for p in replaced):
            continue
        source = next((k for k in timm_key_candidates(key) if k in state), None)
        if source is None:
            missing.append(key)
        elif state[source].shape != tensor.shape:
            mismatched.append(f"{key}: checkpoint {tuple(state[source].shape)} vs {tuple(tensor.shape)}")
        else:
            loaded[key] = state[source]
            used.add(source)
    if missing or mismatched:
        raise CheckpointError(
            f"{path} does not fit timm {backbone.model_name!r}: {len(missing)} missing {missing[:5]}, "
            f"{len(mismatched)} with other shapes {mismatched[:5]}; is it a checkpoint of another model?")
    backbone.load_state_dict(loaded, strict=False)
    projected, fresh = [], []
    for conv_path in replaced:
        weight_key = next((k for k in timm_key_candidates(conv_path + ".weight") if k in state), None)
        bias_key = next((k for k in timm_key_candidates(conv_path + ".bias") if k in state), None)
        layer = backbone.get_submodule(conv_path)
        if weight_key is not None and project_dense_weight(layer, state[weight_key],
                                                           state[bias_key] if bias_key else None):
            projected.append(conv_path)
            used.update(k for k in (weight_key, bias_key) if k)
        else:
            fresh.append(conv_path)
    ignored = sorted(set(state) - used)
    summary = {"loaded": len(loaded), "projected": projected, "newly_initialised": fresh, "ignored": ignored}
    log.info("Loaded %d timm tensors into %r from %s; %d replaced layers initialised from the dense "
             "weights (projection), %d newly initialised%s; ignored %d checkpoint tensors%s",
             len(loaded), backbone.model_name, path, len(projected), len(fresh),
             f" {fresh[:5]}" if fresh else "", len(ignored), f" e.g. {ignored[:5]}" if ignored else "")
    return summary


@register_backbone("timm")
def timm_backbone(
    *,
    model_name: str = DEFAULT_MODEL,
    output_stride: int = 32,
    pointwise: PointwiseSpec = "dense",
    pointwise_at: Iterable[str] | str = ("expand",),
    drop_path_rate: Optional[float] = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
) -> TimmBackbone:
    """Any timm model (features_only, pretrained=False) with optional pointwise surgery."""
    return TimmBackbone("timm", model_name=model_name, output_stride=output_stride, pointwise=pointwise,
                        pointwise_at=pointwise_at, drop_path_rate=drop_path_rate, model_kwargs=model_kwargs)
