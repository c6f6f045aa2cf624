"""Outputs that cannot be written are one line that names the place and what to do: a full disk
while saving a checkpoint (through torch's real zip writer), eval.py next to a read-only
checkpoint, the report in a read-only logs folder or onto an existing file."""
from __future__ import annotations

import errno
import os
import io
import json
from pathlib import Path

import pytest
import torch

import cogsuite.checkpoint_io as checkpoint_io
from cogsuite.checkpoint_io import AtomicCheckpointIO, CheckpointSaveError


class _FillingDisk(io.RawIOBase):
    """A file that accepts ``room`` bytes and then fails as a full disk does (ENOSPC)."""

    def __init__(self, real, room: int) -> None:
        self.real, self.room = real, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()
        super().close()


def test_disk_full_inside_torchs_zip_writer_is_one_clear_error(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "last.ckpt"
    saver = AtomicCheckpointIO()
    saver.save_checkpoint({"epoch": 0, "w": torch.arange(4.0)}, target)
    real_open = open
    monkeypatch.setattr(checkpoint_io, "open", lambda path, mode: _FillingDisk(real_open(path, mode), 5000),
                        raising=False)
    with pytest.raises(CheckpointSaveError, match=r"could not save checkpoint .*last.ckpt: No space left on "
                                                  r"device \(OSError\); the previous last.ckpt is unchanged") as error:
        saver.save_checkpoint({"epoch": 1, "w": torch.zeros(10_000)}, target)
    # torch reports the failed write as a RuntimeError raised while handling the OSError.
    assert isinstance(error.value.__cause__, RuntimeError)
    assert "\n" not in str(error.value)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["epoch"] == 0
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_a_runtime_error_that_is_not_a_write_failure_keeps_its_traceback(tmp_path, monkeypatch):
    def broken_save(obj, handle, *args, **kwargs):
        raise RuntimeError("a bug in serialisation")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="a bug in serialisation"):
        AtomicCheckpointIO().save_checkpoint({"epoch": 0}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- analysis.report
def _one_finished_run(root):
    from tests.test_report import make_run

    for seed in (1, 2):
        make_run(root / f"mv2_{seed}", "mv2_e2", seed, {"test/acc": 0.5 + seed / 100})
        make_run(root / f"cog_{seed}", "cog_e2", seed, {"test/acc": 0.6 + seed / 100})


def test_report_in_a_read_only_logs_folder_goes_to_the_working_folder(tmp_path, monkeypatch, capsys):
    import cogsuite.output_paths as output_paths
    from analysis.report import main

    logs = tmp_path / "logs"
    _one_finished_run(logs)
    real_access = os.access
    # A read-only mount: no write permission anywhere under logs/ (chmod would not stop root).
    monkeypatch.setattr(output_paths.os, "access",
                        lambda path, mode: False if str(path).startswith(str(logs)) else real_access(path, mode))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    main([str(logs), "--no-structure", "--no-plot"])
    out = capsys.readouterr().out
    assert f"writing the report to {tmp_path / 'elsewhere' / 'report'}" in out
    assert (tmp_path / "elsewhere" / "report" / "report.md").is_file()
    assert not (logs / "report").exists()


def test_report_out_naming_a_file_or_unwritable_place_is_one_line(tmp_path, capsys):
    from analysis.report import main

    _one_finished_run(tmp_path / "logs")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "logs"), "--no-structure", "--no-plot", "--out", str(tmp_path / "notes.txt")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --out {tmp_path / 'notes.txt'} is an existing file; the report is a folder of "
                   "files: name a folder (new or existing) instead")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit):
        main([str(tmp_path / "logs"), "--no-structure", "--no-plot", "--out", str(tmp_path / "notes.txt" / "sub")])
    assert "is a file, not a folder; name a writable folder with --out" in capsys.readouterr().err


# --------------------------------------------------------------------------- eval.py
@pytest.mark.slow
def test_eval_next_to_a_read_only_checkpoint_writes_to_its_log_folder_and_says_so(tmp_path, monkeypatch, capsys):
    import shutil

    import cogsuite.output_paths as output_paths
    from cogsuite.evaluation import evaluate
    from data.synthetic import write_cifar10
    from tests.helpers import FIXTURES, compose_config

    run = tmp_path / "archive" / "run" / "checkpoints"
    run.mkdir(parents=True)
    ckpt = Path(shutil.copy(FIXTURES / "legacy_checkpoints" / "cifar10.pt", run / "last.ckpt"))
    write_cifar10(tmp_path / "cifar", images_per_class=2, test_images_per_class=1, image_size=32)
    real_access = os.access
    archive = str(tmp_path / "archive")
    monkeypatch.setattr(output_paths.os, "access",  # a read-only archive (chmod would not stop root)
                        lambda path, mode: False if str(path).startswith(archive) else real_access(path, mode))
    cfg = compose_config("eval", [f"ckpt_path={ckpt}", f"+data.root={tmp_path / 'cifar'}"], tmp_path / "eval")
    evaluate(cfg)
    written = tmp_path / "eval" / "last.ckpt.eval.json"
    assert json.loads(written.read_text())["checkpoint"] == str(ckpt.resolve())
    out = capsys.readouterr().out
    assert f"writing the evaluation results to {tmp_path / 'eval'}" in out and f"written: {written}" in out
    assert sorted(p.name for p in run.iterdir()) == ["last.ckpt"]
    # out= names the place; a file where a folder should be is one line.
    cfg = compose_config("eval", [f"ckpt_path={ckpt}", f"+data.root={tmp_path / 'cifar'}",
                                  f"out={tmp_path / 'results' / 'cifar.json'}"], tmp_path / "eval2")
    evaluate(cfg)
    assert (tmp_path / "results" / "cifar.json").is_file()
    cfg = compose_config("eval", [f"ckpt_path={ckpt}", f"out={tmp_path / 'results' / 'cifar.json' / 'x.json'}"],
                         tmp_path / "eval3")
    with pytest.raises(output_paths.OutputPathError, match="is a file, not a folder; name a writable file or folder with out="):
        evaluate(cfg)
