"""Checkpoints cannot act, broken checkpoints are named as such, and bad input is one line.

Crafted checkpoints (a real checkpoint of a tiny run, edited) try to make every entry point
that reads a checkpoint (eval, per-class analysis, export, resume, backbone transfer) call
``builtins.open(path, "w")`` on a file; each must refuse with a CheckpointError and leave the
file as it was.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from errors import CheckpointError, ConfigError, ConfigTypeError, SuiteError
from tests.helpers import compose_config

REPO = Path(__file__).resolve().parents[1]
VICTIM_TEXT = "precious data\n"


def tiny(synthetic_dir, *extra: str) -> list[str]:
    return ["task=classification", "data=synthetic", f"paths.synthetic_dir={synthetic_dir}",
            "synthetic.image_size=64", "synthetic.generator.images_per_class=8",
            "synthetic.generator.image_size=72", "batch_size=8", "backbone=mv2_e2",
            "backbone.width_mult=0.35", *extra]


def run_cli(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "COG_LOG_DIR": str(tmp_path / "logs")}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """last.ckpt of a 1-epoch run of a tiny classifier."""
    from train import train

    root = tmp_path_factory.mktemp("trained")
    train(compose_config("train", tiny(root / "data", "trainer.max_epochs=1", "test=false",
                                       "logger=csv"), root / "run"))
    return root / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


def craft(source: Path, target: Path, edit) -> Path:
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target


def _open_victim(victim: Path) -> dict:
    return {"_target_": "builtins.open", "_args_": [str(victim), "w"]}


def attacks(victim: Path) -> dict:
    """Ways a checkpoint could name a callable; each must be refused."""
    def data_target(c):
        c["cogsuite_config"]["data"] = _open_victim(victim)

    def nested_in_data(c):
        c["cogsuite_config"]["data"]["generator"] = _open_victim(victim)

    def elsewhere_in_config(c):
        c["cogsuite_config"]["paths"]["extra"] = [_open_victim(victim)]

    def callback_section(c):
        c["cogsuite_config"]["callbacks"]["model_checkpoint"] = _open_victim(victim)

    def in_hyper_parameters(c):
        c["hyper_parameters"]["optimizer"] = _open_victim(victim)

    def class_path(c):
        c["cogsuite"]["class_path"] = "builtins.open"

    def model_target(c):
        c["cogsuite_config"]["model"]["_target_"] = "builtins.open"

    return {f.__name__: f for f in (data_target, nested_in_data, elsewhere_in_config,
                                    callback_section, in_hyper_parameters, class_path,
                                    model_target)}


ATTACKS = ["data_target", "nested_in_data", "elsewhere_in_config", "callback_section",
           "in_hyper_parameters", "class_path", "model_target"]


@pytest.mark.slow
@pytest.mark.parametrize("attack", ATTACKS)
def test_crafted_checkpoint_cannot_act_in_any_entry_point(attack, trained, victim, tmp_path):
    from analysis import per_class
    from deploy import export
    from eval import evaluate
    from train import train

    path = craft(trained, tmp_path / f"{attack}.ckpt", attacks(victim)[attack])
    entry_points = {
        "eval": lambda: evaluate(compose_config("eval", [f"ckpt_path={path}"], tmp_path / "eval")),
        "per_class": lambda: per_class.training_class_counts(
            per_class.eval_config(path, [], tmp_path / "per_class")),
        "export": lambda: export.load_checkpoint_model(path),
        "resume": lambda: train(compose_config("train", tiny(
            trained.parents[2] / "data", "trainer.max_epochs=2", f"ckpt_path={path}",
            "logger=csv"), tmp_path / "resume")),
    }
    for name, run in entry_points.items():
        with pytest.raises(CheckpointError, match="refusing checkpoint") as info:
            run()
        assert victim.read_text() == VICTIM_TEXT, name
        assert str(path) in str(info.value), name


def test_transfer_reads_only_tensors_from_a_crafted_checkpoint(trained, victim, tmp_path):
    """backbone.pretrained never looks at the stored config: it takes the backbone tensors."""
    from backbones import create_backbone, load_backbone_weights

    path = craft(trained, tmp_path / "crafted.ckpt", attacks(victim)["data_target"])
    report = load_backbone_weights(create_backbone("mv2_e2", width_mult=0.35), path)
    assert report.loaded > 100 and victim.read_text() == VICTIM_TEXT


@pytest.mark.slow
def test_cli_refuses_crafted_checkpoint_in_one_line(trained, victim, tmp_path):
    path = craft(trained, tmp_path / "crafted.ckpt", attacks(victim)["data_target"])
    proc = run_cli(["eval.py", f"ckpt_path={path}", "num_workers=0"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert last_line(proc.stderr).startswith("error: refusing checkpoint")
    assert victim.read_text() == VICTIM_TEXT


# --------------------------------------------------------------------------- broken files
def test_random_bytes_truncated_and_empty_files_are_named_as_such(trained, tmp_path):
    from eval import read_suite_checkpoint

    random_bytes = tmp_path / "random.ckpt"
    # Seeded, and not starting with a pickle or zip header (1 in 256 random files would).
    random_bytes.write_bytes(b"RND" + random.Random(0).randbytes(4093))
    truncated = tmp_path / "truncated.ckpt"
    data = trained.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for path, expected in ((random_bytes, "is not a PyTorch checkpoint"),
                           (truncated, "is truncated or corrupt"), (empty, "is empty")):
        with pytest.raises(CheckpointError, match=expected) as info:
            read_suite_checkpoint(path)
        assert "would run code" not in str(info.value)
    with pytest.raises(SuiteError, match="not found"):
        read_suite_checkpoint(tmp_path / "missing.ckpt")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_only_a_pickle_that_would_run_code_is_called_unsafe(tmp_path):
    from eval import read_suite_checkpoint

    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="would run code.*os.makedirs|would run code.*makedirs"):
        read_suite_checkpoint(path)
    assert not marker.exists()


@pytest.mark.slow
def test_resume_with_another_architecture_or_truncated_checkpoint(trained, tmp_path):
    from train import train

    data = trained.parents[2] / "data"
    with pytest.raises(CheckpointError, match=r"(?s)backbone 'mv2_e2'.*does not fit.*backbone=mv2_e2"):
        train(compose_config("train", tiny(data, "backbone=cog_e2", "backbone.width_mult=0.35",
                                           f"ckpt_path={trained}", "trainer.max_epochs=2"),
                             tmp_path / "other_arch"))
    with pytest.raises(CheckpointError, match="classification checkpoint but this run trains segmentation"):
        train(compose_config("train", [
            "task=segmentation", "data=synthetic", f"paths.synthetic_dir={data}",
            "synthetic.image_size=64", "synthetic.generator.num_train=4", "synthetic.generator.num_val=2",
            "synthetic.generator.image_size=64", "backbone=mv2_e2",
            "backbone.width_mult=0.35", f"ckpt_path={trained}"], tmp_path / "other_task"))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(trained.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        train(compose_config("train", tiny(data, f"ckpt_path={truncated}", "trainer.max_epochs=2"),
                             tmp_path / "truncated"))


@pytest.mark.slow  # the in-process test above checks the error; this adds the CLI's one line
def test_resume_error_is_one_line_on_the_command_line(trained, tmp_path):
    truncated = tmp_path / "checkpoints" / "last.ckpt"
    truncated.parent.mkdir()
    truncated.write_bytes(trained.read_bytes()[:100_000])
    proc = run_cli(["train.py", *tiny(trained.parents[2] / "data", f"ckpt_path={truncated}",
                                      "num_workers=0")], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last_line(proc.stderr).startswith(f"error: checkpoint {truncated} is truncated")


# --------------------------------------------------------------------------- eval command line
@pytest.mark.slow
def test_eval_without_checkpoint_is_one_line(tmp_path):
    proc = run_cli(["eval.py"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last_line(proc.stderr) == ("error: no checkpoint given: python eval.py "
                                      "ckpt_path=logs/<task>/runs/<run>/checkpoints/last.ckpt")


def test_eval_honours_a_new_data_dir(trained, tmp_path):
    """The checkpoint stores absolute data roots; paths.data_dir=NEW moves them under NEW."""
    from eval import evaluate

    old = tmp_path / "old"
    shutil.copytree(trained.parents[2] / "data", old / "synthetic")
    checkpoint = torch.load(trained, map_location="cpu", weights_only=True)
    config = checkpoint["cogsuite_config"]
    config["paths"]["data_dir"] = str(old)
    config["paths"]["synthetic_dir"] = str(old / "synthetic")
    config["data"]["root"] = str(old / "synthetic")
    moved_ckpt = tmp_path / "moved.ckpt"
    torch.save(checkpoint, moved_ckpt)
    before = evaluate(compose_config("eval", [f"ckpt_path={moved_ckpt}"], tmp_path / "e1"))
    new = tmp_path / "new"
    shutil.move(old, new)
    after = evaluate(compose_config("eval", [f"ckpt_path={moved_ckpt}", f"paths.data_dir={new}"],
                                    tmp_path / "e2"))
    assert not old.exists()  # nothing was read (or regenerated) at the stored root
    assert after["test/acc"] == before["test/acc"] and after["test/loss"] == before["test/loss"]


def test_rebase_data_paths_moves_only_paths_under_the_old_roots():
    from cogsuite.suite_checkpoint import rebase_data_paths

    data = {"root": "/old/data/synthetic/x", "layout": "imagefolder", "roots": ["/old/data/voc"],
            "other": "/elsewhere/data", "prefix_only": "/old/database"}
    moved = rebase_data_paths(data, [("/old/data", "/new"), ("/old/data/synthetic", "/syn")])
    assert moved == {"root": "/syn/x", "layout": "imagefolder", "roots": ["/new/voc"],
                     "other": "/elsewhere/data", "prefix_only": "/old/database"}


# --------------------------------------------------------------------------- user errors
@pytest.mark.slow
def test_data_num_classes_null_follows_the_dataset(tmp_path):
    """The error for a wrong data.num_classes advises data.num_classes=null; that must work."""
    from data import synthetic
    from train import train

    folder = tmp_path / "images"
    synthetic.write_image_folder(folder, num_classes=3, images_per_class=6, image_size=72)
    metrics = train(compose_config("train", [
        "task=classification", "data=flowers", f"data.root={folder}", "data.layout=imagefolder",
        "data.num_classes=null", "image_size=64", "backbone=mv2_e2", "backbone.width_mult=0.35",
        "batch_size=4", "trainer.max_epochs=1", "test=false", "logger=csv"], tmp_path / "run"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["state_dict"]["head.fc.weight"].shape[0] == 3
    assert "val/acc" in metrics


def test_bad_input_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    from tasks.classification import ClassificationTask
    from cogsuite.runtime import exit_on_user_error
    from train import train

    cfg = compose_config("train", tiny(tmp_path / "data", "model.optimizer.name=adamx",
                                       "trainer.max_epochs=1", "logger=csv"), tmp_path / "a")
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(train)(cfg)
    assert info.value.code == 2

    def broken_step(self, batch, batch_idx):
        raise ValueError("a bug inside training")

    monkeypatch.setattr(ClassificationTask, "training_step", broken_step)
    cfg = compose_config("train", tiny(tmp_path / "data", "trainer.max_epochs=1", "logger=csv"),
                         tmp_path / "b")
    with pytest.raises(ValueError, match="a bug inside training"):  # not SystemExit
        exit_on_user_error(train)(cfg)


@pytest.mark.slow
def test_user_error_exit_status_and_one_line_on_the_command_line(tmp_path):
    proc = run_cli(["train.py", *tiny(tmp_path / "data", "model.optimizer.name=adamx",
                                      "num_workers=0", "trainer.max_epochs=1")], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last_line(proc.stderr) == "error: unknown optimizer 'adamx'; valid: adamw, adam, sgd, rmsprop"


@pytest.mark.slow  # Hydra's own behaviour; checked once per release
def test_hydra_config_errors_stay_short(tmp_path):
    proc = run_cli(["train.py", "trainer.max_epoch=3"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "max_epoch" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 8


@pytest.mark.slow
def test_unknown_config_key_for_a_component_lists_valid_keys(tmp_path):
    from train import train

    cfg = compose_config("train", tiny(tmp_path / "data", "+model.dropuot=0.1"), tmp_path)
    with pytest.raises(ConfigTypeError,
                       match=r"model: .*unexpected keyword argument 'dropuot'.*valid keys: .*dropout"):
        train(cfg)


@pytest.mark.slow
def test_unwritable_log_folder_or_a_path_through_a_file(tmp_path, monkeypatch):
    from cogsuite.run_dirs import check_writable_folder

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run_cli(["train.py", "data=synthetic", f"paths.log_dir={blocker}/logs"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"{blocker} is a file, not a folder" in last_line(proc.stderr)

    # Permissions (root ignores them, so the OS answer is simulated).
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked)
    with pytest.raises(ConfigError, match=f"no write permission in {locked}"):
        check_writable_folder(locked / "logs" / "run")
    check_writable_folder(tmp_path / "fine" / "run")


def test_read_only_data_folder_names_the_path(tmp_path, monkeypatch):
    from data import synthetic

    real_mkdir = Path.mkdir

    def denied(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied")  # as some file systems report it: no path
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(SuiteError, match=f"cannot write the synthetic dataset to '{tmp_path / 'ro'}"
                                         ".*Permission denied.*paths.synthetic_dir") as info:
        synthetic.write_image_folder(tmp_path / "ro" / "classification", num_classes=2,
                                     images_per_class=2, image_size=64)
    assert isinstance(info.value, OSError)
