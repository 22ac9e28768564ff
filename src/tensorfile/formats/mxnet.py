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

Rules a file must follow here (each broken one is a :class:`FormatError` naming
the file and the array):

- every count and size is checked against the bytes left before anything is
  allocated; each array's bytes are charged to the file's
  :class:`~tensorfile.limits.Budget` and read straight into that array (one copy);
- at most 32 dims; no shape over 2**63 - 1 bytes;
- row_sparse: storage shape ``(rows stored,) + shape[1:]``, one in-range integer
  row index per stored row;
- csr: a 2-d shape, storage shape ``(nnz,)``, ``indptr`` of ``rows + 1``
  integers from 0, non-decreasing, to nnz, ``nnz`` integer column indices in range;
- the dense result of a sparse array is charged before it is allocated;
- names: none, or one per array, distinct.

:func:`index_mxnet` (``tensorfile.open``) reads every record's fields and the names, checks
each size against the bytes left and steps over the data; an array is read (and charged)
when it is asked for, by the same code as :func:`read_mxnet`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import IO, Any, Callable

import numpy as np

from ..errors import FormatError, UnsupportedTypeError
from ..format.dtypes import dtype_from_name
from ..format.memory import empty_array
from ..format.writer import tensor_chunks
from ..limits import DEFAULT_LIMITS, Budget, array_nbytes
from ._index import Entry, Index
from ._write import flat_writer
from ._zip import fill
from .base import Format

__all__ = ["MAGIC", "read_mxnet", "index_mxnet", "write_mxnet"]

MAGIC = struct.pack("<QQ", 0x112, 0)
_V1, _V2, _V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
_TYPES = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8", 6: "int64", 7: "bool",
          8: "int16", 9: "uint16", 10: "uint32", 11: "uint64", 12: "bfloat16"}  # fmt: skip
MAX_DIMS = 32
#: Fewest bytes a record takes (a V1 "none" record: magic and ndim 0).
_MIN_RECORD = 8


