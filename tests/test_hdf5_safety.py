"""Hostile HDF5 files, made with h5py: no other file is read, nothing allocated without bound, one copy per dataset.

Each hostile file is refused with an exact error class whose message names the
file and the dataset (or link); the real Keras fixtures still read as
``expected-tensorflow.json`` says.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import psutil
import pytest

import tensorfile
from conftest import FIXTURES, assert_matches, expected
from tensorfile.errors import FormatError, LimitError, TensorFileError, UnsafeFileError
from tensorfile.formats.hdf5 import read_h5, read_keras_archive
from tensorfile.limits import Limits

SECRET = b"TOP-SECRET-BYTES-" * 8


def make_h5(path: Path, build: Callable[[h5py.File], Any]) -> Path:
    with h5py.File(path, "w") as f:
        build(f)
    return path


def make_keras(path: Path, weights: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", '{"class_name": "Sequential", "config": {}}')
        zf.writestr("model.weights.h5", weights.read_bytes())
    return path


def refused(error: type[Exception], call: Callable[[], Any], *names: str) -> str:
    """Assert ``call()`` raises exactly ``error``, quickly and without growing the process; return its message."""
    process = psutil.Process()
    before, start = process.memory_info().rss, time.monotonic()
    with pytest.raises(TensorFileError) as info:
        call()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert time.monotonic() - start < 5
    assert process.memory_info().rss - before < 64 << 20
    message = str(info.value)
    for name in names:
        assert name in message, message
    assert "TOP-SECRET" not in message and "root:" not in message
    return message


def every_way(path: Path) -> list[Callable[[], Any]]:
    """The ways a user reads a file: the reader, load, open + every tensor."""

    def opened() -> None:
        with tensorfile.open(path) as m:
            for key in list(m):
                np.asarray(m[key])

    return [lambda: read_h5(path), lambda: tensorfile.load(path), opened]


# -- other files ------------------------------------------------------------------------------------------------------


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET)
    return path


@pytest.mark.parametrize("where", ["absolute", "relative", "/etc/passwd"])
def test_external_storage_is_refused(tmp_path, secret, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    name = {"absolute": str(secret), "relative": "secret.bin", "/etc/passwd": "/etc/passwd"}[where]
    path = make_h5(tmp_path / "ext.h5", lambda f: f.create_dataset("w/leak", shape=(64,), dtype="u1",
                                                                   external=[(name, 0, 64)]))
    for call in every_way(path):
        refused(UnsafeFileError, call, str(path), "w/leak", name)


def test_external_storage_after_numeric_datasets_is_refused(tmp_path, secret):
    def build(f):
        f["a"] = np.arange(3.0)
        f.create_dataset("z", shape=(16,), dtype="u1", external=[(str(secret), 0, 16)])

    refused(UnsafeFileError, lambda: read_h5(make_h5(tmp_path / "ext.h5", build)), "'z'", "outside the file")


def test_virtual_dataset_mapping_another_file_is_refused(tmp_path):
    source = make_h5(tmp_path / "source.h5", lambda f: f.create_dataset("data", data=np.frombuffer(SECRET, "u1")))

    def build(f):
        layout = h5py.VirtualLayout(shape=(len(SECRET),), dtype="u1")
        layout[:] = h5py.VirtualSource(str(source), "data", shape=(len(SECRET),))
        f.create_virtual_dataset("v", layout, fillvalue=0)

    path = make_h5(tmp_path / "vds.h5", build)
    for call in every_way(path):
        refused(UnsafeFileError, call, str(path), "'v'", "virtual dataset")


def test_external_link_is_refused(tmp_path):
    make_h5(tmp_path / "other.h5", lambda f: f.create_dataset("data", data=np.frombuffer(SECRET, "u1")))
    link = h5py.ExternalLink(str(tmp_path / "other.h5"), "/data")
    path = make_h5(tmp_path / "elink.h5", lambda f: f.__setitem__("g/l", link))
    for call in every_way(path):
        refused(UnsafeFileError, call, str(path), "'g/l'", "external link")


@pytest.mark.parametrize("variable", ["HDF5_EXTFILE_PREFIX", "HDF5_VDS_PREFIX", "HDF5_EXT_PREFIX"])
def test_no_other_file_is_even_opened_whatever_the_prefix_environment(tmp_path, monkeypatch, variable):
    """Every target is a FIFO: had libhdf5 opened one, the read would block; it returns at once instead."""
    monkeypatch.setenv(variable, str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def vds(f):
        layout = h5py.VirtualLayout(shape=(4,), dtype="u1")
        layout[:] = h5py.VirtualSource("fifo", "data", shape=(4,))
        f.create_virtual_dataset("v", layout, fillvalue=0)

    builders = [
        lambda f: f.create_dataset("e", shape=(4,), dtype="u1", external=[("fifo", 0, 4)]),
        lambda f: f.create_dataset("e", shape=(4,), dtype="u1", external=[(str(fifo), 0, 4)]),
        vds,
        lambda f: f.__setitem__("l", h5py.ExternalLink("fifo", "/data")),
    ]
    for i, build in enumerate(builders):
        path = make_h5(tmp_path / f"f{i}.h5", build)
        errors: list[BaseException] = []
        reader = threading.Thread(target=lambda: errors.append(pytest.raises(UnsafeFileError, read_h5, path).value))
        reader.start()
        reader.join(10)
        if reader.is_alive():  # unblock it before failing
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(10)
            pytest.fail(f"reading {path} opened {fifo}")
        assert len(errors) == 1


def test_a_filter_plugin_is_never_loaded(tmp_path):
    path = make_h5(tmp_path / "blosc.h5", lambda f: f.create_dataset(
        "x", data=np.arange(10), chunks=(5,), compression=32001, compression_opts=(0, 0, 0, 0, 5, 1, 1),
        allow_unknown_filter=True))
    refused(UnsafeFileError, lambda: read_h5(path), "'x'", "filter 32001")


# -- links inside the file --------------------------------------------------------------------------------------------


def test_soft_link_cycle_is_refused(tmp_path):
    def build(f):
        f["a/w"] = np.arange(3)
        f["a/loop"] = h5py.SoftLink("/a")

    path = make_h5(tmp_path / "soft.h5", build)
    for call in every_way(path):
        refused(UnsafeFileError, call, "'a/loop'", "soft link")


def test_hard_link_cycles_are_refused_and_aliases_read_once(tmp_path):
    def alias(f):
        f["g/w"] = np.arange(3.0)
        f["g/z"] = f["g/w"]  # a second name for the same dataset
        f["h"] = f["g"]  # and for the same group

    assert {k: v.tolist() for k, v in read_h5(make_h5(tmp_path / "alias.h5", alias)).items()} == {"g/w": [0.0, 1.0, 2.0]}

    def cycle(f):
        f["g/w"] = np.arange(3.0)
        f["g/h/loop"] = f["g"]  # a group inside its own child

    refused(UnsafeFileError, lambda: read_h5(make_h5(tmp_path / "cycle.h5", cycle)), "'g/h/loop'", "link cycle")


def test_nesting_is_bounded(tmp_path):
    def build(f):
        group = f
        for _ in range(40):
            group = group.create_group("d")
        group["w"] = np.zeros(2)

    path = make_h5(tmp_path / "deep.h5", build)
    budget = Limits(max_depth=10).budget(str(path), path.stat().st_size)
    refused(LimitError, lambda: read_h5(path, budget), "Limits.max_depth", "'d/d/d")
    assert list(read_h5(path)) == ["d/" * 40 + "w"]


def test_tensors_are_counted(tmp_path):
    path = make_h5(tmp_path / "many.h5", lambda f: [f.create_dataset(f"x{i}", data=[i]) for i in range(5)])
    refused(LimitError, lambda: read_h5(path, Limits(max_tensors=4).budget(str(path), 0)), "Limits.max_tensors", "x4")


# -- memory bombs -----------------------------------------------------------------------------------------------------


def test_one_int_with_a_chunk_of_2_28_elements_is_refused(tmp_path):
    path = make_h5(tmp_path / "chunk.h5", lambda f: f.create_dataset(
        "x", shape=(1,), dtype="i4", maxshape=(None,), chunks=(2**28,), fillvalue=7))
    assert path.stat().st_size < 10_000
    for call in every_way(path):
        refused(LimitError, call, str(path), "dataset 'x'", "chunk")


def test_compressed_chunk_bomb_is_refused_by_the_charge(tmp_path):
    def build(f):
        dataset = f.create_dataset("x", shape=(1,), dtype="i4", maxshape=(None,), chunks=(2**23,), compression="gzip")
        dataset[0] = 7

    path = make_h5(tmp_path / "zbomb.h5", build)
    assert path.stat().st_size < 200_000
    budget = Limits(max_bytes=16 << 20).budget(str(path), path.stat().st_size)
    refused(LimitError, lambda: read_h5(path, budget), "dataset 'x'", "Limits.max_bytes")
    assert read_h5(path)["x"].tolist() == [7]  # the default budget (4x + 64 MiB) allows a 32 MiB chunk


def test_never_written_gigabyte_with_a_fill_value_is_refused(tmp_path):
    path = make_h5(tmp_path / "fill.h5", lambda f: f.create_dataset("w", shape=(2**28,), dtype="i4", fillvalue=5))
    assert path.stat().st_size < 10_000
    for call in every_way(path):
        refused(LimitError, call, str(path), "dataset 'w'", "1073741824 bytes")
    small = make_h5(tmp_path / "small.h5", lambda f: f.create_dataset("w", shape=(3,), dtype="i4", fillvalue=5))
    assert read_h5(small)["w"].tolist() == [5, 5, 5]


def test_millions_of_tiny_chunks_are_refused(tmp_path):
    path = make_h5(tmp_path / "chunks.h5", lambda f: f.create_dataset("w", shape=(2**24,), dtype="u1", chunks=(1,)))
    refused(LimitError, lambda: read_h5(path), "dataset 'w'", "chunks")


def test_keras_archive_is_held_to_the_same_rules(tmp_path, secret):
    cases = {
        "ext": (UnsafeFileError, lambda f: f.create_dataset("layers/leak", shape=(8,), dtype="u1",
                                                             external=[(str(secret), 0, 8)])),
        "passwd": (UnsafeFileError, lambda f: f.create_dataset("layers/leak", shape=(8,), dtype="u1",
                                                                external=[("/etc/passwd", 0, 8)])),
        "fill": (LimitError, lambda f: f.create_dataset("layers/leak", shape=(2**28,), dtype="i4", fillvalue=1)),
        "chunk": (LimitError, lambda f: f.create_dataset("layers/leak", shape=(1,), dtype="i4", maxshape=(None,),
                                                          chunks=(2**28,))),
    }
    for name, (error, build) in cases.items():
        archive = make_keras(tmp_path / f"{name}.keras", make_h5(tmp_path / f"{name}.weights.h5", build))
        for call in every_way(archive)[1:]:
            refused(error, call, str(archive), "model.weights.h5", "'layers/leak'")
        with zipfile.ZipFile(archive) as zf:
            refused(error, lambda: read_keras_archive(archive, zf), "'layers/leak'")


def test_keras_member_is_charged_before_it_is_read(tmp_path):
    weights = make_h5(tmp_path / "w.h5", lambda f: f.create_dataset("w", data=np.zeros(1 << 16)))
    archive = make_keras(tmp_path / "m.keras", weights)
    with zipfile.ZipFile(archive) as zf:
        budget = Limits(max_bytes=weights.stat().st_size - 1).budget(str(archive), 0)
        refused(LimitError, lambda: read_keras_archive(archive, zf, budget), "model.weights.h5")
        assert read_keras_archive(archive, zf)["w"].shape == (1 << 16,)


def test_not_hdf5_after_the_magic_is_a_format_error(tmp_path):
    path = tmp_path / "bad.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\xff" * 200)
    refused(FormatError, lambda: read_h5(path), str(path))
    good = make_h5(tmp_path / "good.h5", lambda f: f.create_dataset("w", data=np.arange(1000.0)))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:3000])
    refused(FormatError, lambda: read_h5(truncated), str(truncated))


# -- what is read -----------------------------------------------------------------------------------------------------


def test_dtypes_byte_order_and_keras_bfloat16(tmp_path):
    def build(f):
        f["be"] = np.arange(4, dtype=">f4")
        f["bool"] = np.array([True, False])
        f["scalar"] = np.int64(3)
        f["empty"] = np.zeros((0, 2), "f4")
        f["text"] = "not a weight"
        f["compound"] = np.zeros(2, [("a", "i4"), ("b", "f4")])
        f["complex"] = np.array([1 + 2j])
        f.create_dataset("null", data=h5py.Empty("f4"))
        f.create_dataset("enum", data=np.array([0, 1], "i1"), dtype=h5py.enum_dtype({"A": 0, "B": 1}, basetype="i1"))
        f.create_dataset("bf_bits", data=np.array([0x3F80, 0x4000], "u2")).attrs["dtype"] = "bfloat16"
        opaque = np.frombuffer(np.array([0x3F80, 0x4000], "<u2").tobytes(), "V2")  # h5py stores V2 as opaque
        f.create_dataset("bf_opaque", data=opaque).attrs["dtype"] = "bfloat16"
        f.create_dataset("bf_float", data=np.array([1.5, 2.0], "f4")).attrs["dtype"] = b"bfloat16"

    out = read_h5(make_h5(tmp_path / "mixed.h5", build))
    assert sorted(out) == ["be", "bf_bits", "bf_float", "bf_opaque", "bool", "complex", "empty", "enum", "scalar"]
    assert out["be"].dtype == np.dtype("=f4") and out["be"].tolist() == [0, 1, 2, 3]
    assert out["bool"].dtype == np.bool_ and out["bool"].tolist() == [True, False]
    assert out["scalar"].shape == () and out["scalar"] == 3
    assert out["empty"].shape == (0, 2)
    assert out["complex"].tolist() == [1 + 2j]
    assert out["enum"].dtype == np.dtype("i1") and out["enum"].tolist() == [0, 1]
    for key in ("bf_bits", "bf_opaque", "bf_float"):
        assert out[key].dtype.name == "bfloat16", key
    assert out["bf_bits"].astype(np.float32).tolist() == [1.0, 2.0] == out["bf_opaque"].astype(np.float32).tolist()
    assert out["bf_float"].astype(np.float32).tolist() == [1.5, 2.0]


@pytest.mark.parametrize("dtype", ["<f4", ">f4"])
def test_each_dataset_is_read_with_one_copy(tmp_path, dtype):
    n = 8 << 20  # 32 MiB
    path = make_h5(tmp_path / "big.h5", lambda f: f.create_dataset("w", data=np.arange(n, dtype=dtype)))
    tracemalloc.start()
    try:
        out = read_h5(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out["w"][-1] == n - 1 and out["w"].flags.c_contiguous
    assert peak < 4 * n + (4 << 20), peak


@pytest.mark.parametrize("name", ["tensorflow/mlp.weights.h5", "tensorflow/seq.keras"])
def test_real_keras_fixtures_read_as_expected(name):
    path = FIXTURES / name
    if name.endswith(".keras"):
        with zipfile.ZipFile(path) as zf:
            value = read_keras_archive(path, zf)
    else:
        value = read_h5(path)
    assert_matches(value, expected("tensorflow")[name]["value"], name)
