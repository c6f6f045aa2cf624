"""What a run guarantees: last.ckpt is the last epoch, run folders never collide, divergence is
reported, checkpoints are saved atomically, the same seed gives the same run, and a resumed run
is the uninterrupted one (docs/reliability.md)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from tests.helpers import compose_config

REPO = Path(__file__).resolve().parents[1]


def tiny(synthetic_dir, *extra: str) -> list[str]:
    return ["task=classification", "data=synthetic", f"paths.synthetic_dir={synthetic_dir}",
            "synthetic.image_size=64", "synthetic.generator.images_per_class=8",
            "synthetic.generator.image_size=72", "batch_size=8", "backbone=mv2_e2",
            "backbone.width_mult=0.35", *extra]


def cli_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "COG_LOG_DIR": str(tmp_path / "logs")}


def run_cli(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------- last.ckpt
@pytest.mark.slow
def test_last_checkpoint_is_the_final_epoch_when_the_metric_never_improves(tmp_path, synthetic_dir):
    """Monitoring `epoch` with mode=min: the best stays epoch 0 (as with a flat metric), which
    with Lightning's save_last left last.ckpt at epoch 0. Also: mid-epoch checkpoints every N steps."""
    from train import train

    train(compose_config("train", tiny(
        synthetic_dir, "trainer.max_epochs=3", "test=false", "logger=csv", "monitor=epoch",
        "callbacks.model_checkpoint.mode=min", "callbacks.mid_epoch_checkpoint.every_n_train_steps=4",
    ), tmp_path))
    folder = tmp_path / "checkpoints"
    assert load(folder / "best_epoch000.ckpt")["epoch"] == 0
    last = load(folder / "last.ckpt")
    assert last["epoch"] == 2
    steps_per_epoch = last["global_step"] // 3
    mid = sorted(folder.glob("mid_epoch_step*.ckpt"))
    assert len(mid) == 1  # only the latest is kept
    mid_state = load(mid[0])
    assert mid_state["global_step"] % 4 == 0 and mid_state["global_step"] > 2 * steps_per_epoch - 4
    assert mid[0].name == f"mid_epoch_step{mid_state['global_step']:07d}.ckpt"
    # last.ckpt carries the best-checkpoint tracking of its epoch.
    best_state = next(v for k, v in last["callbacks"].items() if "'monitor': 'epoch'" in k)
    assert best_state["best_model_path"].endswith("best_epoch000.ckpt")


# --------------------------------------------------------------------------- run folders
# Runs train.py with Hydra's `now` resolver frozen at one second (Hydra registers it in
# setup_globals, imported by name into hydra._internal.hydra).
_FROZEN_CLOCK = """
import runpy, sys
import hydra._internal.hydra as hydra_internal
from omegaconf import OmegaConf
original = hydra_internal.setup_globals
def frozen():
    original()
    OmegaConf.register_new_resolver("now", lambda pattern: "2000-01-01_00-00-00", replace=True)
hydra_internal.setup_globals = frozen
sys.argv = sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.slow
def test_two_runs_started_in_the_same_second_get_their_own_folders(tmp_path, synthetic_dir):
    """Two runs launched together, both seeing the same clock second (frozen, so the test does
    not depend on timing): different folders, and both keep their metrics.json."""
    args = ["train.py", *tiny(synthetic_dir, "trainer.max_epochs=1", "num_workers=0",
                              "logger=csv")]
    procs = [subprocess.Popen([sys.executable, "-c", _FROZEN_CLOCK, *args, f"seed={seed}"],
                              cwd=REPO, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    runs = sorted((tmp_path / "logs" / "classification" / "runs").iterdir())
    assert len(runs) == 2
    assert all(r.name.startswith("2000-01-01_00-00-00_mv2_e2_") for r in runs)
    seeds = set()
    for run in runs:
        payload = json.loads((run / "metrics.json").read_text())
        assert 0.0 <= payload["metrics"]["val/acc"] <= 1.0  # present and a real accuracy
        assert Path(payload["best_checkpoint"]).parent.parent == run  # this run's own result
        assert (run / "checkpoints" / "last.ckpt").is_file()
        seeds.add(load(run / "checkpoints" / "last.ckpt")["cogsuite_config"]["seed"])
    assert seeds == {1, 2}  # each folder holds its own run


def test_run_and_sweep_folders_carry_the_run_id(tmp_path):
    """A multirun's folder is unique too: its jobs are numbered subfolders of a sweep folder
    that carries the process's random run id (like a single run's folder)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cogsuite.run_dirs import run_id
    from tests.helpers import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=[f"paths.log_dir={tmp_path}"], return_hydra_config=True)
    sweep, run = Path(cfg.hydra.sweep.dir), Path(cfg.hydra.run.dir)
    assert sweep.parent == tmp_path / "classification" / "multiruns" and sweep.name.endswith(f"_{run_id()}")
    assert run.parent == tmp_path / "classification" / "runs" and run.name.endswith(f"_cog_e2_{run_id()}")
    from omegaconf import OmegaConf

    with open_dict(cfg):
        cfg.hydra.job.num = 3
    assert cfg.hydra.sweep.subdir == "3_cog_e2"  # <job number>_<backbone>
    assert re.fullmatch(r"[0-9a-f]{8}", run_id()) and run_id() == run_id()


