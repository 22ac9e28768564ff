"""GGUF files (llama.cpp, ggml): metadata and unquantized tensors, read without ggml.

Reference: ggml-org/ggml ``docs/gguf.md`` (the checks follow ``src/gguf.cpp``). Versions 2 and 3; every
number little-endian, or big-endian in a file written for a big-endian machine (its version then reads
byte-swapped: ``0x03000000``), which is read too::

    b"GGUF"  u32 version  u64 tensor count  u64 key/value count
    key/value x count:   string key, u32 value type, value
    tensor info x count: string name, u32 n_dims, u64 x n_dims dims, u32 ggml type, u64 offset
    zero padding to the alignment, then the tensor data (each tensor padded to the alignment)

A string is a u64 byte length and UTF-8 bytes, no NUL. Value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32,
5 i32, 6 f32, 7 bool (one byte, 0 or 1), 8 string, 9 array, 10 u64, 11 i64, 12 f64. An array is a u32
element type, a u64 count and the elements; an element of an array of arrays is again type, count,
elements. Dims are in ggml order: ``ne[0]`` varies fastest, so the NumPy shape is the dims reversed.
Offsets count from the start of the data section, which begins at the first multiple of the alignment
after the tensor infos; the alignment is ``general.alignment`` (an integer, a nonzero power of two),
else 32. Version 1 (u32 counts and lengths, 2023) is refused.

What a reader enforces here:

- the header (magic to the last tensor info) is at most :data:`MAX_HEADER` bytes and is read piece by
  piece, never whole; every count and length is checked against the bytes left (the smallest encoding
  of that many items) before anything is allocated; arrays nest at most :data:`MAX_NESTING` deep;
- keys and tensor names are UTF-8 and unique; string values that are not UTF-8 decode with U+FFFD;
- a bool is 0 or 1; a value type or an array element type is one of the thirteen above;
- a tensor has at most :data:`MAX_DIMS` (ggml's ``GGML_MAX_DIMS``) dims; a block-quantized tensor's
  ``ne[0]`` is a multiple of its block size;
- every offset is a multiple of the alignment; every tensor's bytes lie inside the file, and no two
  tensors share a byte (so all the tensors together never need more memory than the file's size);
- an unknown ggml type id raises :class:`UnsupportedTypeError` with the number (its size is unknown).

Metadata values become plain Python values: int, float, bool, str, and lists (of lists) of them.
:func:`read_gguf` reads F32, F16, BF16, F64, I8, I16, I32 and I64 tensors into fresh C-order arrays of
the machine's byte order and refuses a file holding any quantized tensor (Q4_0 ... Q8_K, IQ*, TQ*,
MXFP4, ...) with :class:`UnsupportedTypeError`; :func:`read_header` and :func:`tensor_infos` describe
every tensor, quantized ones included, without reading tensor data.
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from ..errors import FormatError, UnsupportedTypeError
from ..format.dtypes import dtype_from_name
from ..format.memory import empty_bytes
from ..limits import DEFAULT_LIMITS, Budget
from ..tree import short
from .base import Format

__all__ = [
    "MAGIC",
    "MAX_HEADER",
    "MAX_DIMS",
    "MAX_NESTING",
    "GGML_TYPES",
    "TensorInfo",
    "GGUFHeader",
    "read_header",
    "tensor_infos",
    "read_gguf",
]

MAGIC = b"GGUF"
#: Largest header (magic to the end of the tensor infos) read, in bytes. Real files hold a few MB
#: (a 150k-token vocabulary is about 6 MB); a header is held as Python objects, up to ~9x its size.
MAX_HEADER = 64 << 20
#: Most dims a tensor may have (ggml's ``GGML_MAX_DIMS``).
MAX_DIMS = 4
#: Deepest nesting of metadata arrays (arrays of arrays ...).
MAX_NESTING = 8
DEFAULT_ALIGNMENT = 32
#: Largest ``general.alignment`` accepted (real files use 32 to 4096).
MAX_ALIGNMENT = 1 << 20
#: Most tensors, metadata keys, and metadata values held as Python objects (strings and nested arrays;
#: numbers in arrays count once per ``NUMBERS_PER_ITEM``), so that a header of tiny items cannot cost
#: minutes or gigabytes. Real files hold a few thousand tensors and a vocabulary of up to ~500k strings.
MAX_TENSORS = 1 << 16
MAX_KEYS = 1 << 16
MAX_ITEMS = 1 << 21
NUMBERS_PER_ITEM = 8

#: ggml type id -> (name, elements per block, bytes per block, NumPy dtype name or None when quantized).
#: From ggml ``include/ggml.h`` (``enum ggml_type``) and ``src/ggml.c`` (``type_traits``); ids 4, 5,
#: 31-33 and 36-38 were removed from ggml and are unknown here.
GGML_TYPES: dict[int, tuple[str, int, int, str | None]] = {
    0: ("F32", 1, 4, "float32"), 1: ("F16", 1, 2, "float16"),
    2: ("Q4_0", 32, 18, None), 3: ("Q4_1", 32, 20, None), 6: ("Q5_0", 32, 22, None), 7: ("Q5_1", 32, 24, None),
    8: ("Q8_0", 32, 34, None), 9: ("Q8_1", 32, 36, None),
    10: ("Q2_K", 256, 84, None), 11: ("Q3_K", 256, 110, None), 12: ("Q4_K", 256, 144, None),
    13: ("Q5_K", 256, 176, None), 14: ("Q6_K", 256, 210, None), 15: ("Q8_K", 256, 292, None),
    16: ("IQ2_XXS", 256, 66, None), 17: ("IQ2_XS", 256, 74, None), 18: ("IQ3_XXS", 256, 98, None),
    19: ("IQ1_S", 256, 50, None), 20: ("IQ4_NL", 32, 18, None), 21: ("IQ3_S", 256, 110, None),
    22: ("IQ2_S", 256, 82, None), 23: ("IQ4_XS", 256, 136, None),
    24: ("I8", 1, 1, "int8"), 25: ("I16", 1, 2, "int16"), 26: ("I32", 1, 4, "int32"), 27: ("I64", 1, 8, "int64"),
    28: ("F64", 1, 8, "float64"), 29: ("IQ1_M", 256, 56, None), 30: ("BF16", 1, 2, "bfloat16"),
    34: ("TQ1_0", 256, 54, None), 35: ("TQ2_0", 256, 66, None),
    39: ("MXFP4", 32, 17, None), 40: ("NVFP4", 64, 36, None), 41: ("Q1_0", 128, 18, None),
}  # fmt: skip

# metadata value types: id -> struct code (scalars), and the three others
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 10: "Q", 11: "q", 12: "d"}
_BOOL, _STRING, _ARRAY = 7, 8, 9
_INTEGERS = {0, 1, 2, 3, 4, 5, 10, 11}
#: smallest encoding of one value of each type, in bytes (string: its length; array: type and count)
#: Bytes a metadata value costs held as a Python object in a list (an int or float and its slot), charged to the budget.
_PYTHON_BYTES = 48
_MIN_SIZE = {t: struct.calcsize("<" + c) for t, c in _SCALARS.items()} | {_BOOL: 1, _STRING: 8, _ARRAY: 12}
_MIN_KV = 8 + 4 + 1  # key length, value type, a one-byte value
_MIN_TENSOR_INFO = 8 + 4 + 4 + 8  # name length, n_dims, type, offset


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor of a GGUF file lies, read from its header.

    Attributes:
        type_name: the ggml type, e.g. ``"F32"``, ``"BF16"``, ``"Q4_K"``.
        dtype: the NumPy dtype name (``"float32"``, ``"bfloat16"``, ...), or None for a quantized type.
        shape: the NumPy shape (the ggml dims reversed).
        nbytes: the size of the tensor's data, in bytes.
        offset: where the data starts, in bytes from the start of the file (a multiple of the alignment).
    """

    type_name: str
    dtype: str | None
    shape: tuple[int, ...]
    nbytes: int
    offset: int


