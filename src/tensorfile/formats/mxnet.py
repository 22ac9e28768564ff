"""MXNet NDArray files (``mx.nd.save``, ``npx.save``, Gluon ``save_parameters`` and ``export``), read and written without MXNet.

Reference: apache/mxnet ``src/ndarray/ndarray.cc`` (``NDArray::Save`` / ``Load``)
and ``src/c_api/c_api.cc`` (``MXNDArraySave``); MXNet 1.9.1. Little-endian::

    u64 0x112, u64 0, u64 N, N records, u64 K, K x (u64 length, bytes)   (K = 0: a list; K = N: names)

A record: magic (V1 0xF993FAC8 / V2 0xF993FAC9 / V3 0xF993FACA), storage type
(V2, V3: 0 dense, 1 row_sparse, 2 csr), for sparse the storage shape, the shape
(``i32 ndim``, ``ndim x i64``), the context (``i32`` device type, ``i32`` id),
``i32`` type flag, for sparse each aux array's type flag and shape, the data,
then the aux arrays' data. Sparse arrays load dense. A list comes back as a
list (a single array as a one-element list, as MXNet does), names as a dict.
Every count and size is checked against the bytes left before anything is allocated.
"""

from __future__ import annotations

import struct
from typing import IO, Any

import numpy as np

from ..errors import FormatError, UnsupportedTypeError
from ..format.dtypes import dtype_from_name
from ..format.writer import tensor_chunks

__all__ = ["MAGIC", "read_mxnet", "write_mxnet"]

MAGIC = struct.pack("<QQ", 0x112, 0)
_V1, _V2, _V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
_TYPES = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8", 6: "int64", 7: "bool",
          8: "int16", 9: "uint16", 10: "uint32", 11: "uint64", 12: "bfloat16"}  # fmt: skip
MAX_DIMS = 32


class _Reader:
    def __init__(self, data: bytes, path: str) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError(f"{self.path}: reading {what}, expected {n} bytes, got {max(0, len(self.data) - self.pos)}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> Any:
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))
        return values[0] if len(values) == 1 else values

    def shape(self, what: str) -> tuple[int, ...] | None:
        ndim = self.unpack("i", what)
        if ndim == -1:
            return None
        if not 0 <= ndim <= MAX_DIMS:
            raise FormatError(f"{self.path}: {what} has {ndim} dims (at most {MAX_DIMS})")
        dims = self.unpack(f"{ndim}q", what) if ndim else ()
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if any(d < 0 for d in dims):
            raise FormatError(f"{self.path}: {what} has a negative dim {dims}")
        return dims

    def dtype(self, what: str) -> np.dtype:
        flag = self.unpack("i", what)
        if flag not in _TYPES:
            raise FormatError(f"{self.path}: {what}: unknown type flag {flag}")
        return dtype_from_name(_TYPES[flag]) if _TYPES[flag] != "int16" else np.dtype("<i2")

    def array(self, shape: tuple[int, ...], dtype: np.dtype, what: str) -> np.ndarray:
        count = 1
        for d in shape:
            count *= d
        raw = self.take(count * dtype.itemsize, what)  # checked against the bytes left first
        return np.frombuffer(raw, dtype, count).reshape(shape).copy()


def _record(r: _Reader, index: int) -> np.ndarray | None:
    what = f"array {index}"
    magic = r.unpack("I", what)
    if magic not in (_V1, _V2, _V3):
        raise FormatError(f"{r.path}: {what}: unknown record magic {magic:#x} (files older than MXNet 0.9 are not read)")
    stype = r.unpack("i", what) if magic != _V1 else 0
    if stype not in (0, 1, 2):
        raise FormatError(f"{r.path}: {what}: unknown storage type {stype}")
    storage_shape = r.shape(f"{what} storage shape") if stype else None
    shape = r.shape(f"{what} shape")
    legacy = magic != _V3
    if shape is None or (legacy and len(shape) == 0):
        return None  # an empty (none) array: nothing more follows
    r.unpack("ii", f"{what} context")  # device type and id: always loaded on the CPU
    dtype = r.dtype(what)
    if stype == 0:
        return r.array(shape, dtype, f"{what} data")
    aux = [(r.dtype(f"{what} aux type"), r.shape(f"{what} aux shape")) for _ in range(1 if stype == 1 else 2)]
    if storage_shape is None or any(s is None for _, s in aux):
        raise FormatError(f"{r.path}: {what}: a sparse array without shapes")
    values = r.array(storage_shape, dtype, f"{what} values")
    parts = [r.array(s, t, f"{what} aux data") for t, s in aux]  # type: ignore[arg-type]
    dense = np.zeros(shape, dtype)
    try:
        if stype == 1:  # row_sparse: values are the rows named by parts[0]
            dense[parts[0].astype(np.int64)] = values
        else:  # csr: parts = indptr, indices
            indptr, indices = parts[0].astype(np.int64), parts[1].astype(np.int64)
            rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
            dense[rows, indices] = values
    except (IndexError, ValueError) as exc:
        raise FormatError(f"{r.path}: {what}: sparse indices do not fit shape {shape} ({exc})") from None
    return dense


