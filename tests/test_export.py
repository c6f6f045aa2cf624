"""deploy.export: ONNX export of every task's model, checked with onnxruntime; fusion equivalence;
export from a real checkpoint."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deploy import export
from deploy.export import OnnxMismatchError, export_onnx, run_onnxruntime
from tasks.classification import ClassificationTask
from tasks.detection import DetectionTask
from tasks.segmentation import SegmentationTask
from tests.helpers import compose_config

SMALL = {"name": "cog_e2", "width_mult": 0.35}
SIZE = 64


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and O(1) conv weights, so fusion and export errors show
    (fresh models have BN = identity and near-zero SSD head outputs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.2)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.out_channels, generator=generator) * 0.5)
    return model.eval()


def build(task: str, backbone=SMALL) -> nn.Module:
    torch.manual_seed(0)  # the same weights whichever tests ran before (output-size checks below)
    if task == "classification":
        model = ClassificationTask(backbone=backbone, num_classes=7)
    elif task == "detection":
        model = DetectionTask(backbone=backbone, num_classes=3)
    else:
        model = SegmentationTask(backbone=backbone, num_classes=5)
    return randomise(model)


@pytest.mark.parametrize("task,decode", [("classification", False), ("detection", False),
                                         ("detection", True), ("segmentation", False)])
def test_onnxruntime_reproduces_pytorch(task, decode, tmp_path):
    model = build(task)
    path = tmp_path / f"{task}.onnx"
    report = export_onnx(model, torch.zeros(1, 3, SIZE, SIZE), path, decode_boxes=decode)
    expected_names = {("classification", False): ["logits"], ("segmentation", False): ["logits"],
                      ("detection", False): ["cls_logits", "box_regression"],
                      ("detection", True): ["scores", "boxes"]}[(task, decode)]
    assert report.output_names == expected_names
    for name in expected_names:
        assert report.max_abs_diff[name] <= report.tolerance[name]
        assert report.fused_max_abs_diff[name] <= report.tolerance[name]

    # Independently of the report: a batch of 3 (dynamic batch axis) against the unfused model.
    images = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    onnx_out = run_onnxruntime(path, images)
    with torch.no_grad():
        torch_out = export.exportable(model, images, decode)[0](images)
    torch_out = torch_out if isinstance(torch_out, tuple) else (torch_out,)
    for got, ref in zip(onnx_out, torch_out):
        assert got.shape == tuple(ref.shape)
        assert ref.abs().max() > 0.1  # outputs large enough that the comparison means something
        torch.testing.assert_close(torch.from_numpy(got), ref, rtol=0, atol=1e-3 * max(1.0, ref.abs().max().item()))
    if task == "segmentation":
        assert onnx_out[0].shape == (3, 5, SIZE, SIZE)
    if decode:
        scores, boxes = (torch.from_numpy(a) for a in onnx_out)
        torch.testing.assert_close(scores.sum(-1), torch.ones(scores.shape[:2]))
        assert boxes.min() >= 0 and boxes.max() <= SIZE


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
@pytest.mark.parametrize("backbone", ["cog_e2", "mv2_e2"])
def test_fused_and_unfused_pytorch_outputs_agree(task, backbone):
    from backbones import fuse_for_inference

    torch.manual_seed(0)  # the scale check below must not depend on what ran before
    model = build(task, {"name": backbone, "width_mult": 0.35})
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.backbone.modules())
    with torch.no_grad():
        ref = export.exportable(model, images)[0](images)
        got = export.exportable(fused, images)[0](images)
    for r, g in zip(ref if isinstance(ref, tuple) else (ref,), got if isinstance(got, tuple) else (got,)):
        assert r.abs().max() > 0.1
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def test_unfused_cog_export_uses_grouped_convs_and_matches(tmp_path):
    import onnx

    model = build("classification")
    report = export_onnx(model, torch.zeros(1, 3, SIZE, SIZE), tmp_path / "unfused.onnx", fuse=False)
    assert report.max_abs_diff["logits"] <= report.tolerance["logits"]
    def conv_groups(path) -> list[int]:
        return [a.i for node in onnx.load(str(path)).graph.node if node.op_type == "Conv"
                for a in node.attribute if a.name == "group"]

    assert 4 in conv_groups(report.path)  # the COG expansion convs stayed grouped (4 groups)
    fused = export_onnx(model, torch.zeros(1, 3, SIZE, SIZE), tmp_path / "fused.onnx")
    assert 4 not in conv_groups(fused.path)  # fused: dense 1x1 convs
    # Model left as it was: COG impl restored, still in eval mode.
    assert {m.impl for m in model.modules() if hasattr(m, "resolved_impl")} == {"auto"}


class TraceDependent(nn.Module):
    """Python control flow on the input: tracing freezes the branch of the export example."""

    def forward(self, x):
        pooled = x.mean((2, 3))
        return pooled * 2 if bool(x.abs().sum() > 0) else pooled - 1


def test_mismatch_fails_loudly(tmp_path):
    with pytest.raises(OnnxMismatchError, match="logits: max"):
        export_onnx(TraceDependent(), torch.zeros(1, 3, 8, 8), tmp_path / "bad.onnx", fuse=False)


def test_command_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main([f"ckpt_path={tmp_path / 'nope.ckpt'}"])
    assert exit_info.value.code == 2 and "nope.ckpt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main(["image_size=3"])
    assert "ckpt_path=PATH" in capsys.readouterr().err


@pytest.mark.slow
def test_export_from_a_trained_checkpoint(tmp_path, capsys):
    """A 1-epoch classification run writes a checkpoint; the command line exports and checks it."""
    from data import synthetic
    from train import train

    folder = tmp_path / "images"
    synthetic.write_image_folder(folder, num_classes=4, images_per_class=8, image_size=72)
    cfg = compose_config("train", [
        "task=classification", "data=flowers", f"data.root={folder}", "data.layout=imagefolder",
        "data.num_classes=4", "image_size=64", "backbone=cog_e2", "backbone.width_mult=0.35",
        "batch_size=4", "trainer.max_epochs=1", "test=false", "logger=csv",
    ], tmp_path / "run")
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = tmp_path / "model.onnx"
    report = export.main([f"ckpt_path={ckpt}", "--out", str(out)])
    assert out.is_file() and report.fused
    printed = capsys.readouterr().out
    assert "classification model, input [B, 3, 64, 64]" in printed and "check passed" in printed
    assert report.max_abs_diff["logits"] <= report.tolerance["logits"]
    assert run_onnxruntime(out, torch.zeros(2, 3, 64, 64))[0].shape == (2, 4)
