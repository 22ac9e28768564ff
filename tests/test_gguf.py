"""GGUF files (llama.cpp): the reader against llama.cpp's own writer, and hostile files built byte by byte.

The oracle tests write files with the ``gguf`` package (llama.cpp's ``gguf-py``, the dev extra) and
skip without it; the hand-built ones (malformed headers, truncation, big-endian) need only struct.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tensorfile.errors import FormatError, UnsupportedTypeError
from tensorfile.formats import gguf as reader
from tensorfile.formats.gguf import MAGIC, GGML_TYPES, TensorInfo, read_gguf, read_header, tensor_infos

try:
    import gguf
except ImportError:  # the oracle tests skip; the hand-built ones below still run
    gguf = None

oracle = pytest.mark.skipif(gguf is None, reason="needs the gguf package (llama.cpp's writer; the dev extra)")

# ---------------------------------------------------------------- a hand-made writer (struct only)

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_CODES = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", U64: "Q", I64: "q", F64: "d", BOOL: "?"}
TYPE_IDS = {info[0]: type_id for type_id, info in GGML_TYPES.items()}


def enc(vtype: int, value, o: str = "<") -> bytes:
    """The bytes of one metadata value of ``vtype`` (an array value is (element type, items))."""
    if vtype in _CODES:
        return struct.pack(o + _CODES[vtype], value)
    if vtype == STRING:
        raw = value.encode() if isinstance(value, str) else value
        return struct.pack(o + "Q", len(raw)) + raw
    etype, items = value
    return struct.pack(o + "IQ", etype, len(items)) + b"".join(enc(etype, v, o) for v in items)


def build(kvs=(), tensors=(), *, version=3, o="<", alignment=32, n_tensors=None, n_kv=None) -> bytes:
    """A GGUF file: kvs = [(key, vtype, value)]; tensors = [(name, ggml dims, type name, data, offset or None)]."""
    head = MAGIC + struct.pack(o + "IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)  # fmt: skip
    for key, vtype, value in kvs:
        head += enc(STRING, key, o) + struct.pack(o + "I", vtype) + enc(vtype, value, o)
    data, infos = b"", b""
    for name, dims, type_name, raw, offset in tensors:
        here = len(data) if offset is None else offset
        infos += enc(STRING, name, o) + struct.pack(o + "I", len(dims)) + struct.pack(f"{o}{len(dims)}Q", *dims)
        infos += struct.pack(o + "IQ", TYPE_IDS.get(type_name, type_name), here)
        data += raw + b"\0" * (-len(raw) % alignment)
    head += infos
    return head + b"\0" * (-len(head) % alignment) + data


def head(n_tensors: int = 0, n_kv: int = 1) -> bytes:
    """The fixed start of a v3 little-endian file, for headers built piece by piece."""
    return MAGIC + struct.pack("<IQQ", 3, n_tensors, n_kv)


def write(tmp_path, content: bytes, name: str = "f.gguf") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def small_file(o: str = "<") -> bytes:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([-1, 2, -3], dtype=np.int16)
    if o == ">":
        a, b = a.byteswap(), b.byteswap()
    kvs = [("general.architecture", STRING, "llama"), ("n", U32, 7), ("tokens", ARRAY, (STRING, ["<s>", "é", ""]))]
    return build(kvs, [("a", (3, 2), "F32", a.tobytes(), None), ("b", (3,), "I16", b.tobytes(), None)], o=o)


def peak_bytes(fn) -> int:
    """Peak Python/NumPy allocation while fn() runs (it must raise)."""
    tracemalloc.start()
    try:
        fn()
    except (FormatError, UnsupportedTypeError):
        pass
    else:
        raise AssertionError("expected an error")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# ---------------------------------------------------------------- hand-built files


def test_hand_built_file_reads_values_shapes_and_metadata(tmp_path):
    tensors, metadata = read_gguf(write(tmp_path, small_file()))
    assert list(tensors) == ["a", "b"]
    assert tensors["a"].dtype == np.float32 and tensors["a"].shape == (2, 3)
    assert tensors["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert tensors["b"].dtype == np.int16 and tensors["b"].tolist() == [-1, 2, -3]
    assert metadata == {"general.architecture": "llama", "n": 7, "tokens": ["<s>", "é", ""]}


def test_big_endian_file_reads_the_same_values(tmp_path):
    path = write(tmp_path, small_file(">"))
    tensors, metadata = read_gguf(path)
    assert read_header(path).big_endian
    assert tensors["a"].dtype.isnative and tensors["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert tensors["b"].dtype.isnative and tensors["b"].tolist() == [-1, 2, -3]
    assert metadata == {"general.architecture": "llama", "n": 7, "tokens": ["<s>", "é", ""]}


def test_every_metadata_value_type_by_hand(tmp_path):
    kvs = [("u8", U8, 255), ("i8", I8, -128), ("u16", U16, 65535), ("i16", I16, -32768), ("u32", U32, 2**32 - 1),
           ("i32", I32, -(2**31)), ("f32", F32, 0.15625), ("bool", BOOL, True), ("false", BOOL, False),
           ("str", STRING, "naïve ☃"), ("u64", U64, 2**64 - 1), ("i64", I64, -(2**63)), ("f64", F64, 1 / 3),
           ("a.u8", ARRAY, (U8, [0, 1, 255])), ("a.i64", ARRAY, (I64, [-(2**63), 2**63 - 1])),
           ("a.f32", ARRAY, (F32, [0.5, -2.25])), ("a.f64", ARRAY, (F64, [1e300])),
           ("a.bool", ARRAY, (BOOL, [True, False])),
           ("a.str", ARRAY, (STRING, ["a", "", "ü"])), ("a.empty", ARRAY, (I32, [])),
           ("a.nested", ARRAY, (ARRAY, [(I32, [1, 2]), (I32, []), (I32, [3])])),
           ("a.nested_str", ARRAY, (ARRAY, [(STRING, ["x"]), (STRING, ["y", "z"])]))]  # fmt: skip
    _, metadata = read_gguf(write(tmp_path, build(kvs)))
    assert list(metadata) == [k for k, _, _ in kvs]
    assert metadata == {
        "u8": 255, "i8": -128, "u16": 65535, "i16": -32768, "u32": 2**32 - 1, "i32": -(2**31), "f32": 0.15625,
        "bool": True, "false": False, "str": "naïve ☃", "u64": 2**64 - 1, "i64": -(2**63), "f64": 1 / 3,
        "a.u8": [0, 1, 255], "a.i64": [-(2**63), 2**63 - 1], "a.f32": [0.5, -2.25], "a.f64": [1e300],
        "a.bool": [True, False], "a.str": ["a", "", "ü"], "a.empty": [], "a.nested": [[1, 2], [], [3]],
        "a.nested_str": [["x"], ["y", "z"]],
    }  # fmt: skip
    assert all(type(metadata[k]) is bool for k in ("bool", "false")) and type(metadata["u8"]) is int
    assert type(metadata["a.f32"][0]) is float and type(metadata["a.u8"][0]) is int


def test_version_2_reads_and_versions_1_and_unknown_are_refused(tmp_path):
    assert read_header(write(tmp_path, build([("k", U8, 1)], version=2))).version == 2
    with pytest.raises(FormatError, match="GGUF version 1 .*not supported"):
        read_gguf(write(tmp_path, build(version=1)))
    with pytest.raises(FormatError, match="GGUF version 1"):  # a big-endian v1 too
        read_gguf(write(tmp_path, build(version=1, o=">")))
    with pytest.raises(FormatError, match="unknown GGUF version .*: 99 little-endian"):
        read_gguf(write(tmp_path, build(version=99)))
    with pytest.raises(FormatError, match="not a GGUF file"):
        read_gguf(write(tmp_path, b"GGML" + build()[4:]))
    with pytest.raises(FormatError, match="reading the magic: expected 4 bytes, got 0"):
        read_gguf(write(tmp_path, b""))


def test_zero_dim_and_empty_tensors(tmp_path):
    tensors, _ = read_gguf(write(tmp_path, build(tensors=[
        ("scalar", (), "F64", struct.pack("<d", 2.5), None),
        ("empty", (0, 3), "F32", b"", None),
        ("last", (2,), "I8", b"\x05\xfb", None),
    ])))  # fmt: skip
    assert tensors["scalar"].shape == () and tensors["scalar"][()] == 2.5
    assert tensors["empty"].shape == (3, 0) and tensors["empty"].dtype == np.float32
    assert tensors["last"].tolist() == [5, -5]


def test_arrays_are_fresh_writeable_memory_not_a_map_of_the_file(tmp_path):
    path = write(tmp_path, small_file())
    tensors, _ = read_gguf(path)
    os.remove(path)
    for array in tensors.values():
        assert array.flags.writeable and array.flags.c_contiguous
        base = array
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        assert not isinstance(base, (np.memmap, memoryview, bytes))
    tensors["a"][0, 0] = 42.0


def test_tensor_infos_give_type_shape_size_and_absolute_offset(tmp_path):
    content = small_file()
    infos = tensor_infos(write(tmp_path, content))
    assert infos["a"] == TensorInfo("F32", "float32", (2, 3), 24, infos["a"].offset)
    assert infos["b"] == TensorInfo("I16", "int16", (3,), 6, infos["a"].offset + 32)
    assert infos["a"].offset % 32 == 0
    assert content[infos["b"].offset : infos["b"].offset + 6] == np.array([-1, 2, -3], "<i2").tobytes()


def test_quantized_tensor_is_listed_but_refused_with_its_type(tmp_path):
    blocks = os.urandom(2 * 144)  # two Q4_K blocks of 256 elements each
    path = write(tmp_path, build(tensors=[("ok", (2,), "F32", b"\0" * 8, None),
                                          ("blk.0.attn_q.weight", (256, 2), "Q4_K", blocks, None)]))  # fmt: skip
    info = tensor_infos(path)["blk.0.attn_q.weight"]
    assert (info.type_name, info.dtype, info.shape, info.nbytes) == ("Q4_K", None, (2, 256), 288)
    with pytest.raises(UnsupportedTypeError) as err:
        read_gguf(path)
    assert str(err.value) == (
        f"{path}: tensor 'blk.0.attn_q.weight' has type Q4_K (quantized); only F32, F16, BF16, F64 and integer "
        "tensors can be read (tensorfile.formats.gguf.tensor_infos lists every tensor)"
    )


@pytest.mark.parametrize("type_id", [4, 31, 99, 2**32 - 1])
def test_unknown_ggml_type_id_is_named_by_number(tmp_path, type_id):
    path = write(tmp_path, build(tensors=[("w", (4,), type_id, b"\0" * 16, None)]))
    with pytest.raises(UnsupportedTypeError, match=f"tensor 0 'w' has unknown ggml type {type_id}"):
        read_gguf(path)


def test_truncation_at_every_byte_is_a_format_error_fast(tmp_path):
    content = small_file()
    path = tmp_path / "cut.gguf"
    slowest = 0.0
    end = tensor_infos(write(tmp_path, content))["b"].offset + 6
    for cut in range(end):  # past the last tensor's bytes only its padding is missing
        path.write_bytes(content[:cut])
        start = time.process_time()  # CPU time: a busy machine does not stretch it
        with pytest.raises(FormatError, match="expected"):
            read_gguf(str(path))
        slowest = max(slowest, time.process_time() - start)
    assert slowest < 0.1
    offset = end - 6
    path.write_bytes(content[: offset + 4])  # inside tensor b's data
    with pytest.raises(FormatError) as err:
        read_gguf(str(path))
    assert str(err.value) == (
        f"{path}: reading tensor 1 'b' data: expected 6 bytes at offset {offset}, got 4 "
        f"(the file has {offset + 4} bytes)"
    )


HUGE = 2**63


def tensor(name, dims, type_name, nbytes, offset=None):
    return (name, dims, type_name, b"\0" * nbytes, offset)


def nested(depth: int):
    value = (U8, [])
    for _ in range(depth):
        value = (ARRAY, [value])
    return value


HOSTILE = {
    "tensor count": (build(n_tensors=HUGE), "the tensor count is 9223372036854775808: expected at least 22136"),
    "kv count": (build(n_kv=2**40), "the key/value count is 1099511627776"),
    "key length": (head() + struct.pack("<Q", HUGE) + b"k" * 40, "reading key 0: expected 9223372036854775808 bytes"),
    "string value length": (
        head() + enc(STRING, "s") + struct.pack("<IQ", STRING, 2**62) + b"x" * 64,
        "reading key 0 's' value: expected 4611686018427387904 bytes",
    ),
    "array length": (
        head() + enc(STRING, "a") + struct.pack("<IIQ", ARRAY, U8, 2**60) + b"\0" * 64,
        "key 0 'a' value length is 1152921504606846976",
    ),
    "string array length": (
        head() + enc(STRING, "a") + struct.pack("<IIQ", ARRAY, STRING, 2**40) + b"\0" * 64,
        r"key 0 'a' value length is 1099511627776: expected at least 8796093022208 bytes for them, got 64",
    ),
    "nested array length": (
        head() + enc(STRING, "a") + struct.pack("<IIQIQ", ARRAY, ARRAY, 1, U8, 2**40) + b"\0" * 64,
        r"key 0 'a' value\[0\] length is 1099511627776",
    ),
    "n_dims": (
        head(n_tensors=1, n_kv=0) + enc(STRING, "t") + struct.pack("<I", 2**32 - 1) + b"\0" * 64,
        "has 4294967295 dims",
    ),
    "5 dims": (build(tensors=[tensor("t", (1, 1, 1, 1, 1), "F32", 4)]), r"has 5 dims \(ggml allows at most 4\)"),
    "dims product": (build(tensors=[tensor("t", (HUGE, HUGE, 2, 2), "F32", 64)]), r"dims \[9223372036854775808, 92"),
    "dims with a 0": (build(tensors=[tensor("t", (0, 2**64 - 1), "F32", 0)]), r"dims \[0, 18446744073709551615\] are too large"),
    "big dims": (build(tensors=[tensor("t", (2**40, 2**40, 0), "F32", 0)]), "are too large"),
    "data past EOF": (build(tensors=[tensor("t", (2**40,), "F32", 64)]), "reading tensor 0 't' data: expected 439804651"),
    "offset past EOF": (build(tensors=[tensor("t", (4,), "F32", 16, 2**40)]), "reading tensor 0 't' data: expected 16"),
    "misaligned offset": (build(tensors=[tensor("t", (1,), "F32", 4, 4)]), "offset 4 is not a multiple of the alignm"),
    "overlap": (build(tensors=[tensor("a", (16,), "F32", 64), tensor("b", (8,), "F32", 32, 32)]), "'a' and 'b' overl"),
    "same bytes twice": (build(tensors=[tensor("a", (8,), "F32", 32, 0), tensor("b", (8,), "F32", 32, 0)]), "overlap"),
    "duplicate tensor": (build(tensors=[tensor("a", (1,), "F32", 4)] * 2), "tensor name 'a' appears twice"),
    "duplicate key": (build([("k", U8, 1), ("k", U8, 2)]), "key 'k' appears twice"),
    "bool byte": (head() + enc(STRING, "b") + struct.pack("<IB", BOOL, 2) + b"\0" * 8, "a bool byte that is not 0 or"),
    "value type": (head() + enc(STRING, "k") + struct.pack("<I", 13) + b"\0" * 8, "unknown value type 13"),
    "element type": (
        head() + enc(STRING, "a") + struct.pack("<IIQ", ARRAY, 13, 1) + b"\0" * 8,
        "unknown array element type 13",
    ),
    "deep nesting": (build([("a", ARRAY, nested(8))]), "arrays nested more than 8 deep"),
    "alignment 0": (build([("general.alignment", U32, 0)]), "general.alignment is 0; expected a power of two from 1 to"),
    "alignment 48": (build([("general.alignment", U32, 48)]), "general.alignment is 48"),
    "alignment string": (build([("general.alignment", STRING, "32")]), "general.alignment is '32'"),
    "alignment bool": (build([("general.alignment", BOOL, True)]), "general.alignment is True"),
    "key not UTF-8": (build([(b"\xff\xfe", U8, 1)]), r"key 0 is not UTF-8: b'\\xff\\xfe'"),
    "block size": (build(tensors=[tensor("q", (33,), "Q8_0", 68)]), "ne.0. = 33 is not a multiple of the Q8_0 block"),
    "alignment 2**63": (build([("general.alignment", U64, 2**63)], [tensor("t", (0,), "F32", 0)]), "general.alignment is 9223"),
    "empty tensor far away": (build(tensors=[tensor("t", (0,), "F32", 0, 2**64 - 32)]), "reading tensor 0 't' data: expected 0"),
    "numpy-sized dims": (build(tensors=[tensor("t", (0, 2**63 - 1), "F32", 0)]), "are too large"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_are_refused_without_big_allocation(tmp_path, case):
    content, message = HOSTILE[case]
    path = write(tmp_path, content)
    start = time.perf_counter()
    with pytest.raises(FormatError, match=message):
        read_gguf(path)
    assert time.perf_counter() - start < 0.5
    assert peak_bytes(lambda: read_gguf(path)) < 4 << 20  # the 1 MiB read buffer and little else
    with pytest.raises(FormatError, match=message):
        tensor_infos(path)


def test_header_over_the_limit_is_refused(tmp_path, monkeypatch):
    path = write(tmp_path, build([("tokens", ARRAY, (STRING, ["tok"] * 1000))]))
    monkeypatch.setattr(reader, "MAX_HEADER", 4096)
    with pytest.raises(FormatError, match="the header passes 4096 bytes, the limit"):
        read_gguf(path)
    monkeypatch.setattr(reader, "MAX_HEADER", 1 << 20)
    assert read_gguf(path)[1]["tokens"] == ["tok"] * 1000


def test_string_values_that_are_not_utf8_decode_with_replacement(tmp_path):
    _, metadata = read_gguf(write(tmp_path, build([("s", STRING, b"ok\xff"), ("a", ARRAY, (STRING, [b"\xc3"]))])))
    assert metadata == {"s": "ok\ufffd", "a": ["\ufffd"]}


def test_custom_alignment_by_hand(tmp_path):
    tensors = [("a", (3,), "I8", b"\1\2\3", None), ("b", (1,), "F32", b"\0\0\x80\x3f", None)]
    content = build([("general.alignment", U8, 8)], tensors, alignment=8)
    path = write(tmp_path, content)
    header = read_header(path)
    assert header.alignment == 8 and header.tensors["b"].offset - header.tensors["a"].offset == 8
    tensors, _ = read_gguf(path)
    assert tensors["a"].tolist() == [1, 2, 3] and tensors["b"].tolist() == [1.0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hnp.arrays(st.sampled_from(["<f4", "<i4", "<i8", "<i1", "<f2"]),
                           hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)), max_size=4),
       st.sampled_from(["<", ">"]))  # fmt: skip
def test_hand_built_round_trip_hypothesis(arrays, o):
    names = {"F32": "float32", "I32": "int32", "I64": "int64", "I8": "int8", "F16": "float16"}
    by_dtype = {v: k for k, v in names.items()}
    tensors = [(f"t{i}", a.shape[::-1], by_dtype[a.dtype.name], a.astype(a.dtype.newbyteorder(o)).tobytes(), None)
               for i, a in enumerate(arrays)]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "h.gguf")
        with open(path, "wb") as f:
            f.write(build(tensors=tensors, o=o))
        got, _ = read_gguf(path)
    assert list(got) == [f"t{i}" for i in range(len(arrays))]
    for a, b in zip(arrays, got.values()):
        assert b.dtype == a.dtype and b.shape == a.shape and b.tobytes() == a.tobytes()


# ---------------------------------------------------------------- against llama.cpp's writer (gguf-py)

UNQUANTIZED = ["float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64"]
SHAPES = [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2)]


def gguf_write(path, tensors=None, *, kv=None, alignment=None, big_endian=False):
    """Write with gguf.GGUFWriter: name -> array (bfloat16 goes in as raw BF16 bits); kv(writer) adds metadata."""
    endian = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endian)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    if kv is not None:
        kv(writer)
    for name, array in (tensors or {}).items():
        if array.dtype == ml_dtypes.bfloat16:
            writer.add_tensor(name, array.view(np.uint16), raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def sample(dtype_name: str, shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype_name.startswith("int"):
        info = np.iinfo(dtype_name)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype_name, endpoint=True)
    dtype = np.dtype(ml_dtypes.bfloat16) if dtype_name == "bfloat16" else np.dtype(dtype_name)
    values = rng.standard_normal(shape).astype(dtype)
    values.reshape(-1)[:3] = np.array([np.inf, -0.0, np.nan], np.float32).astype(dtype)[: values.size]
    return values


@oracle
def test_type_table_matches_gguf_py():
    for qtype in gguf.GGMLQuantizationType:
        name, block, block_bytes, _ = GGML_TYPES[qtype.value]
        assert name == qtype.name
        if qtype.name == "Q8_1":  # ggml's block_q8_1 is 2 halves + 32 quants = 36; gguf-py still says 4 + 4 + 32
            assert (block, block_bytes) == (32, 36)
        else:
            assert (block, block_bytes) == gguf.GGML_QUANT_SIZES[qtype]
    assert set(GGML_TYPES) == {q.value for q in gguf.GGMLQuantizationType}


@oracle
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype_name", UNQUANTIZED)
def test_every_unquantized_type_round_trips(tmp_path, dtype_name, shape):
    arrays = {"first": sample(dtype_name, shape), "second.weight": sample(dtype_name, shape[::-1], seed=1)}
    path = gguf_write(tmp_path / "t.gguf", arrays)
    tensors, metadata = read_gguf(path)
    assert metadata == {"general.architecture": "llama"}
    assert list(tensors) == list(arrays)
    for name, expected in arrays.items():
        got = tensors[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()  # NaN, inf and -0.0 bit for bit
    infos = tensor_infos(path)
    floats = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
    type_name = floats.get(dtype_name, f"I{np.dtype(dtype_name).itemsize * 8}")
    assert infos["first"].type_name == type_name and infos["first"].dtype == dtype_name
    oracle_reader = gguf.GGUFReader(path)  # llama.cpp's own reader agrees on where the data lie
    for t in oracle_reader.tensors:
        assert infos[t.name].offset == t.data_offset and infos[t.name].nbytes == t.n_bytes


@oracle
def test_every_metadata_value_type_round_trips(tmp_path):
    V = gguf.GGUFValueType

    def kv(w):
        w.add_uint8("t.u8", 200)
        w.add_int8("t.i8", -100)
        w.add_uint16("t.u16", 60000)
        w.add_int16("t.i16", -30000)
        w.add_uint32("t.u32", 4_000_000_000)
        w.add_int32("t.i32", -2_000_000_000)
        w.add_float32("t.f32", 0.1)
        w.add_uint64("t.u64", 2**64 - 1)
        w.add_int64("t.i64", -(2**63))
        w.add_float64("t.f64", 0.1)
        w.add_bool("t.true", True)
        w.add_bool("t.false", False)
        w.add_string("t.str", "llama 🦙 ü")
        w.add_array("t.ints", [1, -2, 3])
        w.add_array("t.floats", [0.5, 1.5])
        w.add_array("t.bools", [True, False, True])
        w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "▁the", "é"])
        w.add_array("t.nested", [[1, 2], [3]])
        w.add_array("t.nested_str", [["a", "b"], ["c"]])
        for vtype, values in [(V.UINT8, [0, 255]), (V.INT8, [-128, 127]), (V.UINT16, [65535]), (V.INT16, [-32768]),
                              (V.UINT32, [2**32 - 1]), (V.INT32, [-(2**31)]), (V.UINT64, [2**64 - 1]),
                              (V.INT64, [-(2**63), 2**63 - 1]), (V.FLOAT64, [1e-300, 2.0])]:  # fmt: skip
            w.add_key_value(f"t.a_{vtype.name.lower()}", values, V.ARRAY, sub_type=vtype)

    path = gguf_write(tmp_path / "m.gguf", {"w": np.ones(3, np.float32)}, kv=kv)
    _, metadata = read_gguf(path)
    assert metadata == {
        "general.architecture": "llama",
        "t.u8": 200, "t.i8": -100, "t.u16": 60000, "t.i16": -30000, "t.u32": 4_000_000_000, "t.i32": -2_000_000_000,
        "t.f32": float(np.float32(0.1)), "t.u64": 2**64 - 1, "t.i64": -(2**63), "t.f64": 0.1,
        "t.true": True, "t.false": False, "t.str": "llama 🦙 ü",
        "t.ints": [1, -2, 3], "t.floats": [0.5, 1.5], "t.bools": [True, False, True],
        "tokenizer.ggml.tokens": ["<s>", "</s>", "▁the", "é"],
        "t.nested": [[1, 2], [3]], "t.nested_str": [["a", "b"], ["c"]],
        "t.a_uint8": [0, 255], "t.a_int8": [-128, 127], "t.a_uint16": [65535], "t.a_int16": [-32768],
        "t.a_uint32": [2**32 - 1], "t.a_int32": [-(2**31)], "t.a_uint64": [2**64 - 1],
        "t.a_int64": [-(2**63), 2**63 - 1], "t.a_float64": [1e-300, 2.0],
    }  # fmt: skip
    fields = gguf.GGUFReader(path).fields  # llama.cpp's reader sees the same keys, in the same order
    assert list(fields) == ["GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", *metadata]
    assert fields["tokenizer.ggml.tokens"].contents() == metadata["tokenizer.ggml.tokens"]


@oracle
@pytest.mark.parametrize("alignment", [1, 8, 64, 4096])
def test_custom_alignment(tmp_path, alignment):
    arrays = {"a": np.arange(3, dtype=np.int8), "b": np.arange(5, dtype=np.float32), "c": np.arange(2, dtype=np.int64)}
    path = gguf_write(tmp_path / "a.gguf", arrays, alignment=alignment)
    header = read_header(path)
    assert header.alignment == alignment and header.metadata["general.alignment"] == alignment
    assert all(info.offset % alignment == 0 for info in header.tensors.values())
    tensors, _ = read_gguf(path)
    for name, expected in arrays.items():
        assert tensors[name].dtype == expected.dtype and tensors[name].tolist() == expected.tolist()


@oracle
def test_big_endian_file_from_gguf_py(tmp_path):
    arrays = {name: sample(name, (2, 3)) for name in ["float32", "float16", "float64", "int16", "int32", "int64"]}
    path = gguf_write(tmp_path / "be.gguf", arrays, big_endian=True,
                      kv=lambda w: (w.add_uint32("n", 7), w.add_array("xs", [1.5, 2.5])))  # fmt: skip
    tensors, metadata = read_gguf(path)
    assert read_header(path).big_endian
    assert metadata == {"general.architecture": "llama", "n": 7, "xs": [1.5, 2.5]}
    for name, expected in arrays.items():
        assert tensors[name].dtype == expected.dtype and tensors[name].dtype.isnative
        assert tensors[name].tobytes() == expected.tobytes()


@oracle
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q6_K", "MXFP4"])
def test_quantized_tensor_from_gguf_py_raises_naming_the_type(tmp_path, qtype):
    qt = gguf.GGMLQuantizationType[qtype]
    block, block_bytes = gguf.GGML_QUANT_SIZES[qt]
    raw = np.random.default_rng(0).integers(0, 255, size=(3, 2 * block_bytes), dtype=np.uint8)
    writer = gguf.GGUFWriter(str(tmp_path / "q.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.ones((2, 4), np.float32))
    writer.add_tensor("blk.0.attn_q.weight", raw, raw_dtype=qt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    path = str(tmp_path / "q.gguf")
    with pytest.raises(UnsupportedTypeError, match=f"tensor 'blk.0.attn_q.weight' has type {qtype} \\(quantized\\)"):
        read_gguf(path)
    info = tensor_infos(path)["blk.0.attn_q.weight"]
    assert (info.type_name, info.dtype, info.shape, info.nbytes) == (qtype, None, (3, 2 * block), raw.nbytes)
    with open(path, "rb") as f:
        f.seek(info.offset)
        assert f.read(info.nbytes) == raw.tobytes()  # the offset a lazy reader would use


@oracle
def test_truncated_gguf_py_file_at_many_cut_points(tmp_path):
    path = gguf_write(tmp_path / "full.gguf", {"a": np.arange(40, dtype=np.float32), "b": np.arange(9, dtype=np.int64)},
                      kv=lambda w: (w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(50)]),
                                    w.add_string("general.name", "x")))  # fmt: skip
    content = open(path, "rb").read()
    cut_path = tmp_path / "cut.gguf"
    header_end = min(info.offset for info in tensor_infos(path).values())
    data_end = tensor_infos(path)["b"].offset + 72
    cuts = list(range(0, header_end)) + list(range(header_end, data_end, 7)) + [data_end - 1]
    start = time.perf_counter()
    for cut in cuts:
        cut_path.write_bytes(content[:cut])
        with pytest.raises(FormatError, match=r"expected (at least )?\d+ bytes"):
            read_gguf(str(cut_path))
    assert (time.perf_counter() - start) / len(cuts) < 0.05
    cut_path.write_bytes(content[:data_end])  # only the final padding is missing: still readable
    assert read_gguf(str(cut_path))[0]["b"].tolist() == list(range(9))


@oracle
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz._", min_size=1, max_size=12),
                       hnp.arrays(st.sampled_from(["float32", "int8", "int16", "int32", "int64"]),
                                  hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6)),
                       max_size=5))  # fmt: skip
def test_round_trip_random_arrays_through_gguf_py(arrays):
    with tempfile.TemporaryDirectory() as folder:
        path = gguf_write(os.path.join(folder, "r.gguf"), arrays)
        tensors, _ = read_gguf(path)
    assert list(tensors) == list(arrays)
    for name, expected in arrays.items():
        got = tensors[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape and got.tobytes() == expected.tobytes()


def test_headers_of_many_tiny_items_are_refused_quickly(tmp_path, monkeypatch):
    """Counts under the byte limit but costly as Python objects: tensors, keys and values are capped."""
    monkeypatch.setattr(reader, "MAX_TENSORS", 10)
    monkeypatch.setattr(reader, "MAX_KEYS", 10)
    monkeypatch.setattr(reader, "MAX_ITEMS", 100)
    with pytest.raises(FormatError, match="11 tensors .at most 10"):
        read_gguf(write(tmp_path, build(tensors=[tensor(f"t{i}", (0,), "F32", 0) for i in range(11)])))
    with pytest.raises(FormatError, match="11 metadata keys .at most 10"):
        read_gguf(write(tmp_path, build([(f"k{i}", U8, 1) for i in range(11)])))
    with pytest.raises(FormatError, match="more than 100 metadata values"):
        read_gguf(write(tmp_path, build([("tokens", ARRAY, (STRING, ["a"] * 101))])))
    with pytest.raises(FormatError, match="more than 100 metadata values"):
        read_gguf(write(tmp_path, build([("scores", ARRAY, (U8, [0] * 801))])))  # numbers count 1 per 8
    assert len(read_gguf(write(tmp_path, build([("scores", ARRAY, (U8, [0] * 800))])))[1]["scores"]) == 800