def read_mxnet(path: str) -> list[Any] | dict[str, Any]:
    """Read an MXNet NDArray file into NumPy arrays: a list, or a dict when it stores names.

    Raises:
        FormatError: malformed or truncated (named with what was being read).
    """
    with open(path, "rb") as f:
        data = f.read()
    r = _Reader(data, path)
    if r.take(16, "the header") != MAGIC:
        raise FormatError(f"{path}: not an MXNet NDArray file")
    count = r.unpack("Q", "the array count")
    if count > (len(data) - r.pos) // 4:
        raise FormatError(f"{path}: claims {count} arrays in {len(data)} bytes")
    arrays = [_record(r, i) for i in range(count)]
    names_count = r.unpack("Q", "the name count")
    if names_count not in (0, count):
        raise FormatError(f"{path}: {count} arrays but {names_count} names")
    names = []
    for i in range(names_count):
        length = r.unpack("Q", f"name {i}")
        names.append(r.take(length, f"name {i}").decode("utf-8", "replace"))
    if r.pos != len(data):
        raise FormatError(f"{path}: {len(data) - r.pos} bytes after the last name")
    if names_count:
        if len(set(names)) != len(names):
            raise FormatError(f"{path}: a name appears twice")
        return dict(zip(names, arrays))
    return arrays



#: Type flags written: MXNet 1.9.1 refuses to load 8-11 (int16, uint16/32/64: "Unknown type enum").
_FLAGS = {name: flag for flag, name in _TYPES.items() if flag not in (8, 9, 10, 11)}


def write_mxnet(f: IO[bytes], names: list[str] | None, arrays: list[np.ndarray], *, np_semantics: bool,
                progress: Any = None) -> None:  # fmt: skip
    """Write arrays as ``mx.nd.save`` (V2 records) or ``npx.save`` (V3 records) does.

    MXNet 1.9.1 loads V2 files only outside NumPy mode (``nd.load``, Gluon
    ``load_parameters``) and V3 files only inside it (``npx.load`` after
    ``npx.set_np()``). Only V3 holds 0-d and zero-size arrays. Arrays are written
    dense, on the CPU context.

    Args:
        f: binary file open for writing.
        names: one name per array (a dict), or None (a list).
        arrays: the arrays; dtypes float16/32/64, bfloat16, uint8, int8, int32, int64, bool.
        np_semantics: V3 records (``npx.save``) rather than V2 (``nd.save``).

    Raises:
        UnsupportedTypeError: a dtype MXNet has no type flag for, or (V2) a
            0-d or zero-size array; the message names the array.
    """
    labels = names if names is not None else [f"[{i}]" for i in range(len(arrays))]
    for label, array in zip(labels, arrays):
        if "\x00" in label:
            raise UnsupportedTypeError(f"array {label!r}: MXNet reads names as C strings and would cut this one at its NUL")
        if array.dtype.name not in _FLAGS:
            raise UnsupportedTypeError(
                f"array {label}: MXNet 1.9.1 cannot load {array.dtype.name}; expected one of {sorted(_FLAGS)}"
            )
        if not np_semantics and (array.ndim == 0 or array.size == 0):
            raise UnsupportedTypeError(
                f"array {label}: an nd.save file (V2) cannot hold shape {array.shape}; use format='mxnet-np' (npx.save)"
            )
    f.write(MAGIC + struct.pack("<Q", len(arrays)))
    for array in arrays:
        shape = struct.pack(f"<i{array.ndim}q", array.ndim, *array.shape)
        f.write(struct.pack("<Ii", _V3 if np_semantics else _V2, 0) + shape + struct.pack("<iii", 1, 0, _FLAGS[array.dtype.name]))
        for piece in tensor_chunks(array):
            f.write(piece)
        if progress is not None:
            progress(array.nbytes)
    f.write(struct.pack("<Q", len(names) if names is not None else 0))
    for name in names or ():
        data = name.encode("utf-8")
        f.write(struct.pack("<Q", len(data)) + data)
