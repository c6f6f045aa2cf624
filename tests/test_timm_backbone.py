"""backbone=timm: timm models behind the Backbone contract, pointwise surgery, timm checkpoints.

The contract itself (taps, roles, output strides, truncation, every pointwise layer fused =
unfused, a step of every task) runs on the default timm model in test_backbone_contract.py.
"""
import logging

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from backbones import create_backbone, fuse_for_inference, load_backbone_weights
from backbones.pointwise import PointwiseLayer
from errors import ConfigError
from tests.helpers import compose_config, randomize_batchnorm

pytestmark = pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")

MODELS = ("mobilenetv3_large_100", "mobilenetv4_conv_small", "efficientnet_lite0", "ghostnet_100")
# The smallest model runs in the quick lane; the other three with the slow tests.
QUICK = "mobilenetv4_conv_small"
MODELS_QUICK_FIRST = [pytest.param(m, marks=() if m == QUICK else pytest.mark.slow) for m in MODELS]
SIZE = 64


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def timm_checkpoint(name: str, path) -> str:
    """A full timm model's random weights saved as timm's hub files are (safetensors)."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    randomize_batchnorm(model)
    file = str(path / f"{name}.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, file)
    return file


@pytest.mark.parametrize("name", MODELS_QUICK_FIRST)
def test_dense_is_timms_own_model(name, tmp_path):
    """pointwise dense at every 1x1 conv: timm's parameter count, and with one checkpoint loaded
    by timm itself (its local-file pretrained loading) and by backbone.pretrained, identical taps."""
    file = timm_checkpoint(name, tmp_path)
    reference = timm.create_model(name, pretrained=True, features_only=True,
                                  pretrained_cfg_overlay={"file": file}).eval()
    backbone = create_backbone("timm", model_name=name, pointwise="dense", pointwise_at="all").eval()
    assert backbone.surgery.replaced and not backbone.surgery.kept
    assert parameters(backbone) == parameters(reference) == backbone.surgery.params_before
    report = load_backbone_weights(backbone, file)
    assert report.source == "timm" and len(report.projected) == len(backbone.surgery.replaced)
    assert not report.newly_initialised
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = dict(zip([i["module"] for i in reference.feature_info.get_dicts()], reference(x)))
        taps = [t for t in expected if t in backbone.tap_names]
        got = backbone.forward_features(x, taps)
    assert len(taps) >= 4
    for tap in taps:
        assert torch.equal(got[tap], expected[tap]), tap


# cog in all four; group_shuffle and kgroup (their folds through a shuffle / two grouped convs)
# in the smallest two (the contract test runs every layer in the default timm model too).
SURGERY = [(name, "cog") for name in MODELS] + [
    (name, layer) for name in ("mobilenetv4_conv_small", "ghostnet_100") for layer in ("group_shuffle", "kgroup")]


@pytest.mark.slow
@pytest.mark.parametrize("name,layer", SURGERY)
def test_surgery_changes_exactly_the_convs_it_reports(name, layer):
    torch.manual_seed(0)
    backbone = create_backbone("timm", model_name=name, pointwise=layer, pointwise_at=["expand", "project"])
    report = backbone.surgery
    swapped = {n for n, m in backbone.named_modules() if getattr(m, "registry_name", None) == layer}
    assert swapped == set(report.replaced) and swapped
    records = {r.path: r for r in backbone.conv_records}
    assert {records[p].role for p in swapped} <= {"expand", "project"}
    # Every other conv recorded in the dense model is still timm's conv, unchanged in shape.
    for path, record in records.items():
        if path not in swapped:
            conv = backbone.get_submodule(path)
            assert type(conv) is nn.Conv2d and (conv.in_channels, conv.out_channels) == \
                (record.in_channels, record.out_channels)
    # The parameter change is exactly the replaced convs' (dense: in x out weights, no bias).
    delta = sum(parameters(backbone.get_submodule(p)) - records[p].in_channels * records[p].out_channels
                for p in swapped)
    assert report.params_after - report.params_before == delta
    assert parameters(backbone) == report.params_after
    # Fused = unfused, with no norm or pointwise layer left.
    randomize_batchnorm(backbone).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = backbone.forward_features(x, backbone.tap_names)
        fused = fuse_for_inference(backbone)
        got = fused.forward_features(x, backbone.tap_names)
    assert not any(isinstance(m, (nn.BatchNorm2d, PointwiseLayer)) for m in fused.modules())
    for tap, value in expected.items():
        torch.testing.assert_close(got[tap], value, atol=1e-4 * value.abs().max().item(), rtol=1e-4)


def test_cog_and_group_start_from_the_dense_weights_kgroup_is_new(tmp_path):
    from safetensors.torch import load_file

    file = timm_checkpoint(QUICK, tmp_path)
    state = load_file(file)
    # kgroup at a projection (C_in >= C_out, groups > 1) adds a second grouped conv: a product of
    # two weights, no projection; there it starts new.
    kgroup = create_backbone("timm", model_name=QUICK, pointwise="kgroup",
                             pointwise_at="project")
    report = load_backbone_weights(kgroup, file)
    assert report.newly_initialised and set(report.newly_initialised) == {
        p for p in kgroup.surgery.replaced if kgroup.get_submodule(p).second is not None}
    for layer in ("cog", "group", "group_shuffle"):
        backbone = create_backbone("timm", model_name=QUICK, pointwise=layer)
        report = load_backbone_weights(backbone, file)
        replaced = list(backbone.surgery.replaced)
        assert report.projected == replaced and not report.newly_initialised
        for path in replaced:
            unit = backbone.get_submodule(path)
            original = state[path.replace("features.blocks_", "blocks.", 1) + ".weight"]
            matrix = unit(torch.eye(unit.in_channels).reshape(unit.in_channels, -1, 1, 1)).flatten(1).T
            kept = matrix != 0
            assert kept.float().mean() < 1  # a structure, not a dense conv
            torch.testing.assert_close(matrix[kept], original.flatten(1)[kept])


def test_convs_that_cannot_be_replaced_are_listed_in_one_message(caplog):
    for name, reason in (("resnet18", "strided (stride 2)"), ("mobilenetv4_conv_small", "not divisible by groups=3")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="backbones"):
            backbone = create_backbone("timm", model_name=name, pointwise={"name": "cog", "groups": 3},
                                       pointwise_at="all")
        kept = backbone.surgery.kept
        assert kept and any(reason in why for why in kept.values()), kept
        warnings = [r.getMessage() for r in caplog.records if "NOT replaced" in r.getMessage()]
        assert len(warnings) == 1 and all(path in warnings[0] for path in kept)
        assert not set(kept) & set(backbone.surgery.replaced)


def test_clear_errors_name_the_model():
    with pytest.raises(ConfigError, match="ghostnet_100.*output_stride=16"):
        create_backbone("timm", model_name="ghostnet_100", output_stride=16)
    with pytest.raises(ConfigError, match="unknown timm model 'mobilenetv3_large_10'.*mobilenetv3_large_100"):
        create_backbone("timm", model_name="mobilenetv3_large_10")
    with pytest.raises(ConfigError, match="unknown conv role"):
        create_backbone("timm", pointwise="cog", pointwise_at=["squeeze"])


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_variant_configs_build_their_model(name, tmp_path):
    cfg = compose_config("train", [f"backbone=timm_{name}", "backbone.pointwise.name=cog"], tmp_path)
    from tasks.base import build_backbone
    from omegaconf import OmegaConf
    backbone = build_backbone(OmegaConf.to_container(cfg.backbone))
    assert backbone.model_name == name and backbone.surgery.layer == "cog" and backbone.surgery.replaced


@pytest.mark.slow
@pytest.mark.parametrize("task", ("classification", "detection", "segmentation"))
@pytest.mark.parametrize("name", MODELS)
def test_each_model_trains_in_each_task(name, task):
    """A few optimizer steps with COG at the expansion convs: finite losses, weights move."""
    backbone = {"name": "timm", "model_name": name, "pointwise": "cog"}
    # timm's GhostNet has no dilation: DeepLabv3 reads its stride-16 stage (model.cut=stride16).
    options = {"cut": "stride16"} if name == "ghostnet_100" and task == "segmentation" else {}
    model, batch = task_and_batch(task, backbone, **options)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        loss = model.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(loss == loss and loss > 0 for loss in losses), losses
    moved = sum(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
    assert moved > 0.9 * len(before)


def task_and_batch(task: str, backbone, **options):
    from tasks.classification import ClassificationTask
    from tasks.detection import DetectionTask
    from tasks.segmentation import SegmentationTask

    torch.manual_seed(0)
    images = torch.randn(2, 3, SIZE, SIZE)
    if task == "classification":
        return ClassificationTask(backbone=backbone, num_classes=3), (images, torch.tensor([0, 2]))
    if task == "detection":
        targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1]),
                    "difficult": torch.tensor([False])},
                   {"boxes": torch.tensor([[10.0, 10.0, 60.0, 30.0]]), "labels": torch.tensor([2]),
                    "difficult": torch.tensor([False])}]
        return DetectionTask(backbone=backbone, num_classes=2), (images, targets)
    masks = torch.randint(0, 3, (2, SIZE, SIZE))
    return SegmentationTask(backbone=backbone, num_classes=3, **options), (images, masks)


@pytest.mark.slow
def test_train_py_runs_mobilenetv3_cog_and_logs_the_surgery(tmp_path, caplog):
    from train import train

    cfg = compose_config("train", ["backbone=timm_mobilenetv3_large_100", "backbone.pointwise.name=cog",
                                   "data=synthetic", f"paths.synthetic_dir={tmp_path / 'data'}",
                                   "++trainer.fast_dev_run=true", "batch_size=2"], tmp_path)
    from omegaconf import open_dict
    with open_dict(cfg):
        gen = cfg.synthetic.generator
        for key in ("images_per_class",):
            if key in gen:
                gen[key] = 4
    with caplog.at_level(logging.INFO, logger="backbones"):
        metrics = train(cfg)
    assert any(k.startswith("test/") for k in metrics)
    assert any("replaced 14 1x1 convs (expand) with 'cog'; params 2,971,952 -> " in r.getMessage()
               for r in caplog.records)


@pytest.mark.slow
def test_onnx_export_of_a_timm_detector_with_cog(tmp_path):
    """Fusion + ONNX export through the suite's exporter (SSD-Lite reads the expansion tap)."""
    from deploy.export import export_onnx
    from tasks.detection import DetectionTask

    torch.manual_seed(0)
    model = DetectionTask(backbone={"name": "timm", "model_name": "mobilenetv4_conv_small", "pointwise": "cog"},
                          num_classes=2).eval()
    randomize_batchnorm(model)
    report = export_onnx(model, torch.zeros(1, 3, SIZE, SIZE), tmp_path / "timm.onnx")
    for name in report.output_names:
        assert report.max_abs_diff[name] <= report.tolerance[name]
        assert report.fused_max_abs_diff[name] <= report.tolerance[name]


