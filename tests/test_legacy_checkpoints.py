"""Checkpoints written before issue 19's refactor (tests/fixtures/legacy_checkpoints, made with
that version's train.py) still load, evaluate, resume and export: old target names map through
cogsuite.legacy_names, the allowlists come from the task and datamodule registries."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from tests.helpers import FIXTURES, compose_config

LEGACY = FIXTURES / "legacy_checkpoints"
NAMES = ("classification", "cifar10_synthetic", "cifar10", "detection", "segmentation")


def _maker():
    """The script that wrote the fixtures: its overrides rebuild the same runs for resuming."""
    spec = importlib.util.spec_from_file_location("make_legacy", LEGACY / "make_legacy_checkpoints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_legacy_checkpoint_builds_its_model_with_its_weights(name):
    from cogsuite.suite_checkpoint import build_task, read_suite_checkpoint

    path = LEGACY / f"{name}.pt"
    checkpoint = read_suite_checkpoint(path)
    model = build_task(checkpoint, path).eval()
    stored = torch.load(path, weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, stored[key]), key
    size = checkpoint["cogsuite_config"]["data"]["image_size"]
    with torch.no_grad():
        output = model(torch.zeros(1, 3, size, size))
    assert output is not None


def _copy(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True)
    return Path(shutil.copy(LEGACY / f"{name}.pt", folder / "last.ckpt"))


def _data_overrides(name: str, tmp_path: Path) -> list[str]:
    """Where the evaluation reads its (regenerated) data: the stored roots are gone."""
    if name != "cifar10":
        return [f"paths.synthetic_dir={tmp_path / 'synthetic'}"]
    from data.synthetic import write_cifar10

    write_cifar10(tmp_path / "cifar", images_per_class=2, test_images_per_class=1, image_size=32)
    return [f"+data.root={tmp_path / 'cifar'}"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_legacy_checkpoint_evaluates(name, tmp_path):
    from cogsuite.evaluation import evaluate

    ckpt = _copy(name, tmp_path / "run")
    cfg = compose_config("eval", [f"ckpt_path={ckpt}", *_data_overrides(name, tmp_path)],
                         tmp_path / "eval")
    metrics = evaluate(cfg)
    assert any(key.startswith("test/") for key in metrics), metrics
    assert Path(str(ckpt) + ".eval.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cifar10"])  # the checkpoint the old allowlist refused
def test_legacy_checkpoint_resumes(name, tmp_path):
    from train import train

    maker = _maker()
    ckpt = _copy(name, tmp_path / "run")
    runs = dict(maker.RUNS)
    runs["cifar10"] = ["task=classification", "data=cifar10", "image_size=32",
                       "data.verify_checksums=false", f"data.root={tmp_path / 'cifar'}"]
    _data_overrides(name, tmp_path)
    overrides = [*maker.TINY, *runs[name], *maker.WIDTH]
    cfg = compose_config("train", [*overrides, "trainer.max_epochs=2", f"ckpt_path={ckpt}"],
                         tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.synthetic_dir = str(tmp_path / "synthetic")
    metrics = train(cfg)
    assert not metrics.get("diverged")
    resumed = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 2  # the legacy run's step, then one more
    assert resumed["cogsuite"]["class_path"] == torch.load(ckpt, weights_only=False)["cogsuite"]["class_path"]