def test_run_folder_of_a_checkpoint():
    from cogsuite.run_dirs import resumed_run_dir

    here = Path(__file__)
    assert resumed_run_dir(None) is None and resumed_run_dir(str(here)) is None  # not in checkpoints/
    assert resumed_run_dir(str(here), train=False) is None


# --------------------------------------------------------------------------- divergence
@pytest.mark.slow
def test_diverging_run_stops_and_says_so(tmp_path, synthetic_dir):
    proc = run_cli(["train.py", *tiny(synthetic_dir, "model.optimizer.lr=1e6", "num_workers=0",
                                      "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'run'}")],
                   tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "· DIVERGED" in proc.stdout and "| DIVERGED" in proc.stdout
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["diverged"] is True
    reason = summary["divergence"]["reason"]
    assert f"at step {summary['divergence']['step']} " in reason
    for cause in ("learning rate too high", "bad input data", "trainer.precision=32-true"):
        assert cause in reason
    assert "nan" in reason or "inf" in reason
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # nothing saved after it


@pytest.mark.slow
def test_skip_mode_drops_nonfinite_steps_and_shows_nan(tmp_path, synthetic_dir, capsys):
    from train import train

    metrics = train(compose_config("train", tiny(
        synthetic_dir, "model.optimizer.lr=1e6", "on_nonfinite_loss=skip", "max_consecutive_skips=3", "max_loss_growth=null",
        "trainer.max_epochs=1", "trainer.log_every_n_steps=1", "logger=csv"), tmp_path))
    assert metrics["diverged"] is True and math.isnan(metrics["train/loss"])
    printed = capsys.readouterr().out
    assert "| train/loss" in printed and "nan |" in printed
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["skipped_nonfinite_steps"] == 3
    assert "after 3 skipped steps in a row" in summary["divergence"]["reason"]


def test_table_shows_nan_and_inf():
    from cogsuite.runtime import format_metrics_table, metrics_to_dict

    metrics = metrics_to_dict({"val/loss": torch.tensor(float("nan")), "test/loss": float("inf"),
                               "val/acc": 0.5})
    table = format_metrics_table(metrics)
    assert "nan |" in table and "inf |" in table and "0.5 |" in table


# --------------------------------------------------------------------------- atomic saving
def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from cogsuite.checkpoint_io import AtomicCheckpointIO, CheckpointSaveError

    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.arange(4.0)}, target)
    real_save = torch.save

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the disk, then it is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointSaveError, match=r"could not save checkpoint .*last.ckpt: No space "
                                                  r"left on device.*previous last.ckpt is unchanged"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(4)}, target)
    monkeypatch.setattr(torch, "save", real_save)
    kept = load(target)
    assert kept["epoch"] == 1 and torch.equal(kept["w"], torch.arange(4.0))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temporary left


