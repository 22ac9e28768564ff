"""Hostile .npy, .npz and MXNet files: every failure is a TensorFileError naming the file, every allocation is charged.

Each file is made by hand to break one rule of formats/npy.py or formats/mxnet.py;
the real fixtures must still read exactly, within a budget of about one copy.
"""

from __future__ import annotations

import gc
import io
import random
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, assert_matches, expected
from tensorfile.errors import FormatError, LimitError, TensorFileError, UnsupportedTypeError
from tensorfile.formats._zip import open_zip
from tensorfile.formats.mxnet import read_mxnet, write_mxnet
from tensorfile.formats.npy import read_npy, read_npz
from tensorfile.limits import Limits

# --- .npy ---------------------------------------------------------------------------------------------------------


def npy(header: str | bytes, data: bytes = b"", major: int = 1) -> bytes:
    """A .npy file with this header text, padded as NumPy pads it."""
    text = header.encode("latin1") if isinstance(header, str) else header
    pre = 10 if major == 1 else 12
    text += b" " * (-(pre + len(text) + 1) % 64) + b"\n"
    size = struct.pack("<H", len(text)) if major == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([major, 0]) + size + text + data


def write(tmp_path: Path, raw: bytes, name: str = "f.npy") -> str:
    (tmp_path / name).write_bytes(raw)
    return str(tmp_path / name)


HOSTILE_DESCR = [
    "(1099511627776,)f4",  # a subarray NumPy refuses (ValueError)
    "(2,)f4",  # a subarray NumPy accepts
    "(0,)f4",  # a subarray of itemsize 0
    "f4,f4",  # structured, from a string
    "S0", "U0", "V0",  # items of 0 bytes
    "(" * 300 + "2" + ",)" * 300 + "f4",  # deep nesting
    "9" * 400 + "f",  # a huge repeat count
    "<f99", "bfloat99", "",  # TypeError
    "\x00", "O:x",
]  # fmt: skip


@pytest.mark.parametrize("descr", HOSTILE_DESCR, ids=range(len(HOSTILE_DESCR)))
def test_descr_numpy_chokes_on_is_unsupported(tmp_path, descr):
    path = write(tmp_path, npy(f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': (1,), }}", b"\0" * 64))
    with pytest.raises(UnsupportedTypeError, match="dtype") as info:
        read_npy(path)
    assert path in str(info.value)


@pytest.mark.parametrize("descr", ["[('a', '<f4')]", "12", "None", "{'names': ['a'], 'formats': ['<f4']}"])
def test_non_string_descr_is_unsupported(tmp_path, descr):
    path = write(tmp_path, npy(f"{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}", b"\0" * 8))
    with pytest.raises(UnsupportedTypeError, match="not supported"):
        read_npy(path)


HOSTILE_HEADERS = [
    "{[1]: 2}",  # TypeError: unhashable
    "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
    "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (True,)}",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
    "{'descr': '<f4', 'fortran_order': False, 'shape': [1]}",
    "{'descr': '<f4', 'fortran_order': False, 'shape': " + "(" * 1000 + ")" * 1000 + "}",  # too deep for the parser
    "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "9" * 5000 + ",)}",  # over int's digit limit
    "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} + 1",
    "__import__('os').system('true')",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (1,) ",
]


@pytest.mark.parametrize("header", HOSTILE_HEADERS, ids=range(len(HOSTILE_HEADERS)))
def test_hostile_headers_are_format_errors(tmp_path, header):
    path = write(tmp_path, npy(header, b"\0" * 8))
    with pytest.raises(FormatError) as info:
        read_npy(path)
    assert path in str(info.value)


def test_v3_header_that_is_not_utf8(tmp_path):
    path = write(tmp_path, npy(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), '\xff': 1}", b"\0" * 4, 3))
    with pytest.raises(FormatError, match="not a Python literal"):
        read_npy(path)


