"""Writing a synthetic dataset once, atomically (temporary folder renamed into place, marker
file last), the per-format random streams, and the checks every writer shares.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from data.errors import DataFolderInUseError, DataFolderWriteError
from data.synthetic.scenes import SYNTHETIC_CLASSES
from errors import ConfigError


# Bump when the renderer or the file layout changes: datasets written by an older version are
# then regenerated instead of silently reused.
SYNTHETIC_FORMAT_VERSION = 2
MARKER_NAME = ".synthetic_done.json"
JPEG_QUALITY = 90

# Streams of the per-image random generators, so the three writers never share draws.
_STREAM_IMAGE_FOLDER, _STREAM_DETECTION, _STREAM_SEGMENTATION, _STREAM_CIFAR = 1, 2, 3, 4

# ----------------------------------------------------------------------------------------------
def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


_STALE_FOREIGN_TEMPORARY_S = 24 * 3600


def _temporary_name(final_dir: Path) -> str:
    """``.<name>.tmp-<host>-<pid>-<random>``: unique beyond the PID, since processes in separate
    PID namespaces (containers sharing a volume) can have the same PID."""
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
    return f".{final_dir.name}.tmp-{host}-{os.getpid()}-{secrets.token_hex(4)}"


def _remove_stale_temporaries(final_dir: Path) -> None:
    """Delete temp folders left by interrupted writers: on this host, those whose process is
    gone; any other (another host, or a PID we cannot tell apart from ours: containers sharing
    a volume may all be PID 1) only when untouched for a day."""
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
    for stale in final_dir.parent.glob(f".{final_dir.name}.tmp-*"):
        parts = stale.name.rsplit("-", 3)
        try:
            pid = int(parts[2]) if len(parts) == 4 and parts[1] == host else None
        except ValueError:
            pid = None
        if pid is not None and pid != os.getpid():
            if _process_alive(pid):
                continue
        else:
            try:
                if time.time() - stale.stat().st_mtime < _STALE_FOREIGN_TEMPORARY_S:
                    continue
            except OSError:
                continue
        shutil.rmtree(stale, ignore_errors=True)


def _write_once(final_dir: Path, params: dict, write: Callable[[Path], None]) -> bool:
    """Run ``write`` into a temp folder and rename it to ``final_dir`` unless the marker matches.

    Returns True when files were written, False when the existing dataset was reused.
    """
    final_dir = Path(final_dir)
    if _read_marker(final_dir) == params:
        return False
    if final_dir.exists() and (not final_dir.is_dir() or (any(final_dir.iterdir()) and _read_marker(final_dir) is None)):
        raise DataFolderInUseError(
            f"'{final_dir}' exists and is not a synthetic dataset written by this project (no "
            f"{MARKER_NAME}); refusing to overwrite it. Choose another data.root for the "
            "synthetic data or remove that folder."
        )
    temporary = final_dir.parent / _temporary_name(final_dir)
    try:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(final_dir)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
    except OSError as error:
        raise _not_writable(final_dir, error) from error
    try:
        write(temporary)
        # The marker is written last: its presence means the folder is complete.
        (temporary / MARKER_NAME).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        if _read_marker(final_dir) == params:  # another process finished the same dataset first
            shutil.rmtree(temporary)
            return False
        if final_dir.exists():  # an older synthetic dataset with other parameters
            shutil.rmtree(final_dir)
        os.replace(temporary, final_dir)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise _not_writable(final_dir, error) from error
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return True


def _not_writable(final_dir: Path, error: OSError) -> DataFolderWriteError:
    where = f" ({error.filename})" if error.filename else ""
    return DataFolderWriteError(
        f"cannot write the synthetic dataset to '{final_dir}': {error.strerror or error}{where}. "
        "Make that folder writable or point paths.synthetic_dir (or paths.data_dir) at a writable "
        "folder.")


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}.")


def _check_num_classes(num_classes: int) -> list[str]:
    if not 1 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ConfigError(
            f"num_classes={num_classes} is not supported by the synthetic dataset: choose "
            f"1..{len(SYNTHETIC_CLASSES)} (classes: {', '.join(SYNTHETIC_CLASSES)})."
        )
    return list(SYNTHETIC_CLASSES[:num_classes])


_DEFAULT_SCENE_MIX = {"objects": [1, 6], "object_scale": [0.1, 0.6], "clutter": True}


def _check_scene_mix(objects: Sequence[int], object_scale: Sequence[float]) -> tuple[list[int], list[float]]:
    objects, object_scale = [int(v) for v in objects], [float(v) for v in object_scale]
    if len(objects) != 2 or not 1 <= objects[0] <= objects[1]:
        raise ValueError(f"objects must be [min, max] with 1 <= min <= max, got {objects}")
    if len(object_scale) != 2 or not 0 < object_scale[0] <= object_scale[1] <= 1:
        raise ValueError(f"object_scale must be [min, max] fractions of the shorter side in (0, 1], "
                         f"got {object_scale}")
    return objects, object_scale


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ConfigError(f"image_size must be an integer >= 32, got {image_size!r}.")


def _save_jpeg(image: Image.Image, path: Path) -> None:
    # Fixed encoder settings (no optimise / progressive) keep the bytes reproducible.
    image.save(path, "JPEG", quality=JPEG_QUALITY)
