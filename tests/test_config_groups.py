"""The layer config groups (configs/backbone/pointwise/, configs/backbone/spatial/): one file per
registered layer holding exactly its options at their defaults, every backbone yaml composing to
its registered factory's own layers, and the command-line spellings documented in the README."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from analysis.grouping import backbone_identity
from backbones import list_backbones
from backbones.pointwise import list_pointwise
from backbones.pointwise.registry import _layer_class as pointwise_class
from backbones.pointwise.registry import pointwise_options, pointwise_spec
from backbones.registry import _factory
from backbones.spatial import list_spatial
from backbones.spatial.registry import _layer_class as spatial_class
from backbones.spatial.registry import spatial_options, spatial_spec
from tests.helpers import CONFIG_DIR

GROUPS = {
    "pointwise": (list_pointwise, pointwise_options, pointwise_class, pointwise_spec),
    "spatial": (list_spatial, spatial_options, spatial_class, spatial_spec),
}
# Backbone keys holding a layer spec, and the group their layers come from.
SPEC_KEYS = {"pointwise": "pointwise", "se_pointwise": "pointwise", "spatial": "spatial"}
BACKBONE_YAMLS = sorted(p.stem for p in (Path(CONFIG_DIR) / "backbone").glob("*.yaml"))


def _backbone(overrides: list[str]) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=overrides)
    return OmegaConf.to_container(cfg.backbone, resolve=True)


@pytest.mark.parametrize("group", GROUPS)
def test_one_file_per_layer_with_its_options_at_their_defaults(group):
    names, options, layer_class, _ = GROUPS[group]
    folder = Path(CONFIG_DIR) / "backbone" / group
    assert sorted(p.stem for p in folder.glob("*.yaml")) == names()
    for name in names():
        option_file = OmegaConf.to_container(OmegaConf.load(folder / f"{name}.yaml"))
        assert option_file.pop("name") == name
        assert sorted(option_file) == sorted(options(name)), f"{group}/{name}.yaml"
        signature = inspect.signature(layer_class(name)).parameters
        for key, value in option_file.items():
            if value is not None:  # null: a default that depends on the build (e.g. bias)
                assert value == signature[key].default, f"{group}/{name}.yaml: {key}"


def _spec(group: str, spec) -> dict:
    """A layer spec with null options dropped and every default written out."""
    spec = GROUPS[group][3](spec)
    defaults = {k: p.default for k, p in inspect.signature(GROUPS[group][2](spec["name"])).parameters.items()
                if k in GROUPS[group][1](spec["name"])}
    return {**defaults, **spec}


@pytest.mark.parametrize("name", [n for n in BACKBONE_YAMLS if n in list_backbones()])
def test_backbone_yaml_layers_are_its_factory_defaults(name):
    # The yaml and the registered factory agree on every layer (the drift the option union had).
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        backbone = OmegaConf.to_container(compose(f"backbone/{name}")["backbone"], resolve=True)
    factory = inspect.signature(_factory(name)).parameters
    for key, group in SPEC_KEYS.items():
        if key in factory:
            assert key in backbone, f"backbone/{name}.yaml has no {key}"
            assert _spec(group, backbone[key]) == _spec(group, factory[key].default), (name, key)


def test_command_line_spellings():
    # Another layer with its own options, one of them changed.
    assert _backbone(["backbone=mv2_e2", "backbone/pointwise=group", "backbone.pointwise.groups=8"]
                     )["pointwise"] == {"name": "group", "groups": 8}
    # cog_e2's COG options do not leak into another layer.
    assert _backbone(["backbone=cog_e2", "backbone/pointwise=kgroup"])["pointwise"] == {
        "name": "kgroup", "min_channels_per_group": 16, "bias": None}
    assert _backbone(["backbone=cog_e2", "backbone/spatial=deform_depthwise",
                      "backbone.spatial.offset_lr_mult=0.1"])["spatial"] == {
        "name": "deform_depthwise", "offset_groups": 1, "modulation": False,
        "offset_lr_mult": 0.1, "impl": "auto"}
    assert _backbone(["backbone=efficientnet_b0", "backbone/pointwise@backbone.se_pointwise=kgroup"]
                     )["se_pointwise"]["name"] == "kgroup"
    # The old spelling of the layer alone still works (the layer takes its defaults) ...
    spec = _backbone(["backbone=mv2_e2", "backbone.pointwise.name=cog"])["pointwise"]
    assert pointwise_spec(spec) == {"name": "cog"}
    # ... an option of a layer the backbone does not use needs the layer first.
    with pytest.raises(ConfigCompositionException, match="groups"):
        _backbone(["backbone=mv2_e2", "backbone.pointwise.groups=4"])


def test_stored_union_configs_group_with_new_ones():
    # A run stored before the groups (every layer's options, null) is the same backbone as one
    # stored after (the layer's own options, defaults written out) for analysis.report.
    before = {"name": "cog_e2", "pointwise": {"name": "cog", "groups": 4, "overlap": 1,
                                              "min_channels_per_group": None, "impl": None},
              "spatial": {"name": "depthwise", "offset_groups": None, "modulation": None,
                          "offset_lr_mult": None, "impl": None}}
    after = _backbone(["backbone=cog_e2"])
    assert backbone_identity(before) == {k: v for k, v in backbone_identity(after).items()
                                         if k.split(".")[0] in ("name", "pointwise", "spatial")}
