"""One writer per run folder: an advisory lock on ``<run>/.run.lock``.

Two processes training into one run folder (a resume started while the original still runs)
would both write its checkpoints, CSV and TensorBoard files. ``train.py`` therefore holds
this lock for as long as it trains into the folder; a second writer is refused in one line
naming the holder.

The lock is ``fcntl.flock`` on the file: the kernel drops it when the holding process ends in
any way (exit, crash, ``kill -9``, node reboot for a local disk), so a lock left by a dead
process is never mistaken for a live one and never needs cleaning up. The file itself stays and
records the last holder (pid, host, start time) for the message. On NFS, Linux maps ``flock``
to POSIX byte-range locks, which NFSv4 servers honour across nodes. A requeued cluster job is a
new process: the lock of its previous, ended attempt is free, so it continues its own run.

API: ``with RunFolderLock(run_dir): ...`` or ``lock = RunFolderLock(run_dir).acquire()`` /
``lock.release()``; ``RunFolderInUseError`` (a ``SuiteError``) when another process holds it;
``remove_stale_temporaries(run_dir)`` removes the temporary files of checkpoint saves that
never finished, which only the lock holder may do.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from errors import SuiteError

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks through the standard library
    fcntl = None

log = logging.getLogger("cogsuite")

LOCK_FILE = ".run.lock"
CHECKPOINT_FOLDER = "checkpoints"
# cogsuite.checkpoint_io.AtomicCheckpointIO names its temporaries ".<target>.<pid>-<hex>.tmp".
_TEMPORARY_PATTERN = ".*.ckpt.*.tmp"


class RunFolderInUseError(SuiteError, BlockingIOError):
    """Another live process is writing into this run folder."""


class RunFolderLock:
    """Exclusive, process-lifetime lock on a run folder (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._handle = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def holder(self) -> dict[str, Any]:
        """What the lock file says about its last holder ({} if unreadable)."""
        try:
            return dict(json.loads(self.path.read_text() or "{}"))
        except (OSError, ValueError, TypeError):
            return {}

    def acquire(self) -> "RunFolderLock":
        if self._handle is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise RunFolderInUseError(self._in_use_message()) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Give the lock up (the file stays; the kernel would drop the lock at exit anyway)."""
        if self._handle is None:
            return
        if fcntl is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def __enter__(self) -> "RunFolderLock":
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def _in_use_message(self) -> str:
        info = self.holder()
        who = (f"process {info['pid']} on {info.get('host', '?')} (since {info.get('since', '?')})"
               if "pid" in info else "another process")
        return (f"run folder {self.run_dir} is in use by {who}, which is still training into it; wait "
                f"for it to finish (then resume with the same ckpt_path), or stop it first. Two "
                f"writers would mix their checkpoints and logs")


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of checkpoint saves that never finished (a kill mid-save).

    Call it only while holding the run's lock: no other process can be writing them then.
    Returns the files removed."""
    folder = Path(run_dir) / CHECKPOINT_FOLDER
    removed = []
    for path in sorted(folder.glob(_TEMPORARY_PATTERN)) if folder.is_dir() else []:
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError as error:
            log.warning("could not remove the stale temporary checkpoint file %s: %s", path, error)
            continue
        removed.append(path)
        log.info("removed %s (%.1f MB), left by a checkpoint save that never finished", path, size / 1e6)
    return removed