@pytest.mark.parametrize(
    "shape, error",
    [
        ((1,) * 65, "65 dimensions"),
        ((2**62, 2**62, 0), "too large for any array"),
        ((2**63,), "too large for any array"),
        ((2**28, 4), "promises 4294967296 bytes of data, the file has 64"),
    ],
)
def test_shapes_a_file_cannot_hold(tmp_path, shape, error):
    path = write(tmp_path, npy(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}", b"\0" * 64))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=error):
            read_npy(path)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_zero_size_with_a_huge_other_dim_is_legal(tmp_path):
    path = write(tmp_path, npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1099511627776), }"))
    value = read_npy(path)
    assert value.shape == (0, 2**40) and value.dtype == np.float32


def test_an_array_over_the_budget_is_refused_before_allocating(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(1000, dtype=np.float64))
    with pytest.raises(LimitError, match="8000 bytes"):
        read_npy(str(path), Limits(max_bytes=7999).budget(str(path), 0))
    assert read_npy(str(path), Limits(max_bytes=8000).budget(str(path), 0)).sum() == 499500


def test_fortran_order_copy_is_charged(tmp_path):
    path = tmp_path / "f.npy"
    np.save(path, np.asfortranarray(np.arange(1000, dtype=np.float64).reshape(10, 100)))
    with pytest.raises(LimitError, match="Fortran"):
        read_npy(str(path), Limits(max_bytes=8000).budget(str(path), 0))
    assert read_npy(str(path), Limits(max_bytes=16000).budget(str(path), 0)).flags.c_contiguous


CASES = {
    "f8>": np.arange(24, dtype=">f8").reshape(2, 3, 4) / 7,
    "i2>F": np.asfortranarray(np.arange(-60, 60, dtype=">i2").reshape(4, 5, 6)),
    "c16>F": np.asfortranarray((np.arange(12) + 1j * np.arange(12)[::-1]).astype(">c16").reshape(3, 4)),
    "u4F": np.asfortranarray(np.arange(20, dtype="<u4").reshape(4, 5)),
    "U3>": np.array(["ab", "c", "déf"], dtype=">U3"),
    "S2": np.array([b"ab", b"c"]),
    "bool": np.array([[True, False], [False, True]]),
    "M8": np.array(["2020-01-01", "1970-01-02"], dtype="M8[D]"),
    "0d": np.array(3.5, dtype=">f4"),
    "empty": np.zeros((0, 3), dtype=">i8"),
    "F1d": np.asfortranarray(np.arange(5, dtype=">f2")),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_values_exact_in_every_byte_order_and_layout(tmp_path, name, version):
    array = CASES[name]
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version)
    path = write(tmp_path, buffer.getvalue())
    value = read_npy(path)
    assert value.dtype == array.dtype.newbyteorder("=") and value.dtype.isnative
    assert value.shape == array.shape and value.flags.c_contiguous and value.flags.writeable
    assert np.array_equal(value, np.load(path))
    assert value.tobytes() == np.ascontiguousarray(array, value.dtype).tobytes()


def test_npz_members_in_both_byte_orders_and_compressions(tmp_path):
    arrays = {k: v for k, v in CASES.items() if v.dtype.kind != "M"}
    for save in (np.savez, np.savez_compressed):
        path = tmp_path / f"{save.__name__}.npz"
        save(path, **arrays)
        with zipfile.ZipFile(path) as zf:
            value = read_npz(str(path), zf)
        assert sorted(value) == sorted(arrays)
        for k, v in arrays.items():
            assert value[k].dtype.isnative and np.array_equal(value[k], v), k


def test_npz_member_errors_name_the_member(tmp_path):
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("good.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", b"\0" * 4))
        zf.writestr("bad.npy", npy("{'descr': 'f4,f4', 'fortran_order': False, 'shape': (1,), }", b"\0" * 8))
    with zipfile.ZipFile(path) as zf, pytest.raises(UnsupportedTypeError, match=r"bad\.npz: member 'bad\.npy'"):
        read_npz(str(path), zf)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("short.npy", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (100,), }", b"\0" * 8))
    with zipfile.ZipFile(path) as zf, pytest.raises(FormatError, match=r"member 'short\.npy': the header promises 800"):
        read_npz(str(path), zf)


