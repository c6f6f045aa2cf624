"""Read one CIFAR-10 python batch file without letting it run code.

CIFAR-10's batches are Python pickles, and ``pickle.load`` calls whatever a file names. The MD5
check protects only the official files; ``data.verify_checksums=false`` (other data in the same
layout, the embedded synthetic set) would otherwise unpickle anything. No library offers a
restricted loader for this format (``torch.load(weights_only=True)`` reads only torch's zip or
legacy layout), so this is a ``pickle.Unpickler`` whose ``find_class`` hands out exactly what a
CIFAR batch holds:

- dicts with ``str`` or ``bytes`` keys, lists, strings, ints: built by pickle opcodes, no globals;
- numpy arrays: ``ndarray`` / ``dtype`` and the array rebuilders numpy writes, under numpy 1.x
  (``numpy.core.*``) and 2.x (``numpy._core.*``) names: ``multiarray._reconstruct`` (protocols
  2-4) and ``numeric._frombuffer`` (protocol 5);
- ``_codecs.encode``, which Python 3 writes for ``bytes`` (an array's raw data) at protocol 2;
  only its ``latin1`` form is allowed (the codec lookup could otherwise import an encoding module).

Any other global stops the load with a one-line ``DataError`` naming the file and the global, so
a crafted file's payload never runs. A damaged file (truncated, random bytes) and a batch
without the keys of the format are one-line ``DataError``s naming the file too.
"""
from __future__ import annotations

import codecs
import importlib
import importlib.util
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from errors import DataError

# numpy 2.x moved numpy.core to numpy._core; pickles of either version name their own module.
_NUMPY_CORE = "numpy._core" if importlib.util.find_spec("numpy._core") is not None else "numpy.core"
_multiarray = importlib.import_module(f"{_NUMPY_CORE}.multiarray")
_numeric = importlib.import_module(f"{_NUMPY_CORE}.numeric")


_LATIN1_NAMES = {"latin1", "latin-1", "iso8859-1", "iso-8859-1", "l1"}


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of ``bytes`` use it: ``encode(str, "latin1")``.
    Other encodings are refused before any codec lookup (which may import a module)."""
    if not isinstance(encoding, str) or encoding.lower().replace("_", "-") not in _LATIN1_NAMES:
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} (only latin1 is allowed)")
    return codecs.latin_1_encode(text, errors)[0]


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _numeric._frombuffer


class UnsafeCIFARFileError(DataError):
    """A CIFAR batch file that asks for code or objects outside the CIFAR format."""


class _CIFARUnpickler(pickle.Unpickler):
    def __init__(self, handle, path: Path) -> None:
        # latin1: the official files are Python 2 pickles whose byte strings must decode 1:1.
        super().__init__(handle, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCIFARFileError(
                f"refusing CIFAR-10 file '{self.path}': it asks to load '{module}.{name}', which is not "
                f"part of the CIFAR-10 format (only numpy arrays, lists, strings and numbers are), so it "
                f"may run code; replace it with the official file or regenerate it"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCIFARFileError(f"refusing CIFAR-10 file '{self.path}': it holds a persistent reference, "
                                   f"which the CIFAR-10 format never does; replace it with the official file")


def load_cifar_pickle(path: str | Path) -> dict[str, Any]:
    """The dict stored in one CIFAR batch file, ``bytes`` keys decoded to ``str``."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            obj = _CIFARUnpickler(handle, path).load()
    except UnsafeCIFARFileError:
        raise
    except OSError as error:
        raise DataError(f"cannot read CIFAR-10 file '{path}': {error.strerror or error}") from None
    # A damaged pickle fails with whatever the opcode it stops at raises (UnpicklingError,
    # EOFError, ValueError, TypeError, IndexError, MemoryError, ...): all mean "not a batch file".
    except Exception as error:  # noqa: BLE001
        raise DataError(f"CIFAR-10 file '{path}' is truncated or not a CIFAR-10 python batch "
                        f"({type(error).__name__}: {error}); replace it with the official file or regenerate it") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 file '{path}' holds a {type(obj).__name__}, not the dict of a CIFAR-10 "
                        f"python batch; replace it with the official file or regenerate it")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in obj.items()}


def _format_error(path: Path, problem: str) -> DataError:
    return DataError(f"CIFAR-10 file '{path}' is not a CIFAR-10 python batch: {problem}; "
                     f"replace it with the official file or regenerate it")


def read_meta(path: str | Path) -> list[str]:
    """The class names (``label_names``) of ``batches.meta``."""
    path = Path(path)
    names = load_cifar_pickle(path).get("label_names")
    if not isinstance(names, list) or not names:
        raise _format_error(path, "no 'label_names' list of class names")
    return [name.decode("latin1") if isinstance(name, bytes) else str(name) for name in names]


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, 32, 32, 3] uint8 RGB, labels [N] int64)`` of one data or test batch."""
    path = Path(path)
    batch = load_cifar_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        found = (f"an array of {data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray)
                 else "nothing" if data is None else type(data).__name__)
        raise _format_error(path, f"'data' must be a uint8 array [N, 3072], found {found}")
    if not isinstance(labels, list) or not all(isinstance(label, int) and not isinstance(label, bool)
                                                 for label in labels):
        raise _format_error(path, "'labels' must be a list of integers")
    if len(labels) != len(data):
        raise _format_error(path, f"{len(data)} images but {len(labels)} labels")
    # CIFAR's row format: the red, green, then blue 32x32 plane of each image.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(labels, dtype=np.int64)
