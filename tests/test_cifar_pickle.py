"""CIFAR-10 batches are read by a restricted unpickler: a crafted file never runs its payload
(with data.verify_checksums=false and in the embedded synthetic set), the real format loads under
every pickle form numpy and Python 2 write, and every damaged file is one line naming it."""
from __future__ import annotations

import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from data.cifar import CIFAR10DataModule, read_cifar10
from data.cifar_pickle import UnsafeCIFARFileError, load_cifar_pickle, read_batch, read_meta
from data.synthetic import write_cifar10
from errors import DataError
from tests.helpers import compose_config


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_written")
    write_cifar10(root, images_per_class=5, test_images_per_class=1, image_size=32)
    return root


@pytest.fixture
def cifar_root(written, tmp_path):
    shutil.copytree(written, tmp_path / "cifar")
    return tmp_path / "cifar"


class _Payload:
    """Unpickles by calling ``os.system`` (the attack), then, in the sneaky variant, yields the
    real batch so nothing would be noticed."""

    def __init__(self, marker, batch=None):
        self.marker, self.batch = marker, batch

    def __reduce__(self):
        command = f"touch '{self.marker}'"
        if self.batch is None:
            return os.system, (command,)
        # ("tuple of (system result, real batch)")[1] through operator.getitem: code, then data.
        import operator
        return operator.getitem, ((_Call(os.system, command), self.batch), 1)


class _Call:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


def _plant(path, marker, sneaky):
    with open(path, "rb") as handle:
        real = pickle.load(handle, encoding="latin1")  # our own trusted file
    with open(path, "wb") as handle:
        pickle.dump(_Payload(marker, real if sneaky else None), handle, protocol=2)


def _one_line(error):
    return "\n" not in str(error.value)


@pytest.mark.parametrize("sneaky", [False, True], ids=["payload", "payload_then_real_data"])
def test_crafted_batch_never_runs_its_payload(cifar_root, tmp_path, sneaky):
    target = cifar_root / "cifar-10-batches-py" / "data_batch_1"
    # The crafted file is a real attack: plain pickle.load (what torchvision's reader does) runs it.
    proof = tmp_path / "plain_pickle_ran_it"
    original = target.read_bytes()
    _plant(target, proof, sneaky)
    with open(target, "rb") as handle:
        loaded = pickle.load(handle, encoding="latin1")
    assert proof.exists() and (not sneaky or set(loaded) >= {"data", "labels"})
    target.write_bytes(original)

    marker = tmp_path / "payload_ran"
    _plant(target, marker, sneaky)
    dm = CIFAR10DataModule(str(cifar_root), batch_size=2, num_workers=0, verify_checksums=False)
    with pytest.raises(UnsafeCIFARFileError, match=r"refusing CIFAR-10 file '.*data_batch_1': it asks to load") as error:
        dm.setup()
    assert _one_line(error)
    assert not marker.exists()


def test_crafted_batch_in_the_synthetic_set_never_runs(tmp_path):
    """data=synthetic synthetic.format=cifar10: a batch of the written set replaced afterwards."""
    cfg = compose_config("train", ["task=classification", "data=synthetic", "synthetic.format=cifar10",
                                   f"paths.synthetic_dir={tmp_path / 'synthetic'}",
                                   "synthetic.generator.images_per_class=3",
                                   "+synthetic.generator.test_images_per_class=1"], tmp_path)
    written = instantiate(cfg.data)
    written.setup()  # writes the set once and reads it
    marker = tmp_path / "payload_ran"
    _plant(Path(written.hparams.root) / "cifar-10-batches-py" / "test_batch", marker, sneaky=True)
    with pytest.raises(UnsafeCIFARFileError, match="test_batch"):
        instantiate(cfg.data).setup()
    assert not marker.exists()


def test_codecs_encode_only_as_latin1(tmp_path):
    path = tmp_path / "data_batch_1"
    # _codecs.encode is allowed for protocol-2 bytes; any other codec is refused before lookup.
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(DataError, match="only latin1"):
        load_cifar_pickle(path)


def _numpy1_pickle(obj) -> bytes:
    """A protocol-2 pickle as numpy 1.x writes it (``numpy.core.multiarray``)."""
    return pickle.dumps(obj, protocol=2).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