def test_npz_budget_counts_every_member(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, a=np.zeros(1000), b=np.zeros(1000))
    with zipfile.ZipFile(path) as zf, pytest.raises(LimitError, match="member 'b.npy'"):
        read_npz(str(path), zf, Limits(max_bytes=12000).budget(str(path), 0))
    with zipfile.ZipFile(path) as zf, pytest.raises(LimitError, match="max_tensors"):
        read_npz(str(path), zf, Limits(max_tensors=1).budget(str(path), 0))


def test_object_array_in_a_deflated_npz(tmp_path):
    path = tmp_path / "o.npz"
    np.savez_compressed(path, o=np.array(["x", "yz"], dtype=object))
    with zipfile.ZipFile(path) as zf:
        assert read_npz(str(path), zf)["o"] == ["x", "yz"]
    with zipfile.ZipFile(path) as zf, pytest.raises(LimitError, match="pickle"):
        read_npz(str(path), zf, Limits(max_header_bytes=10).budget(str(path), 0))


def test_npy_read_with_one_copy(tmp_path):
    array = np.arange(10_000_000, dtype=">f4")
    path = tmp_path / "big.npy"
    np.save(path, array)
    del array
    gc.collect()
    tracemalloc.start()
    try:
        value = read_npy(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert value.dtype == np.float32 and value[12345] == 12345.0
    assert peak < 1.1 * value.nbytes, f"{peak / value.nbytes:.2f}x"


# --- MXNet ---------------------------------------------------------------------------------------------------------

HEAD = struct.pack("<QQ", 0x112, 0)
V2 = 0xF993FAC9


def tshape(*dims: int) -> bytes:
    return struct.pack(f"<i{len(dims)}q", len(dims), *dims)


def sparse(stype: int, storage: tuple, shape: tuple, aux: list[tuple], data: bytes, flag: int = 0) -> bytes:
    """One V2 sparse record: aux = [(type flag, shape), ...]; data = values then aux data."""
    out = struct.pack("<Ii", V2, stype) + tshape(*storage) + tshape(*shape) + struct.pack("<iii", 1, 0, flag)
    for aux_flag, aux_shape in aux:
        out += struct.pack("<i", aux_flag) + tshape(*aux_shape)
    return out + data


def mx_file(records: list[bytes], names: list[str] | None = None) -> bytes:
    out = HEAD + struct.pack("<Q", len(records)) + b"".join(records)
    out += struct.pack("<Q", len(names or []))
    for n in names or []:
        out += struct.pack("<Q", len(n)) + n.encode()
    return out


def f32(*v: float) -> bytes:
    return struct.pack(f"<{len(v)}f", *v)


def i64(*v: int) -> bytes:
    return struct.pack(f"<{len(v)}q", *v)


def csr(shape: tuple, indptr: list, indices: list, values: list, *, aux_flag: int = 6) -> bytes:
    return sparse(2, (len(values),), shape, [(aux_flag, (len(indptr),)), (aux_flag, (len(indices),))],
                  f32(*values) + i64(*indptr) + i64(*indices))  # fmt: skip


def rsp(shape: tuple, rows: list, values: list) -> bytes:
    storage = (len(rows),) + tuple(shape[1:])
    return sparse(1, storage, shape, [(6, (len(rows),))], f32(*values) + i64(*rows))


def read_mx(tmp_path: Path, raw: bytes) -> object:
    return read_mxnet(write(tmp_path, raw, "f.params"))


def test_the_132_byte_csr_bomb_is_refused_without_allocating(tmp_path):
    # a csr record of one value claiming a 2**28 x 4 dense shape (4 GiB as float32)
    raw = mx_file([csr((2**28, 4), [0, 1], [0], [1.0])])
    raw_backed = mx_file([sparse(2, (1,), (2**28, 4), [(6, (2**28 + 1,)), (6, (1,))], f32(1.0) + i64(0, 1) + i64(0))])
    for data in (raw, raw_backed):
        tracemalloc.start()
        start = time.perf_counter()
        try:
            with pytest.raises(FormatError) as info:
                read_mx(tmp_path, data)
            assert tracemalloc.get_traced_memory()[1] < 1 << 20
        finally:
            tracemalloc.stop()
        assert time.perf_counter() - start < 0.5 and "array 0" in str(info.value)
    assert len(raw) < 150 and len(raw_backed) < 150  # a few hundred bytes asking for gigabytes
    with pytest.raises(LimitError, match="made dense"):  # shapes agree with each other: the budget says no
        read_mx(tmp_path, mx_file([sparse(2, (1,), (2**28, 4), [(6, (2**28 + 1,)), (6, (1,))], b"")]))


def test_sparse_arrays_made_by_hand_read_dense(tmp_path):
    records = [csr((3, 3), [0, 2, 2, 3], [0, 2, 1], [1, 2, 3]), rsp((4, 2), [1, 3], [1, 2, 3, 4])]
    value = read_mx(tmp_path, mx_file(records))
    assert value[0].tolist() == [[1, 0, 2], [0, 0, 0], [0, 3, 0]]
    assert value[1].tolist() == [[0, 0], [1, 2], [0, 0], [3, 4]]


BAD_SPARSE = {
    "indptr falls": (csr((2, 3), [0, 2, 1], [0, 1], [1, 2]), "indptr must rise"),
    "indptr from 1": (csr((2, 3), [1, 1, 2], [0, 1], [1, 2]), "indptr must rise from 0"),
    "indptr short of nnz": (csr((2, 3), [0, 1, 1], [0, 1], [1, 2]), "to the 2 stored values"),
    "indptr too long": (csr((2, 3), [0, 1, 2, 2], [0, 1], [1, 2]), "disagree"),
    "column out of range": (csr((2, 3), [0, 1, 2], [0, 3], [1, 2]), "column index out of range 3"),
    "negative column": (csr((2, 3), [0, 1, 2], [0, -1], [1, 2]), "column index out of range"),
    "float indices": (csr((2, 3), [0, 1, 2], [0, 1], [1, 2], aux_flag=1), "integers expected"),
    "csr of 3 dims": (sparse(2, (1,), (1, 1, 1), [(6, (2,)), (6, (1,))], f32(1) + i64(0, 1) + i64(0)), "2-d shape"),
    "indices not nnz": (sparse(2, (2,), (2, 3), [(6, (3,)), (6, (1,))], f32(1, 2) + i64(0, 1, 2) + i64(0)), "disagree"),
    "row out of range": (rsp((4, 2), [1, 4], [1, 2, 3, 4]), "row index out of range 4"),
    "negative row": (rsp((4, 2), [-1, 2], [1, 2, 3, 4]), "row index out of range"),
    "rows not storage": (sparse(1, (2, 2), (4, 2), [(6, (3,))], f32(1, 2, 3, 4) + i64(0, 1, 2)), "disagree"),
    "row width": (sparse(1, (1, 3), (4, 2), [(6, (1,))], f32(1, 2, 3) + i64(0)), "disagree"),
}


@pytest.mark.parametrize("name", sorted(BAD_SPARSE))
def test_sparse_aux_data_checked_before_densifying(tmp_path, name):
    raw, match = BAD_SPARSE[name]
    with pytest.raises(FormatError, match=match) as info:
        read_mx(tmp_path, mx_file([raw]))
    assert "f.params: array 0" in str(info.value)


def test_array_count_against_bytes_and_tensor_limit(tmp_path):
    with pytest.raises(FormatError, match="claims 1099511627776 arrays"):
        read_mx(tmp_path, HEAD + struct.pack("<Q", 2**40) + b"\0" * 64)
    dense = struct.pack("<Ii", V2, 0) + tshape(2) + struct.pack("<iii", 1, 0, 0) + f32(1, 2)
    path = write(tmp_path, mx_file([dense, dense]), "two.params")
    assert [a.tolist() for a in read_mxnet(path)] == [[1, 2], [1, 2]]
    with pytest.raises(LimitError, match="max_tensors"):
        read_mxnet(path, Limits(max_tensors=1).budget(path, 0))
    with pytest.raises(LimitError, match="array 1 data"):
        read_mxnet(path, Limits(max_bytes=12).budget(path, 0))


def test_names_checked_against_the_file(tmp_path):
    dense = struct.pack("<Ii", V2, 0) + tshape(1) + struct.pack("<iii", 1, 0, 0) + f32(1)
    raw = HEAD + struct.pack("<Q", 1) + dense + struct.pack("<QQ", 1, 2**62)
    with pytest.raises(FormatError, match="name 0, expected 4611686018427387904 bytes"):
        read_mx(tmp_path, raw)
    assert read_mx(tmp_path, mx_file([dense], ["w"])) == {"w": np.array([1.0], np.float32)}


def test_mxnet_read_with_one_copy(tmp_path):
    arrays = [np.arange(5_000_000, dtype=np.float32) + i for i in range(4)]
    path = tmp_path / "big.params"
    with open(path, "wb") as f:
        write_mxnet(f, ["a", "b", "c", "d"], arrays, np_semantics=False)
    total = sum(a.nbytes for a in arrays)
    del arrays
    gc.collect()
    tracemalloc.start()
    try:
        value = read_mxnet(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert value["c"][7] == 9.0 and value["d"].flags.writeable
    assert peak < 1.1 * total, f"{peak / total:.2f}x"


# --- the real fixtures, within about one copy; mutated ones raise only TensorFileError -----------------------------

NUMPY = {k: v for k, v in expected("tensorflow").items() if k.startswith("numpy/")}
MXNET = expected("mxnet")
#: One copy of the data, plus room for the small structures around it and sparse arrays made dense.
TIGHT = Limits(bytes_per_file_byte=1.0, slack_bytes=1 << 16)


def read_fixture(path: Path, limits: Limits | None = None) -> object:
    budget = limits.budget(str(path), path.stat().st_size) if limits else None
    raw = path.read_bytes()
    if raw.startswith(HEAD):
        return read_mxnet(str(path), budget)
    if raw.startswith(b"PK"):
        budget = budget or Limits().budget(str(path), path.stat().st_size)
        with open_zip(str(path), budget) as zf:
            return read_npz(str(path), zf, budget)
    return read_npy(str(path), budget)


@pytest.mark.parametrize("name", sorted(NUMPY) + sorted(MXNET))
def test_fixtures_read_exactly_within_one_copy(name):
    spec = (NUMPY.get(name) or MXNET[name])["value"]
    assert_matches(read_fixture(FIXTURES / name, TIGHT), spec, name)


@pytest.mark.parametrize("name", sorted(NUMPY) + sorted(MXNET))
def test_mutated_fixtures_raise_only_tensorfile_errors(tmp_path, name):
    original = (FIXTURES / name).read_bytes()
    rng = random.Random(name)
    path = tmp_path / "m"
    for i in range(60):
        raw = bytearray(original)
        if i % 6 == 5:
            raw = raw[: rng.randrange(len(raw))]
        else:
            for _ in range(rng.randrange(1, 4)):
                at = rng.randrange(min(len(raw), 512))
                raw[at] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256), raw[at] ^ (1 << rng.randrange(8))])
        path.write_bytes(bytes(raw))
        try:
            read_fixture(path)
        except TensorFileError as exc:
            assert str(path) in str(exc), str(exc)
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{name}, mutation {i}: {type(exc).__name__}: {exc}")
