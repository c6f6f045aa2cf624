"""load_backbone_weights: Lightning checkpoints, torchvision weights, plain state dicts, refusals."""
import logging
import os

import lightning as L
import pytest
import torch
import torchvision
from torch import nn

from backbones import create_backbone, load_backbone_weights


def randomized(backbone: nn.Module, seed: int = 1) -> nn.Module:
    """Makes every tensor (BN statistics included) distinct from a fresh backbone's."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in backbone.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
            else:
                tensor.fill_(int(torch.randint(1, 100, (1,), generator=g)))
    return backbone


def lightning_style_checkpoint(path, backbone_name, hparams_backbone=None, **overrides):
    source = randomized(create_backbone(backbone_name, **overrides))
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["head.weight"] = torch.randn(10, 4)
    torch.save({"state_dict": state, "epoch": 3,
                "hyper_parameters": {"backbone": hparams_backbone or backbone_name, "num_classes": 10}},
               path)
    return source


def assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_lightning_checkpoint_into_dilated_backbone(tmp_path, caplog):
    path = tmp_path / "task.ckpt"
    source = lightning_style_checkpoint(path, "cog_e2")
    target = create_backbone("cog_e2", output_stride=16)
    with caplog.at_level(logging.INFO, logger="backbones"):
        report = load_backbone_weights(target, path)
    assert_same_state(target, source)
    assert report.source == "lightning" and report.checkpoint_backbone == "cog_e2"
    assert report.loaded == len(target.state_dict()) and report.ignored == []
    assert f"Loaded {report.loaded} tensors" in caplog.text


def test_name_recorded_as_mapping_and_truncated_target(tmp_path):
    path = tmp_path / "task.ckpt"
    source = lightning_style_checkpoint(path, "mv2_e4", {"name": "mv2_e4", "pretrained": None})
    target = create_backbone("mv2_e4", output_stride=8).truncate("stage6")
    report = load_backbone_weights(target, path)
    assert report.checkpoint_backbone == "mv2_e4"
    assert sorted(report.ignored) == sorted(k for k in source.state_dict() if k.startswith("features.18."))
    for key, value in target.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_other_expansion_ratio_is_refused_with_key_names(tmp_path):
    path = tmp_path / "task.ckpt"
    lightning_style_checkpoint(path, "cog_e4")
    target = create_backbone("cog_e2")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError) as error:
        load_backbone_weights(target, path)
    message = str(error.value)
    assert "'cog_e4'" in message and "'cog_e2'" in message
    # block 2 expands 16 -> 64 channels with t=4 but 16 -> 32 with t=2 (COG: 2 of 4 chunks each)
    assert "features.2.expand.0.weight: checkpoint (64, 8, 1, 1) vs backbone (32, 8, 1, 1)" in message
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # untouched


def test_mobilenet_v2_weights_into_cog_are_refused_with_key_names(tmp_path):
    path = tmp_path / "task.ckpt"
    lightning_style_checkpoint(path, "mv2_e2")
    with pytest.raises(ValueError) as error:
        load_backbone_weights(create_backbone("cog_e2"), path)
    message = str(error.value)
    assert "'mv2_e2'" in message and "'cog_e2'" in message
    assert "missing: ['features.1.expand.0.weight'" in message  # the t=1 COG expansion
    assert "features.2.expand.0.weight: checkpoint (32, 16, 1, 1) vs backbone (32, 8, 1, 1)" in message


def test_truncated_checkpoint_into_full_backbone_hints_at_truncation(tmp_path):
    source = create_backbone("mv2_e2").truncate("stage6")
    path = tmp_path / "backbone.pt"
    torch.save(source.state_dict(), path)
    with pytest.raises(ValueError, match=r"(?s)missing: \['features.18.0.weight'.*truncate the target"):
        load_backbone_weights(create_backbone("mv2_e2"), path)


def test_strict_arch_checks_the_recorded_name(tmp_path):
    path = tmp_path / "task.ckpt"
    source = lightning_style_checkpoint(path, "cog_e2", {"name": "cog_e2_renamed"})
    target = create_backbone("cog_e2")
    with pytest.raises(ValueError, match="'cog_e2_renamed' but the target backbone is 'cog_e2'"):
        load_backbone_weights(target, path)
    load_backbone_weights(target, path, strict_arch=False)
    assert_same_state(target, source)


def test_torchvision_state_dict_into_mv2_e6(tmp_path):
    torch.manual_seed(0)
    reference = randomized(torchvision.models.mobilenet_v2()).eval()
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(reference.state_dict(), path)
    target = create_backbone("mv2_e6", output_stride=32).eval()
    report = load_backbone_weights(target, path)
    assert report.source == "torchvision"
    assert report.ignored == []  # the classifier is not a backbone tensor
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), reference.features(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="'mv2_e6'.*'cog_e6'"):
        load_backbone_weights(create_backbone("cog_e6"), path)


def test_plain_backbone_state_dict(tmp_path):
    source = randomized(create_backbone("cog_e6"))
    path = tmp_path / "backbone.pt"
    torch.save(source.state_dict(), path)
    target = create_backbone("cog_e6", output_stride=8)
    report = load_backbone_weights(target, path)
    assert report.source == "state_dict" and report.checkpoint_backbone is None
    assert_same_state(target, source)


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(ValueError, match="is not a safe checkpoint"):
        load_backbone_weights(create_backbone("mv2_e2"), path)
    assert not marker.exists()


def test_missing_file_and_non_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_backbone_weights(create_backbone("mv2_e2"), tmp_path / "nope.ckpt")
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="holds a list"):
        load_backbone_weights(create_backbone("mv2_e2"), path)
    path = tmp_path / "no_backbone.ckpt"
    torch.save({"state_dict": {"model.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=r"without 'backbone\.\*' weights.*\['model'\]"):
        load_backbone_weights(create_backbone("mv2_e2"), path)


class _TinyTask(L.LightningModule):
    def __init__(self, backbone: dict):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = create_backbone(backbone["name"], width_mult=backbone["width_mult"])
        self.head = nn.Linear(self.backbone.out_channels, 3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.head(self.backbone(x).mean((2, 3)))
        return nn.functional.cross_entropy(logits, y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
def test_real_lightning_checkpoint(tmp_path):
    torch.manual_seed(0)
    task = _TinyTask({"name": "cog_e2", "width_mult": 0.5})
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, torch.utils.data.DataLoader(data, batch_size=2))
    path = tmp_path / "real.ckpt"
    trainer.save_checkpoint(path)
    target = create_backbone("cog_e2", width_mult=0.5, output_stride=16)
    report = load_backbone_weights(target, path)
    assert report.source == "lightning" and report.checkpoint_backbone == "cog_e2"
    assert_same_state(target, task.backbone)