@dataclass(frozen=True)
class GGUFHeader:
    """Everything a GGUF file says before its tensor data.

    Attributes:
        version: 2 or 3.
        big_endian: numbers (and tensor data) are big-endian.
        alignment: of the data section and of every tensor, in bytes.
        metadata: key -> plain Python value, in file order.
        tensors: name -> :class:`TensorInfo`, in file order.
    """

    version: int
    big_endian: bool
    alignment: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]


class _Reader:
    """Reads the header piece by piece, each read checked against the file size and :data:`MAX_HEADER`."""

    def __init__(self, f: IO[bytes], path: str, size: int, budget: Budget) -> None:
        self.f, self.path, self.size, self.pos, self.order = f, path, size, 0, "<"
        self.items, self.budget = 0, budget

    def spend(self, n: int, what: str) -> None:
        """Count ``n`` more metadata values held in memory; past :data:`MAX_ITEMS` the file is refused."""
        self.items += n
        if self.items > MAX_ITEMS:
            raise FormatError(f"{self.path}: reading {what}: more than {MAX_ITEMS} metadata values (the limit)")

    def left(self) -> int:
        return min(self.size, MAX_HEADER) - self.pos

    def over_limit(self, what: str) -> FormatError:
        return FormatError(
            f"{self.path}: reading {what}: the header passes {MAX_HEADER} bytes, the limit "
            f"(raise tensorfile.formats.gguf.MAX_HEADER to read it)"
        )

    def take(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise FormatError(f"{self.path}: reading {what}: expected {n} bytes, got {self.size - self.pos}")
        if n > self.left():
            raise self.over_limit(what)
        data = self.f.read(n)
        if len(data) != n:  # the file shrank while being read
            raise FormatError(f"{self.path}: reading {what}: expected {n} bytes, got {len(data)}")
        self.pos += n
        return data

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        fmt = self.order + fmt
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def u32(self, what: str) -> int:
        return int(self.unpack("I", what)[0])

    def u64(self, what: str) -> int:
        return int(self.unpack("Q", what)[0])

    def count(self, item_size: int, what: str) -> int:
        """A u64 count of items of at least ``item_size`` bytes each, checked against the bytes left."""
        n = self.u64(what)
        if n * item_size > self.size - self.pos:
            raise FormatError(
                f"{self.path}: {what} is {n}: expected at least {n * item_size} bytes for them, "
                f"got {self.size - self.pos} (the rest of the file)"
            )
        if n * item_size > self.left():
            raise self.over_limit(what)
        return n

    def string(self, what: str, strict: bool = False) -> str:
        n = self.u64(f"{what} length")
        raw = self.take(n, what)  # checked against the file first
        if n > 64:  # short strings are charged with the array that holds them
            self.budget.charge(n + _PYTHON_BYTES, what)
        try:
            return raw.decode("utf-8", "strict" if strict else "replace")
        except UnicodeDecodeError:
            raise FormatError(f"{self.path}: {what} is not UTF-8: {raw[:80]!r}") from None


def _value(r: _Reader, vtype: int, what: str, depth: int = 0) -> Any:
    if vtype in _SCALARS:
        return r.unpack(_SCALARS[vtype], what)[0]
    if vtype == _BOOL:
        return _bools(r, 1, what)[0]
    if vtype == _STRING:
        return r.string(what)
    if vtype != _ARRAY:
        raise FormatError(f"{r.path}: {what}: unknown value type {vtype} (expected 0 to 12)")
    if depth >= MAX_NESTING:
        raise FormatError(f"{r.path}: {what}: arrays nested more than {MAX_NESTING} deep")
    etype = r.u32(f"{what} element type")
    if etype not in _MIN_SIZE:
        raise FormatError(f"{r.path}: {what}: unknown array element type {etype} (expected 0 to 12)")
    n = r.count(_MIN_SIZE[etype], f"{what} length")
    r.spend(-(-n // NUMBERS_PER_ITEM) if etype in _SCALARS or etype == _BOOL else n, what)
    r.budget.charge(n * _PYTHON_BYTES, f"{what}: {n} values held as Python objects")
    if etype in _SCALARS:
        raw = r.take(n * _MIN_SIZE[etype], what)
        return np.frombuffer(raw, np.dtype(r.order + _SCALARS[etype]), n).tolist()
    if etype == _BOOL:
        return _bools(r, n, what)
    return [_value(r, etype, f"{what}[{i}]", depth + 1) for i in range(n)]


def _bools(r: _Reader, n: int, what: str) -> list[bool]:
    raw = r.take(n, what)
    if raw.translate(None, b"\x00\x01"):
        raise FormatError(f"{r.path}: {what}: a bool byte that is not 0 or 1")
    return [b == 1 for b in raw]


def _version(r: _Reader) -> int:
    if r.take(4, "the magic") != MAGIC:
        raise FormatError(f"{r.path}: not a GGUF file (it does not start with b'GGUF')")
    raw = r.take(4, "the version")
    (version,) = struct.unpack("<I", raw)
    if version & 0xFFFF == 0 and version:  # written big-endian: the version reads byte-swapped
        r.order = ">"
        (version,) = struct.unpack(">I", raw)
    if version == 1:
        raise FormatError(f"{r.path}: GGUF version 1 (u32 counts, 2023) is not supported; versions 2 and 3 are")
    if version not in (2, 3):
        raise FormatError(
            f"{r.path}: unknown GGUF version (bytes {raw.hex()}: {struct.unpack('<I', raw)[0]} little-endian, "
            f"{struct.unpack('>I', raw)[0]} big-endian); versions 2 and 3 are read"
        )
    return version


def _metadata(r: _Reader) -> tuple[dict[str, Any], dict[str, int]]:
    """Key -> value and key -> value type, in file order."""
    count = r.count(_MIN_KV, "the key/value count")
    if count > MAX_KEYS:
        raise FormatError(f"{r.path}: {count} metadata keys (at most {MAX_KEYS} are read)")
    metadata: dict[str, Any] = {}
    types: dict[str, int] = {}
    for i in range(count):
        key = r.string(f"key {i}", strict=True)
        if key in metadata:
            raise FormatError(f"{r.path}: key {key!r} appears twice")
        types[key] = r.u32(f"key {i} {key!r} type")
        metadata[key] = _value(r, types[key], f"key {i} {key!r} value")
    return metadata, types


def _alignment(metadata: dict[str, Any], types: dict[str, int], path: str) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if types["general.alignment"] not in _INTEGERS or value <= 0 or value & (value - 1) or value > MAX_ALIGNMENT:
        raise FormatError(
            f"{path}: general.alignment is {short(value)}; expected a power of two from 1 to {MAX_ALIGNMENT} (an integer)"
        )
    return int(value)


def _tensor_info(r: _Reader, index: int) -> tuple[str, tuple[int, ...], int, int]:
    name = r.string(f"tensor {index} name", strict=True)
    what = f"tensor {index} {name!r}"
    n_dims = r.u32(f"{what} n_dims")
    if n_dims > MAX_DIMS:
        raise FormatError(f"{r.path}: {what} has {n_dims} dims (ggml allows at most {MAX_DIMS})")
    dims = r.unpack(f"{n_dims}Q", f"{what} dims")
    type_id = r.u32(f"{what} type")
    offset = r.u64(f"{what} offset")
    return name, tuple(int(d) for d in dims), type_id, offset


def _nbytes(path: str, index: int, name: str, dims: tuple[int, ...], type_id: int) -> int:
    """Check a tensor's type and dims (as ``gguf.cpp`` does); return the size of its data in bytes."""
    what = f"tensor {index} {name!r}"
    if type_id not in GGML_TYPES:
        raise UnsupportedTypeError(f"{path}: {what} has unknown ggml type {type_id} (a newer ggml, or a corrupt file)")
    type_name, block, block_bytes, _ = GGML_TYPES[type_id]
    count = nonzero = 1
    for d in dims:
        count, nonzero = count * d, nonzero * max(d, 1)  # Python ints: no overflow while checking
    if nonzero >= 1 << 59:  # NumPy refuses shapes whose nonzero dims multiply past 2**63 bytes
        raise FormatError(f"{path}: {what}: dims {list(dims)} are too large (their product passes 2**59)")
    if dims and dims[0] % block:
        raise FormatError(f"{path}: {what}: ne[0] = {dims[0]} is not a multiple of the {type_name} block size {block}")
    return count // block * block_bytes  # checked against the file by the caller


def _parse(f: IO[bytes], path: str, size: int, budget: Budget | None = None) -> GGUFHeader:
    r = _Reader(f, path, size, budget if budget is not None else DEFAULT_LIMITS.budget(path, size))
    version = _version(r)
    n_tensors = r.count(_MIN_TENSOR_INFO, "the tensor count")
    if n_tensors > MAX_TENSORS:
        raise FormatError(f"{path}: {n_tensors} tensors (at most {MAX_TENSORS} are read)")
    metadata, types = _metadata(r)
    alignment = _alignment(metadata, types, path)
    raw_infos = [_tensor_info(r, i) for i in range(n_tensors)]
    data_start = -(-r.pos // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for i, (name, dims, type_id, rel) in enumerate(raw_infos):
        if name in tensors:
            raise FormatError(f"{path}: tensor name {name!r} appears twice")
        nbytes = _nbytes(path, i, name, dims, type_id)
        what = f"tensor {i} {name!r}"
        if rel % alignment:
            raise FormatError(f"{path}: {what}: offset {rel} is not a multiple of the alignment {alignment}")
        if data_start + rel + nbytes > size:  # (a zero-size tensor too: its offset must lie in the file)
            raise FormatError(
                f"{path}: reading {what} data: expected {nbytes} bytes at offset {data_start + rel}, "
                f"got {max(0, size - data_start - rel)} (the file has {size} bytes)"
            )
        type_name, _, _, dtype = GGML_TYPES[type_id]
        tensors[name] = TensorInfo(type_name, dtype, dims[::-1], nbytes, data_start + rel)
        if nbytes:
            spans.append((rel, rel + nbytes, name))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise FormatError(f"{path}: tensors {first!r} and {second!r} overlap (at offset {data_start + start})")
    return GGUFHeader(version, r.order == ">", alignment, metadata, tensors)


def read_header(path: str, budget: Budget | None = None) -> GGUFHeader:
    """Read a GGUF file's header: version, metadata and where every tensor lies, without tensor data.

    A lazy reader seeks to ``info.offset`` and reads ``info.nbytes`` bytes of ``info.dtype`` (byte-swapped
    when ``big_endian``), shaped ``info.shape``. Quantized tensors are listed too, with ``dtype`` None.

    Raises:
        FormatError: not GGUF, version 1 or unknown, truncated or malformed (named with what was being read).
        UnsupportedTypeError: a tensor of an unknown ggml type id.

    Example::

        header = read_header("model.gguf")
        header.metadata["general.architecture"], header.tensors["token_embd.weight"].shape
    """
    with open(path, "rb", buffering=1 << 20) as f:
        return _parse(f, path, os.fstat(f.fileno()).st_size, budget)


def tensor_infos(path: str) -> dict[str, TensorInfo]:
    """Name -> :class:`TensorInfo` (type name, dtype name, NumPy shape, nbytes, absolute offset), in file order.

    Reads only the header; see :func:`read_header` for what it raises.
    """
    return read_header(path).tensors


def _read_exact(f: IO[bytes], buf: np.ndarray, what: str) -> None:
    view, done = buf.data.cast("B"), 0
    while done < len(view):
        n = f.readinto(view[done:])  # type: ignore[attr-defined]
        if not n:
            raise FormatError(f"{what}: expected {len(view)} bytes, got {done}")
        done += n


def read_gguf(path: str, budget: Budget | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a GGUF file: (name -> array in file order, metadata key -> plain Python value).

    Arrays are fresh (not memory-mapped), C-order, in the machine's byte order, shaped in NumPy order
    (the ggml dims reversed): F32, F16, BF16 (``ml_dtypes.bfloat16``), F64, I8, I16, I32 and I64.

    Raises:
        FormatError: not GGUF, version 1 or unknown, truncated or malformed (named with what was being read).
        UnsupportedTypeError: a quantized tensor (named with its type) or an unknown ggml type id.
    """
    with open(path, "rb", buffering=1 << 20) as f:
        size = os.fstat(f.fileno()).st_size
        budget = budget if budget is not None else DEFAULT_LIMITS.budget(path, size)
        header = _parse(f, path, size, budget)
        for name, info in header.tensors.items():
            if info.dtype is None:
                raise UnsupportedTypeError(
                    f"{path}: tensor {name!r} has type {info.type_name} (quantized); only F32, F16, BF16, F64 and "
                    f"integer tensors can be read (tensorfile.formats.gguf.tensor_infos lists every tensor)"
                )
        swap = header.big_endian != (sys.byteorder == "big")
        tensors: dict[str, np.ndarray] = {}
        for i, (name, info) in enumerate(header.tensors.items()):
            dtype = dtype_from_name(info.dtype)  # type: ignore[arg-type]
            budget.count_tensor(f"tensor {name!r}")
            budget.charge(info.nbytes, f"tensor {name!r}")  # and nbytes lies inside the file: checked by _parse
            buf = empty_bytes(info.nbytes)
            f.seek(info.offset)
            _read_exact(f, buf, f"{path}: reading tensor {i} {name!r} data")
            if swap and dtype.itemsize > 1:
                buf.view(f"u{dtype.itemsize}").byteswap(inplace=True)
            tensors[name] = buf.view(dtype.newbyteorder("=")).reshape(info.shape)
    return tensors, header.metadata


def _open(path: str, limits: Any, framework: str | None, options: Any, verify: bool) -> Any:
    from ._opened import open_gguf

    return open_gguf(path, framework, options, limits)


#: GGUF (llama.cpp): read whole, or opened lazily (tensors memory-mapped).
GGUF = Format("gguf", "GGUF", "numpy", (".gguf",), sniff=lambda probe: float(probe.prefix.startswith(MAGIC)),
              read=lambda path, budget: read_gguf(path, budget)[0], open=_open)  # fmt: skip