@pytest.mark.slow
def test_disk_full_during_training_is_one_clear_error(tmp_path, synthetic_dir, monkeypatch):
    from cogsuite.checkpoint_io import CheckpointSaveError
    from train import train

    cfg = compose_config("train", tiny(synthetic_dir, "trainer.max_epochs=2", "test=false",
                                       "logger=csv"), tmp_path)
    real_save = torch.save
    calls = {"n": 0}

    def fails_in_second_epoch(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 1:
            handle.write(b"PK\x03\x04 partial")
            raise OSError(28, "No space left on device")
        calls["n"] += 1
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fails_in_second_epoch)
    with pytest.raises(CheckpointSaveError, match="No space left on device"):
        train(cfg)
    monkeypatch.setattr(torch, "save", real_save)
    assert calls["n"] >= 2  # epoch 0's best and last were written
    assert load(tmp_path / "checkpoints" / "last.ckpt")["epoch"] == 0
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


# --------------------------------------------------------------------------- reproducibility
def _train_weights(tmp_path: Path, synthetic_dir, name: str, num_workers: int, *extra: str) -> dict:
    from train import train

    cfg = compose_config("train", tiny(synthetic_dir, "trainer.max_epochs=2", "test=false",
                                       "logger=csv", *extra), tmp_path / name)
    with open_dict(cfg):
        cfg.num_workers = num_workers  # compose_config sets 0
    assert cfg.data.num_workers == num_workers
    metrics = train(cfg)
    return {"metrics": metrics, "state": load(tmp_path / name / "checkpoints" / "last.ckpt")["state_dict"]}


@pytest.mark.slow
def test_same_seed_is_bit_identical_for_0_and_2_workers(tmp_path, synthetic_dir):
    """Two epochs with augmentation and dropout: identical weights and metrics with 0 or 2
    data-loading workers; another seed gives other weights (the check can fail)."""
    first = _train_weights(tmp_path, synthetic_dir, "w0a", 0)
    again = _train_weights(tmp_path, synthetic_dir, "w0b", 0)
    workers = _train_weights(tmp_path, synthetic_dir, "w2", 2)
    assert_same_weights(first["state"], again["state"])
    assert_same_weights(first["state"], workers["state"])
    for key in ("train/loss", "val/loss", "val/acc"):
        assert first["metrics"][key] == again["metrics"][key] == workers["metrics"][key], key
    other = _train_weights(tmp_path, synthetic_dir, "seed7", 0, "seed=7")
    assert not torch.equal(first["state"]["head.fc.weight"], other["state"]["head.fc.weight"])


def test_augmentation_follows_seed_epoch_and_index_only():
    from data import loaders
    from data.transforms import classification_train_transform

    class Images(torch.utils.data.Dataset):
        transform = classification_train_transform(32)

        def __len__(self):
            return 4

        def __getitem__(self, index):
            import numpy as np

            image = (np.arange(48 * 48 * 3) % 251).astype("uint8").reshape(48, 48, 3)
            return self.transform(image=image)["image"]

    wrapped = loaders.SeededAugmentation(Images(), seed=3)
    assert torch.equal(wrapped[(2, 5)], wrapped[(2, 5)])  # same (index, epoch): same crop
    torch.manual_seed(123)  # global state has no say
    assert torch.equal(wrapped[(2, 5)], loaders.SeededAugmentation(Images(), seed=3)[(2, 5)])
    assert not torch.equal(wrapped[(2, 5)], wrapped[(2, 6)])  # next epoch: another crop
    assert not torch.equal(wrapped[(2, 5)], loaders.SeededAugmentation(Images(), seed=4)[(2, 5)])
    sampler = loaders.EpochShuffleSampler(range(10), seed=3)
    sampler.set_epoch(1)
    order = list(sampler)
    assert order == list(sampler) and {e for _, e in order} == {1}
    sampler.set_epoch(2)
    assert [i for i, _ in order] != [i for i, _ in sampler]


def _train_one_run(overrides: list[str], tmp_path: Path) -> Path:
    """Trains through the command line; returns the run folder (the only one under logs/)."""
    whole = run_cli(["train.py", *overrides], tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "classification" / "runs").iterdir()
    return run


