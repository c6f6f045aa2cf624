"""Every experiment config (one per thesis result row) composes, instantiates and runs a
fast_dev_run step. Real datasets are not on CI machines, so each runs on `data=synthetic`;
segmentation rows point `backbone.pretrained` at a classifier checkpoint of the same backbone."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from tests.helpers import CONFIG_DIR, compose_config

EXPERIMENTS = sorted(
    str(p.relative_to(Path(CONFIG_DIR) / "experiment").with_suffix(""))
    for p in (Path(CONFIG_DIR) / "experiment").rglob("*.yaml")
)


def test_every_thesis_table_has_experiment_rows():
    rows = [e for e in EXPERIMENTS if e.startswith("thesis/")]
    for table in ("table5_1", "table5_3", "table5_4", "table5_5"):
        assert sum(r.startswith(f"thesis/{table}_") for r in rows) >= 6, table


@pytest.fixture(scope="module")
def classifier_checkpoints(tmp_path_factory):
    """A Lightning-style classification checkpoint per backbone (weights only matter here)."""
    from tasks.classification import ClassificationTask

    out = tmp_path_factory.mktemp("classifiers")
    paths = {}
    for name in ("mv2_e2", "mv2_e4", "mv2_e6", "cog_e2", "cog_e4", "cog_e6"):
        task = ClassificationTask(backbone=name, num_classes=5)
        path = out / f"{name}.ckpt"
        torch.save({"state_dict": task.state_dict(), "hyper_parameters": {"backbone": name}}, path)
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def experiment_data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("experiment_synthetic"))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(experiment, tmp_path, experiment_data_dir, classifier_checkpoints):
    from train import train

    cfg = compose_config("train", [f"experiment={experiment}", "data=synthetic",
                                   f"paths.synthetic_dir={experiment_data_dir}",
                                   "++trainer.fast_dev_run=true"], tmp_path)
    with open_dict(cfg):
        if cfg.backbone.get("pretrained"):
            cfg.backbone.pretrained = str(classifier_checkpoints[cfg.backbone.name])
        # Small synthetic sets: composing and one step per stage is what is checked here.
        gen = cfg.synthetic.generator
        for key, value in (("images_per_class", 8), ("num_train", 8), ("num_test", 4), ("num_val", 4)):
            if key in gen:
                gen[key] = value
        cfg.batch_size = 2
        if cfg.data.get("top_fraction"):
            # Table 5.3 keeps the top 20% of classes: of 10 synthetic classes, 2.
            cfg.synthetic.generator.num_classes = 10
            cfg.data.num_classes = 2
    metrics = train(cfg)
    assert any(k.startswith("test/") for k in metrics), metrics
