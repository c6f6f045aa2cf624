"""One contract over every registered backbone and every registered pointwise and spatial layer
(timm's ``test_models`` pattern): a new family or layer passes it with no special case, or fails
here."""
import pytest
import torch
from torch import nn

from backbones import ROLES, backbone_overrides, create_backbone, fuse_for_inference, list_backbones, list_pointwise
from backbones.base import EXPANSION, Backbone
from backbones.pointwise import PointwiseLayer
from backbones.spatial import SpatialLayer, list_spatial
from errors import ConfigError
from tests.helpers import randomize_batchnorm

# Tasks are stepped without a Trainer here; their self.log calls only warn.
pytestmark = pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")

SIZE = 64
OUTPUT_STRIDES = (32, 16, 8)


def narrow(name: str) -> dict:
    """Half width where the family has a width knob (timm models are sized by their name)."""
    return {"width_mult": 0.5} if "width_mult" in backbone_overrides(name) else {}


@pytest.mark.parametrize("output_stride", OUTPUT_STRIDES)
@pytest.mark.parametrize("name", list_backbones())
def test_feature_info_is_what_forward_features_returns(name, output_stride):
    torch.manual_seed(0)
    backbone = create_backbone(name, output_stride=output_stride)
    assert isinstance(backbone, Backbone)
    assert backbone.name == name and backbone.output_stride == output_stride
    names = backbone.tap_names
    assert len(set(names)) == len(names)
    x = torch.randn(2, 3, SIZE, SIZE)
    # Training mode: reseed before each forward so random layers (stochastic depth) draw alike.
    torch.manual_seed(1)
    feats = backbone.forward_features(x, names)
    for info in backbone.feature_info:
        out = feats[info.name]
        assert out.shape[1] == info.channels, info
        assert SIZE // out.shape[-1] == info.stride and out.shape[-1] * info.stride == SIZE, info
    # Roles: what the heads ask for, at the strides they expect. A family that stops short of
    # stride 32 (native_output_stride) ends there and refuses the stride-32 pairing, saying why.
    reached = min(output_stride, backbone.native_output_stride)
    if backbone.native_output_stride < 32:
        with pytest.raises(ConfigError, match="stride"):
            backbone.feature_for("stride16_expansion")
    roles = {role: backbone.feature_for(role) for role in ROLES
             if role != "stride16_expansion" or backbone.native_output_stride == 32}
    assert roles["last"].index == len(backbone.features) - 1
    assert roles["last"].stride == reached and backbone.out_channels == roles["last"].channels
    assert roles["body"].stride == reached
    if "stride16_expansion" in roles:
        assert roles["stride16_expansion"].stride == min(16, output_stride)
    assert roles["stride16"].stride == min(16, reached)
    # forward = the last tap; every parameter gets a gradient.
    torch.manual_seed(1)
    out = backbone(x)
    torch.testing.assert_close(out, feats[roles["last"].name])
    out.square().mean().backward()
    missing = [n for n, p in backbone.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("name", list_backbones())
def test_truncate_at_each_role_keeps_the_taps_before_it(name):
    for role in ("body", "stride16"):
        full = create_backbone(name).eval()
        cut = create_backbone(name).eval()
        cut.load_state_dict(full.state_dict())
        info = cut.feature_for(role)
        cut.truncate_at_role(role)
        assert cut.feature_for("last") == info and cut.out_channels == info.channels
        assert all(i.index <= info.index for i in cut.feature_info)
        x = torch.randn(1, 3, SIZE, SIZE)
        torch.testing.assert_close(cut(x), full.forward_features(x, [info.name])[info.name])


def pointwise_variants():
    """Every family with 1x1 convs (a ``pointwise`` override; seed 001's plain CNNs have none)
    x every pointwise layer."""
    from backbones import backbone_overrides

    return [(name, layer) for name in list_backbones() if "pointwise" in backbone_overrides(name)
            for layer in list_pointwise()]


@pytest.mark.parametrize("name,layer", pointwise_variants())
def test_every_pointwise_layer_in_every_backbone(name, layer):
    """Forward/backward, and the fused model computes what the unfused one does."""
    torch.manual_seed(0)
    backbone = create_backbone(name, **narrow(name), pointwise={"name": layer})
    layers = [m for m in backbone.modules() if isinstance(m, PointwiseLayer)]
    replaced = [m for m in layers if getattr(m, "registry_name", None) == layer]
    assert replaced, f"{name} used no {layer!r} layer"
    x = torch.randn(2, 3, 32, 32)
    backbone(x).mean().backward()
    randomize_batchnorm(backbone).eval()
    taps = [i.name for i in backbone.feature_info]
    with torch.no_grad():
        expected = backbone.forward_features(x, taps)
        fused = fuse_for_inference(backbone)
        got = fused.forward_features(x, taps)
    assert not any(isinstance(m, (nn.BatchNorm2d, PointwiseLayer)) for m in fused.modules())
    for tap in taps:
        torch.testing.assert_close(got[tap], expected[tap], atol=1e-4, rtol=1e-4)


def one_training_step(task: nn.Module, batch) -> float:
    optimizer = torch.optim.SGD(task.parameters(), lr=1e-3)
    task.train()
    loss = task.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def build_and_step(task_name: str, backbone) -> float:
    from tasks.classification import ClassificationTask
    from tasks.detection import DetectionTask
    from tasks.segmentation import SegmentationTask

    torch.manual_seed(0)
    images = torch.randn(2, 3, SIZE, SIZE)
    if task_name == "classification":
        return one_training_step(ClassificationTask(backbone=backbone, num_classes=3),
                                 (images, torch.tensor([0, 2])))
    if task_name == "detection":
        spec = backbone if isinstance(backbone, dict) else {"name": backbone}
        options = {k: v for k, v in spec.items() if k != "name"}
        if create_backbone(spec["name"], **options).native_output_stride < 32:
            # SSD-Lite needs a stride-32 map: the task refuses such a backbone, saying why.
            with pytest.raises(ConfigError, match="stride-32"):
                DetectionTask(backbone=backbone, num_classes=2)
            return 1.0
        targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1]),
                    "difficult": torch.tensor([False])},
                   {"boxes": torch.tensor([[10.0, 10.0, 60.0, 30.0]]), "labels": torch.tensor([2]),
                    "difficult": torch.tensor([False])}]
        return one_training_step(DetectionTask(backbone=backbone, num_classes=2), (images, targets))
    masks = torch.randint(0, 3, (2, SIZE, SIZE))
    return one_training_step(SegmentationTask(backbone=backbone, num_classes=3), (images, masks))