@pytest.mark.slow
def test_resumed_run_is_the_uninterrupted_run_in_the_same_folder(tmp_path, synthetic_dir):
    """A 2-epoch run keeps every epoch-end checkpoint (those that make last.ckpt: the
    last_checkpoint callback with save_top_k=-1). Resuming from its epoch-0 one, as after a crash
    during epoch 1, gives epoch 1 again bit for bit (num_workers=2), logs into the same folder
    (metrics.csv keeps its rows) and continues the best-checkpoint tracking."""
    common = tiny(synthetic_dir, "num_workers=2", "logger=csv", "test=false", "trainer.max_epochs=2",
                  "callbacks.last_checkpoint.save_top_k=-1", "callbacks.last_checkpoint.filename='epoch{epoch}'",
                  "+callbacks.last_checkpoint.auto_insert_metric_name=false")
    run = _train_one_run(common, tmp_path)
    folder = run / "checkpoints"
    reference = load(folder / "epoch1.ckpt")
    (folder / "epoch1.ckpt").unlink()  # the crash: epoch 1 never finished
    reference_metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    (run / "metrics.json").unlink()  # a crashed run never wrote it (a finished run resumes elsewhere)
    csv_before = (run / "csv" / "metrics.csv").read_text().splitlines()

    resumed = run_cli(["train.py", *common, f"ckpt_path={folder / 'epoch0.ckpt'}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert list((tmp_path / "logs" / "classification" / "runs").iterdir()) == [run]  # same folder

    again = load(folder / "epoch1.ckpt")
    assert again["epoch"] == reference["epoch"] == 1
    assert again["global_step"] == reference["global_step"]
    assert_same_weights(reference["state_dict"], again["state_dict"])
    assert again["optimizer_states"][0]["state"][0]["exp_avg"].equal(
        reference["optimizer_states"][0]["state"][0]["exp_avg"])
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    for key in ("train/loss", "val/loss", "val/acc", "best_checkpoint_score_test_selected"):
        assert metrics[key] == reference_metrics[key], key

    def best_state(checkpoint):
        return next(v for k, v in checkpoint["callbacks"].items() if "'monitor': 'val/acc'" in k)

    assert best_state(again)["best_model_path"] == best_state(reference)["best_model_path"]
    assert best_state(again)["best_model_score"] == best_state(reference)["best_model_score"]
    csv_after = (run / "csv" / "metrics.csv").read_text().splitlines()
    assert csv_after[:len(csv_before)] == csv_before and len(csv_after) > len(csv_before)
    assert (run / ".hydra" / "config.yaml").is_file()  # the first invocation's config stays
    assert len(list((run / ".hydra").glob("resume_*/config.yaml"))) == 1


@pytest.mark.slow
def test_resume_from_a_mid_epoch_checkpoint_is_the_uninterrupted_run(tmp_path, synthetic_dir):
    """Mid-epoch checkpoints every 3 steps of a 2 x 7-step run (dropout, 2 workers). Resuming
    from step 3 (epoch 0, batch 3) and from step 9 (epoch 1, batch 2) skips the batches already
    trained and restores the generators: the final weights equal the uninterrupted run's bit for
    bit. (Lightning alone restarts such an epoch from its first batch: weights 0.49 apart.)"""
    common = tiny(synthetic_dir, "num_workers=2", "logger=csv", "test=false", "trainer.max_epochs=2",
                  "callbacks.mid_epoch_checkpoint.every_n_train_steps=3",
                  "callbacks.mid_epoch_checkpoint.save_top_k=-1")
    folder = _train_one_run(common, tmp_path) / "checkpoints"
    reference = load(folder / "last.ckpt")
    assert reference["global_step"] == 14
    saved = tmp_path / "saved"
    saved.mkdir()
    for step in (3, 9):
        (folder / f"mid_epoch_step{step:07d}.ckpt").rename(saved / f"step{step}.ckpt")
    for step, epoch, done in ((3, 0, 3), (9, 1, 2)):
        state = next(v for k, v in load(saved / f"step{step}.ckpt")["callbacks"].items()
                     if "EpochSeedCallback" in k)
        assert (state["epoch"], state["batches_done"]) == (epoch, done)
        (folder / "last.ckpt").unlink()
        # The checkpoint is back in its run folder, as after a kill: the resume continues there.
        checkpoint = folder / f"mid_epoch_step{step:07d}.ckpt"
        checkpoint.write_bytes((saved / f"step{step}.ckpt").read_bytes())
        (folder.parent / "metrics.json").unlink()  # the run did not finish
        resumed = run_cli(["train.py", *common, f"ckpt_path={checkpoint}"], tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "not resumable" not in resumed.stderr
        again = load(folder / "last.ckpt")
        assert again["global_step"] == reference["global_step"]
        assert_same_weights(reference["state_dict"], again["state_dict"])
