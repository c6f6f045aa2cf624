"""Atomic checkpoint files: a crash or a full disk mid-save never destroys the previous checkpoint.

Lightning's ``TorchCheckpointIO`` serialises to memory and then writes over the target, so a
failure during the write leaves a truncated file where the last good checkpoint was. Here the
checkpoint is written to a temporary file in the target's folder, flushed to disk, and only then
renamed over the target (``os.replace`` is atomic within one file system): readers see either the
old complete file or the new complete file. Remote (fsspec) paths keep Lightning's behaviour.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from errors import CheckpointError


class CheckpointSaveError(CheckpointError):
    """A checkpoint could not be written (disk full, no permission); the previous one is intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes to a temporary file next to the target, then renames it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        temporary = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "xb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except (OSError, RuntimeError) as raised:
            # torch's zip writer reports a failed write (disk full) as a RuntimeError ("unexpected
            # pos ...") raised while handling the file's OSError: name that OSError.
            error = _os_error_behind(raised)
            if error is None:
                with contextlib.suppress(OSError):
                    temporary.unlink()
                raise
            with contextlib.suppress(OSError):
                temporary.unlink()
            previous = (f"the previous {target.name} is unchanged" if target.is_file()
                        else f"no earlier {target.name} existed")
            raise CheckpointSaveError(
                f"could not save checkpoint {target}: {error.strerror or error} "
                f"({type(error).__name__}); {previous}. Free disk space or make "
                f"{target.parent} writable, then resume from the last good checkpoint "
                "(python train.py ckpt_path=...)."
            ) from raised
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        _sync_folder(target.parent)


def _os_error_behind(error: BaseException) -> OSError | None:
    """``error`` itself if it is an OSError, else the OSError it was raised while handling."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _sync_folder(folder: Path) -> None:
    """Persist the rename itself (POSIX); best effort where folders cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
