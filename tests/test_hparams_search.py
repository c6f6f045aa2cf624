"""Hyperparameter search on Hydra's Optuna sweeper: `train.py -m hparams_search=...` runs every
trial as a normal run, optimises the validation metric train.py returns, writes the best
parameters at the end, and analysis.report lists the trials."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import CONFIG_DIR, compose_config

ROOT = Path(__file__).resolve().parents[1]
SEARCHED = ["backbone.width_mult", "model.optimizer.lr", "model.optimizer.momentum",
            "model.optimizer.weight_decay", "backbone.last_channels", "model.dropout"]


def test_search_configs_compose_with_the_seed_experiments(tmp_path):
    for search, experiment in (("seed003_cifar10_optuna", "seed003/cifar10_mv2_cut12_a090_h1000"),
                               ("seed001_dogs_optuna", "seed001/dogs_cnn")):
        if not (Path(CONFIG_DIR) / "experiment" / f"{experiment}.yaml").is_file():
            continue
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            cfg = compose("train", overrides=[f"hparams_search={search}", f"experiment={experiment}"],
                          return_hydra_config=True)
        assert "OptunaSweeper" in cfg.hydra.sweeper._target_
        assert cfg.hydra.sweeper.direction == "maximize" and cfg.monitor == "val/acc"


@pytest.mark.slow
def test_three_trial_optuna_search_on_the_embedded_data(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "train.py", "-m", "hparams_search=seed003_cifar10_optuna",
        "experiment=seed003/cifar10_mv2_cut12_a090_h1000", "data=synthetic",
        f"paths.synthetic_dir={tmp_path / 'synthetic'}", f"paths.log_dir={tmp_path / 'logs'}",
        "num_workers=0", "trainer.max_epochs=1", "synthetic.generator.images_per_class=8",
        "cpu_ms_per_image=0", "callbacks.progress_bar=null", "++trainer.enable_progress_bar=false",
        "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=3",
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (results_path,) = (tmp_path / "logs").rglob("optimization_results.yaml")
    search = results_path.parent
    results = OmegaConf.load(results_path)
    assert sorted(results.best_params) == sorted(SEARCHED)

    # The best trial named by the WriteBestTrial callback: its folder holds the best value.
    best = OmegaConf.load(search / "best_trial.yaml")
    assert best.value == results.best_value and dict(best.params) == dict(results.best_params)
    best_metrics = json.loads((Path(best.run_folder) / "metrics.json").read_text())["metrics"]
    assert best_metrics["val/acc"] == pytest.approx(best.value) and best.checkpoints

    trials = sorted(p for p in search.iterdir() if p.is_dir())
    assert len(trials) == 3
    values = []
    for trial in trials:  # each trial a normal run: config, checkpoints, metrics
        metrics = json.loads((trial / "metrics.json").read_text())["metrics"]
        assert (trial / "checkpoints" / "last.ckpt").is_file()
        overrides = OmegaConf.load(trial / ".hydra" / "overrides.yaml")
        assert all(any(o.startswith(f"{p}=") for o in overrides) for p in SEARCHED)
        values.append(metrics["val/acc"])
    assert results.best_value == pytest.approx(max(values))

    from analysis.report import build_report

    text = build_report([search]).text
    assert "Hyperparameter search" in text and "(best)" in text
    assert all(p in text for p in SEARCHED)
