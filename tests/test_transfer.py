"""The thesis flow: a classifier's backbone initialises a segmentation (or detection) model."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from tests.helpers import compose_config


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory, synthetic_dir):
    from train import train

    out = tmp_path_factory.mktemp("classifier")
    cfg = compose_config("train", [
        "task=classification", "data=synthetic", f"paths.synthetic_dir={synthetic_dir}",
        "backbone=cog_e2", "backbone.width_mult=0.35", "synthetic.image_size=64",
        "synthetic.generator.images_per_class=12", "synthetic.generator.image_size=72",
        "batch_size=8", "trainer.max_epochs=1", "test=false",
    ], out)
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def _backbone_tensors(checkpoint_path):
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_model_starts_from_exactly_the_classifier_backbone(tmp_path, synthetic_dir,
                                                           classifier_checkpoint, task):
    cfg = compose_config("train", [
        f"task={task}", "data=synthetic", f"paths.synthetic_dir={synthetic_dir}",
        "backbone=cog_e2", "backbone.width_mult=0.35", f"backbone.pretrained={classifier_checkpoint}",
    ], tmp_path)
    model = instantiate(cfg.model)
    source = _backbone_tensors(classifier_checkpoint)
    target = model.backbone.state_dict()
    assert len(target) > 100
    for key, value in target.items():
        assert key in source, key
        assert torch.equal(value, source[key]), key
    if task == "segmentation":
        # Output stride 16 changes dilations, not weights; the 1280 last conv is not used.
        assert model.backbone.output_stride == 16
        assert not any(k.startswith("features.18") for k in target)
    # The head is freshly initialised (not loaded from anywhere).
    assert not any(k.startswith("head.") for k in _backbone_tensors(classifier_checkpoint))


def test_other_backbone_checkpoint_is_refused_with_names(tmp_path, synthetic_dir,
                                                         classifier_checkpoint):
    cfg = compose_config("train", [
        "task=segmentation", "data=synthetic", f"paths.synthetic_dir={synthetic_dir}",
        "backbone=mv2_e2", "backbone.width_mult=0.35", f"backbone.pretrained={classifier_checkpoint}",
    ], tmp_path)
    with pytest.raises(Exception) as info:
        instantiate(cfg.model)
    message = str(info.value)
    assert "cog_e2" in message and "mv2_e2" in message