class _Python2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2's ``str`` (BINSTRING), as the official CIFAR-10 files hold
    their keys and the arrays' raw data."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_str2(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_str2


def _python2_pickle(obj) -> bytes:
    import io
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


@pytest.mark.parametrize("form", ["numpy2_protocol2", "numpy1_protocol2", "protocol4", "protocol5",
                                  "python2_official", "bytes_keys"])
def test_every_pickle_form_of_the_format_loads(tmp_path, form):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    batch = {"batch_label": "training batch 1 of 5", "labels": [0, 2, 1], "data": data,
             "filenames": ["a.png", "b.png", "c.png"]}
    if form == "python2_official":  # keys and strings are Python 2 byte strings
        batch = {b"batch_label": b"training batch 1 of 5", b"labels": [0, 2, 1], b"data": data,
                 b"filenames": [b"a.png", b"b.png", b"c.png"]}
        raw = _python2_pickle(batch)
        assert b"_codecs" not in raw and b"cnumpy.core.multiarray\n_reconstruct" in raw
    elif form == "numpy1_protocol2":
        raw = _numpy1_pickle(batch)
        assert b"cnumpy.core.multiarray\n_reconstruct" in raw
    elif form == "bytes_keys":
        raw = pickle.dumps({key.encode(): value for key, value in batch.items()}, protocol=3)
    else:
        raw = pickle.dumps(batch, protocol={"numpy2_protocol2": 2, "protocol4": 4, "protocol5": 5}[form])
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    images, labels = read_batch(path)
    assert labels.tolist() == [0, 2, 1]
    assert np.array_equal(images[1], data[1].reshape(3, 32, 32).transpose(1, 2, 0))


def test_meta_with_python2_strings(tmp_path):
    path = tmp_path / "batches.meta"
    path.write_bytes(_python2_pickle({b"label_names": [b"airplane", b"cat"], b"num_vis": 3072}))
    assert read_meta(path) == ["airplane", "cat"]


def _good_batch():
    return {"labels": [0], "data": np.zeros((1, 3072), np.uint8)}


@pytest.mark.parametrize("name, content, problem", [
    ("data_batch_1", lambda raw: raw[: len(raw) // 2], "truncated or not a CIFAR-10 python batch"),
    ("data_batch_1", lambda raw: np.random.default_rng(1).bytes(4000), "truncated or not a CIFAR-10 python batch"),
    ("data_batch_1", lambda raw: b"", "truncated or not a CIFAR-10 python batch"),
    ("data_batch_1", lambda raw: pickle.dumps({"labels": [0]}), "'data' must be a uint8 array"),
    ("data_batch_1", lambda raw: pickle.dumps({"data": np.zeros((1, 3072), np.uint8)}), "'labels' must be a list"),
    ("data_batch_1", lambda raw: pickle.dumps({"labels": [0, 1], "data": np.zeros((1, 3072), np.uint8)}),
     "1 images but 2 labels"),
    ("data_batch_1", lambda raw: pickle.dumps({"labels": [0], "data": np.zeros((1, 3072), np.float32)}),
     "found an array of float32"),
    ("data_batch_1", lambda raw: pickle.dumps([1, 2, 3]), "holds a list, not the dict"),
    ("data_batch_1", lambda raw: pickle.dumps({"labels": [99], "data": np.zeros((1, 3072), np.uint8)}),
     "labels outside 0..9"),
    ("batches.meta", lambda raw: pickle.dumps({"num_vis": 3072}), "no 'label_names'"),
    ("batches.meta", lambda raw: raw[:10], "truncated or not a CIFAR-10 python batch"),
])
def test_damaged_files_are_one_line_naming_the_file(cifar_root, name, content, problem):
    path = cifar_root / "cifar-10-batches-py" / name
    path.write_bytes(content(path.read_bytes()))
    with pytest.raises(DataError, match=problem) as error:
        read_cifar10(cifar_root, train=True, verify_checksums=False)
    assert str(path) in str(error.value) and _one_line(error)


def test_unreadable_file_is_one_line(tmp_path):
    (tmp_path / "data_batch_1").mkdir()  # a folder where the file should be (runs as root too)
    with pytest.raises(DataError, match="cannot read CIFAR-10 file .*data_batch_1") as error:
        load_cifar_pickle(tmp_path / "data_batch_1")
    assert _one_line(error)
