"""The container to the byte: golden bytes, header rules, hostile files, integrity."""

from __future__ import annotations

import json
import struct
import time
import tracemalloc

import numpy as np
import pytest
import xxhash

import tensorfile
from tensorfile import FormatError, IntegrityError
from tensorfile.format.header import build_header
from conftest import FIXTURES, expected
from tests_support import rewrite_record


def test_golden_bytes(tmp_path):
    w = np.array([[1, 2], [3, 4]], dtype="<f4")
    b = np.array([7], dtype="<i8")
    tensorfile.save({"w": w, "b": b}, tmp_path / "g", metadata={"author": "me"})
    root = {
        "type": "dict",
        "items": [
            [{"type": "str", "value": "w"}, {"type": "tensor", "name": "w"}],
            [{"type": "str", "value": "b"}, {"type": "tensor", "name": "b"}],
        ],
    }
    tensors = {
        "w": {"checksum": xxhash.xxh3_64_hexdigest(w.tobytes()), "framework": "numpy"},
        "b": {"checksum": xxhash.xxh3_64_hexdigest(b.tobytes()), "framework": "numpy"},
    }
    record = {"version": 1, "header_checksum": "0" * 16, "root": root, "tensors": tensors}
    header = {
        "__metadata__": {"tensorfile": json.dumps(record, separators=(",", ":")), "author": "me"},
        # 8-byte dtypes first, then 4-byte ones: the reference writer's order.
        "b": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]},
        "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]},
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 16)
    digest = xxhash.xxh3_64_hexdigest(text).encode()  # over the header with the digits still 0
    text = text.replace(b'"header_checksum\\":\\"' + b"0" * 16, b'"header_checksum\\":\\"' + digest, 1)
    want = struct.pack("<Q", len(text)) + text + b.tobytes() + w.tobytes()
    got = (tmp_path / "g").read_bytes()
    assert got == want
    assert len(got) == 584 and (8 + len(text)) % 16 == 0


def test_every_tensor_naturally_aligned(tmp_path):
    obj = {f"t{i}": np.ones(i + 1, dtype=dt) for i, dt in enumerate(["u1", "f8", "i2", "f4", "c8", "bool", "i8", "c16"])}
    tensorfile.save(obj, tmp_path / "a")
    with tensorfile.open(tmp_path / "a") as f:
        for name in f.keys():
            info = f.info(name)
            item = np.dtype(info.dtype).itemsize  # complex128: 16, though stored as F64
            assert info.offset % item == 0, (name, info)


@pytest.mark.parametrize("note", ["", "a", "abcd", "abcdefgh", "abcdefghijk"])
def test_complex128_aligned_whatever_the_header_length(tmp_path, note):
    torch = pytest.importorskip("torch")
    t = torch.tensor([1 + 2j], dtype=torch.complex128)
    tensorfile.save({"z": t}, tmp_path / "c", metadata={"note": note})
    with tensorfile.open(tmp_path / "c") as f:
        assert f.info("z").offset % 16 == 0
        z = f["z"]
        assert z.data_ptr() % 16 == 0 and torch.equal(z.clone(), t)