TASKS = ("classification", "detection", "segmentation")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", list_backbones())
def test_every_task_builds_and_steps_on_every_backbone(task, name):
    loss = build_and_step(task, {"name": name, **narrow(name)})
    assert loss == loss and loss > 0  # finite, not NaN


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("layer", list_pointwise())
def test_every_task_builds_and_steps_with_every_pointwise_layer(task, layer):
    loss = build_and_step(task, {"name": "mv2_e2", "width_mult": 0.5, "pointwise": {"name": layer}})
    assert loss == loss and loss > 0


def test_expansion_taps_are_inside_their_layer():
    for name in list_backbones():
        backbone = create_backbone(name)
        for info in backbone.feature_info:
            if info.kind == EXPANSION:
                layer = backbone.features[info.index]
                assert hasattr(layer, "forward_with_expansion"), (name, info)


# ---------------------------------------------------------------- spatial layers
def spatial_variants():
    """One backbone per family (the families share their blocks' code) x every spatial layer; each
    pair trains one task, chosen so that every family and every layer sees all three tasks."""
    families: dict[type, str] = {}
    for name in list_backbones():
        if "spatial" not in backbone_overrides(name):  # no spatial surgery (timm: docs/timm.md)
            continue
        families.setdefault(type(create_backbone(name, width_mult=0.25)), name)
    return [(name, layer, TASKS[(i + j) % len(TASKS)])
            for i, name in enumerate(families.values()) for j, layer in enumerate(list_spatial())]


@pytest.mark.slow  # 15 training steps: ~10 CPU-s
@pytest.mark.parametrize("name,layer,task", spatial_variants())
def test_every_spatial_layer_in_every_family(name, layer, task):
    """Taps at output stride 8 (the later strides become dilations), every parameter trained, fused
    = unfused at every tap, and a training step of one task (at its default output stride)."""
    torch.manual_seed(0)
    spec = {"name": layer}
    backbone = create_backbone(name, width_mult=0.25, spatial=spec, output_stride=8)
    replaced = [m for m in backbone.spatial_layers() if getattr(m, "registry_name", None) == layer]
    assert replaced, f"{name} used no {layer!r} layer"
    x = torch.randn(2, 3, 32, 32)
    taps = backbone.tap_names
    torch.manual_seed(1)
    feats = backbone.forward_features(x, taps)
    for info in backbone.feature_info:
        assert feats[info.name].shape[1:] == (info.channels, 32 // info.stride, 32 // info.stride), info
    feats[taps[-1]].square().mean().backward()
    missing = [n for n, p in backbone.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    randomize_batchnorm(backbone).eval()
    with torch.no_grad():
        expected = backbone.forward_features(x, taps)
        fused = fuse_for_inference(backbone)
        got = fused.forward_features(x, taps)
    assert not any(isinstance(m, (nn.BatchNorm2d, PointwiseLayer, SpatialLayer)) for m in fused.modules())
    for tap in taps:
        torch.testing.assert_close(got[tap], expected[tap], atol=1e-4, rtol=1e-4)
    loss = build_and_step(task, {"name": name, "width_mult": 0.25, "spatial": spec})
    assert loss == loss and loss > 0