@pytest.mark.slow
def test_complexity_and_throughput_measure_timm_models(tmp_path):
    """benchmarks.complexity from the command line (dense vs cog rows) and a throughput
    training / inference step, through the interfaces every family uses."""
    import csv

    from benchmarks import complexity
    from benchmarks import task_steps as steps
    from benchmarks.timing import Runtime

    path = tmp_path / "timm.csv"
    complexity.main(["--tasks", "classification", "--backbones", "timm", "--no-latency", "--image-size", "64",
                     "--pointwise", "dense", "cog", "--set", "model_name=mobilenetv4_conv_small",
                     "--classes", "5", "--csv", str(path)])
    with open(path) as handle:
        rows = {row["backbone"]: row for row in csv.DictReader(handle)}
    dense = rows["timm+dense model_name=mobilenetv4_conv_small"]
    cog = rows["timm+cog model_name=mobilenetv4_conv_small"]
    assert int(dense["params"]) == 1_261_664 + 960 * 1000 + 1000  # timm's features + the classifier
    assert int(cog["params"]) < int(dense["params"]) and float(cog["macs"]) < float(dense["macs"])

    runtime = Runtime(torch.device("cpu"))
    size = steps.Size(64, 2)
    batch = steps.make_batch("classification", size, runtime)
    entry = steps.ours_entry("classification", {"name": "timm", "model_name": "mobilenetv4_conv_small",
                                              "pointwise": "cog"}, batch, runtime)
    before = [p.detach().clone() for p in entry.model.parameters()]
    entry.infer()
    entry.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, entry.model.parameters()))
