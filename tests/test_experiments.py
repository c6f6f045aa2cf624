"""Every experiment config (one per thesis result row) composes, instantiates and runs a
fast_dev_run step. Real datasets are not on CI machines, so each runs on `data=synthetic`;
segmentation rows point `backbone.pretrained` at a classifier checkpoint of the same backbone."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from tests.helpers import CONFIG_DIR, compose_config

EXPERIMENTS = sorted(
    str(p.relative_to(Path(CONFIG_DIR) / "experiment").with_suffix(""))
    for p in (Path(CONFIG_DIR) / "experiment").rglob("*.yaml")
)


def test_every_thesis_table_has_experiment_rows():
    rows = [e for e in EXPERIMENTS if e.startswith("thesis/")]
    expected = {"table4_1": 6, "table4_2": 24, "table5_1": 18, "table5_3": 6, "table5_4": 6, "table5_5": 6}
    for table, count in expected.items():
        assert sum(r.startswith(f"thesis/{table}_") for r in rows) == count, table


def parameters_of(experiment: str, tmp_path) -> int:
    from hydra.utils import instantiate

    cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
    return sum(p.numel() for p in instantiate(cfg.model).parameters())


# Thesis Tables 4.1 and 4.2 on Flowers (5 classes): the rows' models, built from their configs.
@pytest.mark.parametrize("experiment,params", [
    ("thesis/table4_1_flowers_cog_e2_overlap1", 900_933),
    ("thesis/table4_1_flowers_cog_e4_overlap1", 1_377_925),
    ("thesis/table4_1_flowers_cog_e6_overlap1", 1_854_917),
    ("thesis/table4_1_flowers_cog_e2_overlap2", 963_845),
    ("thesis/table4_1_flowers_cog_e4_overlap2", 1_503_493),
    ("thesis/table4_1_flowers_cog_e6_overlap2", 2_043_141),
    ("thesis/table4_2_flowers_mv2_e2_no_expand", 1_025_669),
    ("thesis/table4_2_flowers_mv2_e2_expand", 1_026_757),
    ("thesis/table4_2_flowers_mv2_e4_no_expand", 1_627_973),
    ("thesis/table4_2_flowers_mv2_e4_expand", 1_629_061),
    ("thesis/table4_2_flowers_mv2_e6_no_expand", 2_230_277),
    ("thesis/table4_2_flowers_mv2_e6_expand", 2_231_365),
    ("thesis/table4_2_flowers_cog_e2_no_expand", 900_357),
    ("thesis/table4_2_flowers_cog_e2_expand", 900_933),
    ("thesis/table4_2_flowers_cog_e4_no_expand", 1_377_349),
    ("thesis/table4_2_flowers_cog_e4_expand", 1_377_925),
    ("thesis/table4_2_flowers_cog_e6_no_expand", 1_854_341),
    ("thesis/table4_2_flowers_cog_e6_expand", 1_854_917),
])
def test_table_4_rows_build_the_thesis_models(experiment, params, tmp_path):
    assert parameters_of(experiment, tmp_path) == params


def test_every_experiment_composes_and_builds_its_model(tmp_path):
    from hydra.utils import instantiate

    for experiment in EXPERIMENTS:
        cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
        with open_dict(cfg):
            cfg.backbone.pretrained = None  # Table 5.5 rows chain to classifier checkpoints
        assert instantiate(cfg.model).backbone.name == cfg.backbone.name, experiment


def representative(experiments: list[str]) -> list[str]:
    """One fast_dev_run per table and dataset of each source folder (thesis/, gpcmobilenet/, ...;
    the other rows of a table differ only in the backbone, which
    test_every_experiment_composes_and_builds_its_model and the backbone tests cover), plus every
    experiment that is not a table row (the top-level recipes)."""
    from backbones import list_backbones

    names = sorted(list_backbones(), key=len, reverse=True)  # longest first: gpc_mobilenet_16 before ...
    chosen, seen = [], set()
    for experiment in experiments:
        if "/" not in experiment:
            chosen.append(experiment)
            continue
        table_and_data = next((experiment[:experiment.index(f"_{n}")] for n in names if f"_{n}" in experiment),
                              experiment)
        if table_and_data not in seen:
            seen.add(table_and_data)
            chosen.append(experiment)
    return chosen


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
@pytest.mark.parametrize("experiment", representative(EXPERIMENTS))
def test_experiment_fast_dev_run(experiment, tmp_path, experiment_data_dir, classifier_checkpoints):
    from train import train

    cfg = compose_config("train", [f"experiment={experiment}", "data=synthetic",
                                   f"paths.synthetic_dir={experiment_data_dir}",
                                   "++trainer.fast_dev_run=true"], tmp_path)
    with open_dict(cfg):
        if OmegaConf.to_container(cfg.backbone, resolve=False).get("pretrained"):
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


def test_table_rows_get_unique_run_folders_and_table_5_5_finds_the_newest_classifier(tmp_path, caplog):
    """A table row's runs share its folder but never a run folder; Table 5.5 starts from the
    newest finished Table 5.1 Caltech-256 run of its backbone, or says which run to train first."""
    import json
    import os
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from errors import SuiteFileNotFoundError
    from cogsuite.run_dirs import run_id

    def composed(experiment: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            return compose("train", overrides=[f"experiment={experiment}", f"paths.log_dir={tmp_path}"],
                           return_hydra_config=True)

    run = Path(composed("thesis/table5_1_caltech256_cog_e2").hydra.run.dir)
    assert run.parent == tmp_path / "thesis" / "table5_1" / "caltech256_cog_e2"
    assert run.name.endswith(f"_cog_e2_{run_id()}")

    from backbones import create_backbone, load_backbone_weights
    from backbones.pretrained import checkpoint_in

    table5_5 = composed("thesis/table5_5_voc2012_cog_e2")
    folder = tmp_path / "thesis" / "table5_1" / "caltech256_cog_e2"
    assert Path(table5_5.backbone.pretrained) == folder
    with pytest.raises(SuiteFileNotFoundError, match=r"not found: .*caltech256_cog_e2 is neither.*Table 5.1"):
        load_backbone_weights(create_backbone("cog_e2"), table5_5.backbone.pretrained)
    folder.mkdir(parents=True)
    with pytest.raises(SuiteFileNotFoundError, match=r"no finished run under .*caltech256_cog_e2.*Table 5.1"):
        load_backbone_weights(create_backbone("cog_e2"), table5_5.backbone.pretrained)
    # Finished (metrics.json) 100 s ago and now; a diverged one and one still training are newer.
    for age, name, summary in ((100, "2026-01-01_00-00-00_cog_e2_aaaaaaaa", {"diverged": False}),
                               (10, "2026-02-01_00-00-00_cog_e2_bbbbbbbb", {"diverged": False}),
                               (0, "2026-02-02_00-00-00_cog_e2_dddddddd", {"diverged": True}),
                               (0, "2026-03-01_00-00-00_cog_e2_cccccccc", None)):
        ckpt = folder / name / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"")
        if summary is not None:
            (folder / name / "metrics.json").write_text(json.dumps(summary))
            os.utime(folder / name / "metrics.json", (ckpt.stat().st_mtime - age,) * 2)
    newest = folder / "2026-02-01_00-00-00_cog_e2_bbbbbbbb"
    with caplog.at_level("INFO", logger="backbones"):
        assert checkpoint_in(folder) == newest / "checkpoints" / "last.ckpt"  # a folder of runs
    assert f"loading the newest finished run {newest.name} (2 unfinished or diverged run(s) there skipped)" in caplog.text
    assert checkpoint_in(newest) == newest / "checkpoints" / "last.ckpt"  # a run folder