def test_misaligned_tensor_in_a_foreign_file_is_copied(tmp_path):
    pytest.importorskip("torch")
    # A hand-made file: U8 [1] first, so the F64 tensor starts at an odd byte.
    header = {"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "z": {"dtype": "C64", "shape": [1], "data_offsets": [1, 9]}}
    _write_raw(tmp_path / "m", header, b"\x07" + np.array([3 + 4j], "<c8").tobytes())
    with tensorfile.open(tmp_path / "m", framework="torch") as f:
        z = f["z"]
        assert z.data_ptr() % 8 == 0 and z.tolist() == [3 + 4j]


def test_data_buffer_matches_reference_writer(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    obj = {"w": rng.standard_normal((3, 4)).astype(np.float32), "i": np.arange(5), "m": np.array([True, False])}
    tensorfile.save(obj, tmp_path / "ours")
    safetensors_numpy.save_file(obj, str(tmp_path / "ref"))
    ours, ref = (tmp_path / "ours").read_bytes(), (tmp_path / "ref").read_bytes()
    ours_n, ref_n = struct.unpack("<Q", ours[:8])[0], struct.unpack("<Q", ref[:8])[0]
    assert ours[8 + ours_n :] == ref[8 + ref_n :]
    ours_h, ref_h = json.loads(ours[8 : 8 + ours_n]), json.loads(ref[8 : 8 + ref_n])
    ours_h.pop("__metadata__")
    assert ours_h == ref_h


# ---------------------------------------------------------------- hostile files

HOSTILE = sorted(p.name for p in (FIXTURES / "hostile").glob("st_*"))


def test_hostile_fixtures_present():
    listed = {k.split("/")[-1] for k in expected("hostile")["files"] if k.split("/")[-1].startswith("st_")}
    assert set(HOSTILE) == listed and len(HOSTILE) >= 17


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_safetensors_refused_fast_and_small(name):
    path = FIXTURES / "hostile" / name
    why = expected("hostile")["files"][f"hostile/{name}"]["why"]
    for attempt in (lambda: tensorfile.load(path), lambda: tensorfile.open(path)):
        tracemalloc.start()
        start = time.perf_counter()
        with pytest.raises(FormatError) as info:
            attempt()
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 1.0, f"{name} took {elapsed:.2f}s ({why})"
        assert peak < 16 << 20, f"{name} allocated {peak} bytes ({why})"
        assert str(path) in str(info.value)


def _write_raw(path, header: dict | bytes, data: bytes = b"") -> None:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


F4 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}

MALFORMED = {
    "extra field": ({"a": {**F4, "x": 1}}, b"\0" * 8, "expected fields"),
    "missing field": ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "expected fields"),
    "bool dim": ({"a": {**F4, "shape": [True, 2]}}, b"\0" * 8, "non-negative integers"),
    "float dim": ({"a": {**F4, "shape": [2.0]}}, b"\0" * 8, "non-negative integers"),
    "offsets not pair": ({"a": {**F4, "data_offsets": [0]}}, b"\0" * 8, "data_offsets"),
    "entry not object": ({"a": [1, 2]}, b"", "expected fields"),
    "metadata not object": ({"__metadata__": "x"}, b"", "string to string"),
    "duplicate nested key": (b'{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 8, "duplicate key"),
    "duplicate metadata": (b'{"__metadata__":{},"__metadata__":{}}', b"", "duplicate key"),
    "not utf8": (b'{"\xff":1}', b"", "UTF-8"),
    "lone surrogate name": (b'{"a\\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\0", "lone surrogate"),
    "lone surrogate metadata": (b'{"__metadata__":{"k":"\\udfff"}}', b"", "lone surrogate"),
    "NaN literal": (b'{"__metadata__":{"k":NaN}}', b"", "NaN is not valid JSON"),
    "zero-size but huge": ({"a": {"dtype": "F32", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}}, b"", "too large"),
    "huge then zero": ({"a": {"dtype": "F32", "shape": [2**62, 0], "data_offsets": [0, 0]}}, b"", "too large"),
    "second tensor truncated": (
        {"a": F4, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}},
        b"\0" * 12,
        "truncated",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_headers(tmp_path, case):
    header, data, message = MALFORMED[case]
    _write_raw(tmp_path / "bad", header, data)
    with pytest.raises(FormatError, match=message):
        tensorfile.load(tmp_path / "bad")


def test_duplicate_names_refused_though_reference_keeps_last(tmp_path):
    text = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    _write_raw(tmp_path / "dup", text, b"\x05")
    with pytest.raises(FormatError, match="duplicate key 'a'"):
        tensorfile.load(tmp_path / "dup")


def test_leading_whitespace_and_header_padding_accepted(tmp_path):
    text = b"   " + json.dumps({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}).encode() + b"     "
    _write_raw(tmp_path / "ws", text, b"\x01\x02")
    assert tensorfile.load(tmp_path / "ws")["a"].tolist() == [1, 2]


def test_build_header_pads_to_sixteen():
    for n in range(1, 20):
        out = build_header([("x" * n, "U8", [1], 1)], None)
        assert len(out) % 16 == 0
        assert out[8:].rstrip(b" ").endswith(b"}")


# ---------------------------------------------------------------- not safetensors

@pytest.mark.parametrize(
    "content, phrase",
    [
        (b"PK\x03\x04" + b"\0" * 40, "a damaged zip archive: its central directory is missing"),
        (b"\x80\x04\x95" + b"\0" * 20, "not a file of tensors tensorfile reads; it looks like .*pickle"),
        (b"\x1f\x8b\x08\x00" + b"\0" * 16, "not a file of tensors tensorfile reads; it looks like .*gzip"),
    ],
)
def test_foreign_file_named(tmp_path, content, phrase):
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(FormatError, match=phrase):
        tensorfile.load(tmp_path / "f")


def test_other_zip_archive_named_as_zip(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "notes.zip", "w") as zf:
        zf.writestr("readme.txt", "not tensors")
    with pytest.raises(FormatError, match="zip"):
        tensorfile.load(tmp_path / "notes.zip")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        tensorfile.load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        tensorfile.open(tmp_path / "nope")


def test_error_hierarchy():
    assert issubclass(FormatError, ValueError) and issubclass(FormatError, tensorfile.TensorFileError)
    assert issubclass(IntegrityError, tensorfile.TensorFileError)
    assert issubclass(tensorfile.UnsupportedTypeError, TypeError)


# ---------------------------------------------------------------- integrity


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_data_byte_names_the_tensor(tmp_path):
    path = tmp_path / "m"
    tensorfile.save({"first": np.arange(10, dtype=np.float32), "second": np.ones(3)}, path)
    with tensorfile.open(path) as f:
        offset = f.info("first").offset + 5
    _flip(path, offset)
    with pytest.raises(IntegrityError, match="tensor 'first'"):
        tensorfile.load(path)
    with tensorfile.open(path, verify=True) as f:
        assert f["second"].tolist() == [1.0, 1.0, 1.0]
        with pytest.raises(IntegrityError, match="'first'.*expected [0-9a-f]{16}, found [0-9a-f]{16}"):
            f["first"]
    with tensorfile.open(path) as f:  # lazy access does not hash unless asked to
        assert f["first"][1] != 1.0


def test_every_data_byte_is_covered_by_a_checksum(tmp_path):
    path = tmp_path / "m"
    tensorfile.save([np.arange(3, dtype=np.int16), np.float64(2.5), np.array([True])], path)
    size = path.stat().st_size
    with tensorfile.open(path) as f:
        start = min(f.info(n).offset for n in f.keys())
    good = path.read_bytes()
    for offset in range(start, size):
        _flip(path, offset)
        with pytest.raises(IntegrityError):
            tensorfile.load(path)
        path.write_bytes(good)


BAD_RECORDS = {
    "newer version": (lambda r: r.update(version=99), "newer tensorfile"),
    "tensor not described": (lambda r: r["tensors"].pop("a"), "does not match the header"),
    "bad checksum text": (lambda r: r["tensors"]["a"].update(checksum="xyz"), "16 hex digits"),
    "root names missing tensor": (lambda r: r["root"]["items"][0].__setitem__(1, {"type": "tensor", "name": "zz"}), "'zz'"),
    "unknown node": (lambda r: r["root"].update(type="set"), "invalid node"),
    "bad key node": (lambda r: r["root"]["items"][0].__setitem__(0, {"type": "tuple", "items": [1]}), "invalid node"),
    "version zero": (lambda r: r.update(version=0), "version"),
    "dtype not a string": (lambda r: r["tensors"]["a"].update(dtype=[]), "cannot be stored"),
    "flag not a bool": (lambda r: r["tensors"]["a"].update(parameter="no"), "true or false"),
    "bad device": (lambda r: r["tensors"]["a"].update(device="banana:x"), "device"),
    "framework not a string": (lambda r: r["tensors"]["a"].update(framework=5), "framework"),
    "shared empty": (lambda r: r.update(shared=[{"nbytes": 8, "members": []}]), "two or more"),
    "shared name not a string": (
        lambda r: r.update(shared=[{"nbytes": 32, "members": [{"name": ["a"], "offset": 0, "strides": [1]}] * 2}]),
        "not a tensor",
    ),
    "scalar with bad dtype": (lambda r: r["tensors"]["a"].update(scalar=True, dtype=[]), "cannot be stored"),
    "float node out of range": (lambda r: r["root"]["items"][0].__setitem__(1, {"type": "float", "value": 2**1024 - 1}), "out of range"),
    "shared mixes frameworks": (
        lambda r: [
            r["tensors"]["b"].update(framework="torch"),
            r.update(shared=[{"nbytes": 16, "members": [{"name": "a", "offset": 0, "strides": [1]}, {"name": "b", "offset": 0, "strides": [1]}]}]),
        ],
        "mixes frameworks",
    ),
    "shared members disagree": (
        lambda r: r.update(
            shared=[{"nbytes": 16, "members": [{"name": "a", "offset": 0, "strides": [1]}, {"name": "b", "offset": 0, "strides": [1]}]}]
        ),
        "disagree",
    ),
    "complex on wrong code": (lambda r: r["tensors"]["a"].update(dtype="complex128"), "cannot be stored"),
    "shared out of bounds": (
        lambda r: r.update(shared=[{"nbytes": 4, "members": [{"name": "a", "offset": 0, "strides": [1]}] * 2}]),
        "outside its storage",
    ),
    "shared huge offset": (
        lambda r: r.update(shared=[{"nbytes": 1 << 62, "members": [{"name": "a", "offset": -8, "strides": [1]}] * 2}]),
        "outside its storage",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_records_are_format_errors(tmp_path, case):
    change, message = BAD_RECORDS[case]
    path = tmp_path / "r"
    tensorfile.save({"a": np.arange(4, dtype=np.int32), "b": np.zeros(2, dtype=np.int64)}, path)
    rewrite_record(path, change)
    with pytest.raises(FormatError, match=message):
        tensorfile.load(path)


HEADER_DAMAGE = {
    "dtype code": lambda h: h["a"].update(dtype="I32"),
    "shape": lambda h: h["a"].update(shape=[4, 1]),
    "user metadata": lambda h: h["__metadata__"].update(author="mallory"),
    "added metadata": lambda h: h["__metadata__"].update(extra="1"),
    "record flag": lambda h: h["__metadata__"].update(
        tensorfile=h["__metadata__"]["tensorfile"].replace('"framework":"numpy"', '"framework":"numpy","scalar":true', 1)
    ),
    "plain value": lambda h: h["__metadata__"].update(
        tensorfile=h["__metadata__"]["tensorfile"].replace('"value":3', '"value":4')
    ),
    "offsets swapped": lambda h: [h["a"].update(data_offsets=[16, 32]), h["b"].update(data_offsets=[0, 16])],
    "record moved after user metadata": lambda h: h.update(
        __metadata__={"author": "me", "tensorfile": h["__metadata__"]["tensorfile"]}
    ),
}


@pytest.mark.parametrize("case", sorted(HEADER_DAMAGE))
def test_header_damage_is_detected(tmp_path, case):
    from tests_support import read_header, write_header

    path = tmp_path / "h"
    tensorfile.save({"a": np.arange(4, dtype=np.float32), "b": np.zeros(4, np.int32), "step": 3}, path, metadata={"author": "me"})
    header, data = read_header(path)
    before = json.dumps(header)
    HEADER_DAMAGE[case](header)
    assert json.dumps(header) != before
    write_header(path, header, data)
    with pytest.raises(IntegrityError, match="header is corrupt|header was rewritten"):
        tensorfile.load(path)
    with pytest.raises(IntegrityError, match="header is corrupt|header was rewritten"):
        tensorfile.open(path)


def test_every_header_byte_is_covered(tmp_path):
    path = tmp_path / "h"
    tensorfile.save({"a": np.arange(3, dtype=np.int16), "s": "x"}, path, metadata={"k": "v"})
    good = path.read_bytes()
    n = struct.unpack("<Q", good[:8])[0]
    for offset in range(8, 8 + n):
        data = bytearray(good)
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        try:
            value = tensorfile.load(path)
        except (FormatError, IntegrityError):
            continue
        raise AssertionError(f"flipping header byte {offset} went unnoticed: {value!r}")


def test_shared_storage_cannot_be_used_as_an_allocation_bomb(tmp_path, recwarn):
    path = tmp_path / "bomb"
    obj = {f"t{i}": np.zeros(4096, np.uint8) for i in range(60)}
    tensorfile.save(obj, path)

    def bomb(r):
        r["shared"] = [
            {"nbytes": 60 << 20, "members": [{"name": f"t{2 * i}", "offset": 0, "strides": [1]},
                                             {"name": f"t{2 * i + 1}", "offset": (60 << 20) - 4096, "strides": [1]}]}
            for i in range(30)
        ]

    rewrite_record(path, bomb)
    tracemalloc.start()
    back = tensorfile.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 << 20, f"{peak} bytes for a {path.stat().st_size}-byte file"
    assert all(v.tolist() == [0] * 4096 for v in back.values())
    assert any("not rebuilt" in str(w.message) for w in recwarn)


@pytest.mark.parametrize(
    "content, phrase",
    [
        (b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.", "legacy torch.save stream"),
        (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'", "reading the header, expected 118 bytes"),
        (b"\x89HDF\r\n\x1a\n" + b"\0" * 20, "cannot be read as HDF5"),
        (b"\x12\x01" + b"\0" * 14 + b"\x01" + b"\0" * 7, "claims 1 arrays in 24 bytes"),
    ],
)
def test_truncated_torch_and_numpy_files(tmp_path, content, phrase):
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(FormatError, match=phrase):
        tensorfile.load(tmp_path / "f")