class _Reader:
    """Reads one MXNet file front to back: small fields with :meth:`unpack`, arrays straight into new buffers."""

    def __init__(self, f: IO[bytes], path: str, size: int, budget: Budget, pos: int = 0) -> None:
        self.f, self.path, self.size, self.budget, self.pos = f, path, size, budget, pos
        f.seek(pos)

    @property
    def left(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.left:
            raise FormatError(f"{self.path}: reading {what}, expected {n} bytes, got {max(0, self.left)}")
        out = self.f.read(n)
        if len(out) != n:
            raise FormatError(f"{self.path}: reading {what}, expected {n} bytes, got {len(out)}")
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
        dims = tuple(struct.unpack(f"<{ndim}q", self.take(8 * ndim, what)))
        if any(d < 0 for d in dims):
            raise FormatError(f"{self.path}: {what} has a negative dim {dims}")
        return dims

    def dtype(self, what: str) -> np.dtype:
        flag = self.unpack("i", what)
        if flag not in _TYPES:
            raise FormatError(f"{self.path}: {what}: unknown type flag {flag}")
        return dtype_from_name(_TYPES[flag]) if _TYPES[flag] != "int16" else np.dtype("<i2")

    def array(self, shape: tuple[int, ...], dtype: np.dtype, what: str) -> np.ndarray:
        """The next ``shape`` x ``dtype`` bytes, checked against the bytes left, charged, read into a new array."""
        nbytes = array_nbytes(shape, dtype.itemsize, f"{self.path}: {what}")
        if nbytes > self.left:
            raise FormatError(f"{self.path}: reading {what}, expected {nbytes} bytes, got {self.left}")
        self.budget.charge(nbytes, what)
        out = empty_array(shape, dtype)
        fill(self.f, memoryview(out.reshape(-1).view(np.uint8)), f"{self.path}: {what}")
        self.pos += nbytes
        return out


@dataclass(frozen=True)
class _Head:
    """A record up to its data: what it holds, checked against itself."""

    what: str
    stype: int  # 0 dense, 1 row_sparse, 2 csr
    shape: tuple[int, ...]
    dtype: np.dtype
    storage_shape: tuple[int, ...] | None = None
    aux: tuple[tuple[np.dtype, tuple[int, ...]], ...] = ()


def _record(r: _Reader, index: int) -> np.ndarray | None:
    head = _head(r, index)
    return None if head is None else _data(r, head)


def _head(r: _Reader, index: int) -> _Head | None:
    """The record's fields before its data (None for an empty "none" array, which has no more)."""
    what = f"array {index}"
    magic = r.unpack("I", what)
    if magic not in (_V1, _V2, _V3):
        raise FormatError(
            f"{r.path}: {what}: unknown record magic {magic:#x} (files older than MXNet 0.9 are not read)"
        )
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
        return _Head(what, stype, shape, dtype)
    aux = [(r.dtype(f"{what} aux type"), r.shape(f"{what} aux shape")) for _ in range(1 if stype == 1 else 2)]
    if storage_shape is None or any(s is None for _, s in aux):
        raise FormatError(f"{r.path}: {what}: a sparse array without shapes")
    if any(t.kind not in "iu" for t, _ in aux):
        raise FormatError(f"{r.path}: {what}: sparse indices of type {[t.name for t, _ in aux]} (integers expected)")
    _check_sparse_shapes(r.path, what, stype, shape, storage_shape, [s for _, s in aux])  # type: ignore[misc]
    return _Head(what, stype, shape, dtype, storage_shape, tuple(aux))  # type: ignore[arg-type]


def _parts(head: _Head) -> list[tuple[tuple[int, ...], np.dtype, str]]:
    """The arrays of a record's data, in file order: (shape, dtype, name)."""
    if head.stype == 0:
        return [(head.shape, head.dtype, f"{head.what} data")]
    values = [(head.storage_shape, head.dtype, f"{head.what} values")]
    return values + [(s, t, f"{head.what} aux data") for t, s in head.aux]  # type: ignore[list-item]


def _skip(r: _Reader, head: _Head) -> None:
    """Step over the record's data, checking that the file holds it (nothing read)."""
    for shape, dtype, what in _parts(head):
        nbytes = array_nbytes(shape, dtype.itemsize, f"{r.path}: {what}")
        if nbytes > r.left:
            raise FormatError(f"{r.path}: reading {what}, expected {nbytes} bytes, got {r.left}")
        r.f.seek(nbytes, os.SEEK_CUR)
        r.pos += nbytes


def _data(r: _Reader, head: _Head) -> np.ndarray:
    """The record's array, read from its data (sparse arrays made dense, charged first)."""
    what, shape, dtype, storage_shape = head.what, head.shape, head.dtype, head.storage_shape
    if head.stype == 0:
        return r.array(shape, dtype, f"{what} data")
    assert storage_shape is not None
    # the dense result, and the int64 index arrays made on the way, charged before any data is read
    work = 8 * (storage_shape[0] + (0 if head.stype == 1 else 3 * (shape[0] + 1) + storage_shape[0]))
    r.budget.charge(array_nbytes(shape, dtype.itemsize, f"{r.path}: {what}") + work, f"{what} made dense")
    values = r.array(storage_shape, dtype, f"{what} values")
    parts = [r.array(s, t, f"{what} aux data") for t, s in head.aux]
    if head.stype == 1:
        rows = _indices(r.path, what, parts[0], shape[0], "row index")
        dense = np.zeros(shape, dtype)
        dense[rows] = values
        return dense
    indptr = parts[0].astype(np.int64)
    counts = np.diff(indptr)
    if indptr[0] != 0 or indptr[-1] != storage_shape[0] or np.any(counts < 0):
        raise FormatError(
            f"{r.path}: {what}: csr indptr must rise from 0 to the {storage_shape[0]} stored values "
            f"(it goes from {indptr[0]} to {indptr[-1]}{'' if np.all(counts >= 0) else ', and falls on the way'})"
        )
    cols = _indices(r.path, what, parts[1], shape[1], "column index")
    dense = np.zeros(shape, dtype)
    dense[np.repeat(np.arange(shape[0]), counts), cols] = values
    return dense


def _check_sparse_shapes(path: str, what: str, stype: int, shape: tuple[int, ...], storage: tuple[int, ...],
                         aux: list[tuple[int, ...]]) -> None:  # fmt: skip
    """Sparse shapes that agree with each other (ndarray.cc's storage layout), before any data is read."""
    if stype == 1:
        ok = len(shape) >= 1 and len(storage) == len(shape) and storage[1:] == shape[1:] and aux[0] == storage[:1]
        expected = "storage shape (k,) + shape[1:] and k row indices"
    else:
        ok = len(shape) == 2 and len(storage) == 1 and aux[0] == (shape[0] + 1,) and aux[1] == storage
        expected = "a 2-d shape, storage shape (nnz,), rows + 1 indptr and nnz indices"
    if not ok:
        raise FormatError(f"{path}: {what}: shape {shape}, storage shape {storage} and index shapes {aux} disagree "
                          f"(expected {expected})")  # fmt: skip


def _indices(path: str, what: str, values: np.ndarray, bound: int, name: str) -> np.ndarray:
    """``values`` as int64 indices (a copy charged with the dense result), each in ``range(bound)``."""
    if values.size and (int(values.min()) < 0 or int(values.max()) >= bound):
        raise FormatError(f"{path}: {what}: a {name} out of range {bound} (from {values.min()} to {values.max()})")
    return values.astype(np.int64, copy=False)


def read_mxnet(path: str, budget: Budget | None = None) -> list[Any] | dict[str, Any]:
    """Read an MXNet NDArray file into NumPy arrays: a list, or a dict when it stores names.

    Args:
        path: the file.
        budget: what the file may make us allocate (default: ``DEFAULT_LIMITS`` for its size).

    Raises:
        FormatError: malformed or truncated (named with the array being read).
        LimitError: more arrays, or more bytes (sparse arrays made dense), than the budget allows.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return _walk(_Reader(f, path, size, budget or DEFAULT_LIMITS.budget(path, size)), _record)


def index_mxnet(path: str, budget: Budget) -> Index:
    """An MXNet file's arrays from their records' headers (every size checked against the bytes present, data
    stepped over); each array read when asked for (:mod:`._index`), sparse ones made dense then.

    Raises:
        as :func:`read_mxnet` for the file's structure.
    """
    f = open(path, "rb")
    try:
        r = _Reader(f, path, os.fstat(f.fileno()).st_size, budget)

        def describe(r: _Reader, index: int) -> Entry | None:
            head = _head(r, index)
            if head is None:
                return None
            start = r.pos
            _skip(r, head)
            return Entry(head.dtype, head.shape, lambda b, what: _data(_Reader(f, path, r.size, b, start), head))

        value = _walk(r, describe)
    except BaseException:
        f.close()
        raise
    return Index(value, f.close)


def _walk(r: _Reader, record: Callable[[_Reader, int], Any]) -> list[Any] | dict[str, Any]:
    """The file's header, its records (each through ``record(reader, index)``) and names."""
    path, budget = r.path, r.budget
    if r.take(16, "the header") != MAGIC:
        raise FormatError(f"{path}: not an MXNet NDArray file")
    count = r.unpack("Q", "the array count")
    if count > r.left // _MIN_RECORD:
        raise FormatError(f"{path}: claims {count} arrays in {r.size} bytes")
    arrays = []
    for i in range(count):
        budget.count_tensor(f"array {i}")
        arrays.append(record(r, i))
    names_count = r.unpack("Q", "the name count")
    if names_count not in (0, count):
        raise FormatError(f"{path}: {count} arrays but {names_count} names")
    names = []
    for i in range(names_count):
        length = r.unpack("Q", f"name {i}")
        budget.charge(min(length, r.left), f"name {i}")  # longer than the file: take() says so
        names.append(r.take(length, f"name {i}").decode("utf-8", "replace"))
    if r.left:
        raise FormatError(f"{path}: {r.left} bytes after the last name")
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


def _body(np_semantics: bool) -> Any:
    return lambda f, names, arrays, bar: write_mxnet(f, names, arrays, np_semantics=np_semantics, progress=bar)


#: ``mx.nd.save`` / Gluon ``save_parameters`` (V2 records; V3 records of ``npx.save`` read too).
MXNET = Format(
    "mxnet", "MXNet NDArray file", "mxnet", (".params", ".nd"), sniff=lambda probe: float(probe.prefix.startswith(MAGIC)),
    read=lambda path, budget: read_mxnet(path, budget), index=index_mxnet,
    write=flat_writer("an MXNet nd.save file", _body(False)),
    flat=True,
)  # fmt: skip
#: ``npx.save`` (V3 records, NumPy semantics): written only; read as MXNET (same magic number).
MXNET_NP = Format("mxnet-np", "MXNet NDArray file (npx.save)", "mxnet", (),
                  write=flat_writer("an MXNet npx.save file", _body(True)), flat=True)  # fmt: skip
