"""Outputs that cannot be written are one line that names the place and what to do: a full disk
while saving a checkpoint (through torch's real zip writer), eval.py next to a read-only
checkpoint, the report in a read-only logs folder or onto an existing file."""
from __future__ import annotations

import errno
import io

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
