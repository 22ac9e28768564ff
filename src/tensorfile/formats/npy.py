"""NumPy ``.npy`` and ``.npz`` files, read without ``eval`` and without pickle; ``.npz`` written.

Reference: numpy/numpy ``numpy/lib/_format_impl.py``. The header is a Python
dict literal; it is parsed with :func:`ast.literal_eval` (literals only, never
code) after dropping Python 2's ``L`` suffixes, and capped at 10,000 bytes as
NumPy's reader caps it. Sizes are checked against the file (or the zip member's
declared size) before anything is allocated or inflated. Object arrays (pickles)
go to :mod:`.npy_objects`, which reads plain data only.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import struct
import zipfile
import zlib
from typing import IO, Any, Iterator

import numpy as np

from ..errors import FormatError, IntegrityError, TensorFileError, UnsupportedTypeError

__all__ = ["read_npy", "read_npz", "write_npz", "NPY_DTYPES", "MAX_HEADER", "MAX_EXPANSION"]

MAGIC = b"\x93NUMPY"
MAX_HEADER = 10_000
#: Largest expansion accepted for a compressed member (real tensors compress far less; a bomb far more).
MAX_EXPANSION = 200
#: Largest object-array pickle read, in bytes.
MAX_OBJECT_PICKLE = 256 << 20
_LONG = re.compile(r"(\d+)L\b")


def _header(f: IO[bytes], what: str) -> tuple[np.dtype, bool, tuple[int, ...]]:
    magic = f.read(8)
    if len(magic) != 8 or not magic.startswith(MAGIC):
        raise FormatError(f"{what}: not a .npy file")
    major = magic[6]
    if major not in (1, 2, 3):
        raise FormatError(f"{what}: unknown .npy version {major}.{magic[7]}")
    size_bytes = f.read(2 if major == 1 else 4)
    (length,) = struct.unpack("<H" if major == 1 else "<I", size_bytes) if len(size_bytes) in (2, 4) else (None,)
    if length is None or length > MAX_HEADER:
        raise FormatError(f"{what}: header of {length} bytes (the limit is {MAX_HEADER})")
    raw = f.read(length)
    if len(raw) != length:
        raise FormatError(f"{what}: reading the header, expected {length} bytes, got {len(raw)}")
    text = raw.decode("utf-8" if major == 3 else "latin1")
    try:
        doc = ast.literal_eval(_LONG.sub(r"\1", text))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise FormatError(f"{what}: the header is not a Python literal: {text[:80]!r}") from None
    if not isinstance(doc, dict) or set(doc) != {"descr", "fortran_order", "shape"}:
        raise FormatError(f"{what}: the header must hold exactly descr, fortran_order and shape")
    shape, fortran = doc["shape"], doc["fortran_order"]
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape) or type(fortran) is not bool:
        raise FormatError(f"{what}: bad shape {shape!r} or fortran_order {fortran!r}")
    try:
        dtype = np.dtype(doc["descr"]) if isinstance(doc["descr"], str) else None
    except TypeError:
        dtype = None
    if dtype is None:
        raise UnsupportedTypeError(f"{what}: dtype {doc['descr']!r} is not supported (structured or unknown)")
    return dtype, fortran, shape


def _read_array(f: IO[bytes], what: str, available: int) -> Any:
    dtype, fortran, shape = _header(f, what)
    if dtype.hasobject:  # a pickle of plain data (np.save of a dict or list), read without running code
        from ..safepickle.numpy_objects import read_object_array

        left = available - f.tell()
        if left > MAX_OBJECT_PICKLE:
            raise FormatError(f"{what}: an object array of {left} bytes (the limit is {MAX_OBJECT_PICKLE})")
        return read_object_array(f.read(left), what)
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    if nbytes > available - f.tell():
        raise FormatError(f"{what}: the header promises {nbytes} bytes of data, the file has {available - f.tell()}")
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise FormatError(f"{what}: expected {nbytes} bytes of data, got {len(data)}")
    array = np.frombuffer(data, dtype, count).reshape(shape[::-1] if fortran else shape)
    array = array.T if fortran else array
    return np.array(array.astype(dtype.newbyteorder("=")), order="C")


def read_npy(path: str) -> Any:
    """Read a ``.npy`` file (v1, v2, v3; Fortran order; any byte order) into a C-order native array.

    Raises:
        FormatError: malformed, truncated, or a header that is not a literal.
        UnsupportedTypeError: object (pickled) or structured arrays.
    """
    with open(path, "rb") as f:
        return _read_array(f, path, os.fstat(f.fileno()).st_size)


def check_expansion(path: str, zf: zipfile.ZipFile) -> None:
    """Refuse a zip bomb before inflating anything: compressed members, all together, may claim at most
    :data:`MAX_EXPANSION` times the archive's size (stored members are bounded by the file itself)."""
    claimed = sum(i.file_size for i in zf.infolist() if i.compress_type != zipfile.ZIP_STORED)
    size = os.path.getsize(path)
    if claimed > MAX_EXPANSION * size + (1 << 20):
        raise FormatError(
            f"{path}: compressed members claim {claimed} bytes from a {size}-byte file: more than {MAX_EXPANSION}x, "
            "refused as a zip bomb"
        )


@contextlib.contextmanager
def zip_errors(what: str) -> Iterator[None]:
    """Turn the zip module's errors while reading a member into FormatError (IntegrityError for a bad CRC-32)."""
    try:
        yield
    except TensorFileError:
        raise
    except zipfile.BadZipFile as exc:
        raise (IntegrityError if "CRC" in str(exc) else FormatError)(f"{what}: {exc}") from None
    except (RuntimeError, NotImplementedError, zlib.error, EOFError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{what}: cannot be read ({exc})") from None


def read_npz(path: str, zf: zipfile.ZipFile) -> dict[str, Any]:
    """Read every ``.npy`` member of an ``.npz`` archive (stored or deflated) into a dict.

    Each member's declared uncompressed size bounds what is read, so a zip
    bomb is refused before it inflates.
    """
    check_expansion(path, zf)
    out: dict[str, Any] = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            continue
        what = f"{path}: {info.filename}"
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_EXPANSION * info.compress_size + (1 << 20):
            raise FormatError(
                f"{what}: {info.compress_size} compressed bytes claim to expand to {info.file_size}: "
                f"more than {MAX_EXPANSION}x, refused as a zip bomb"
            )
        with zip_errors(what), zf.open(info) as member:
            out[info.filename[:-4]] = _read_array(member, what, info.file_size)
    return out


#: dtypes a .npy file describes so that ``np.load(allow_pickle=False)`` returns them exactly.
NPY_DTYPES = frozenset(("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
                        "float32", "float64", "complex64", "complex128"))  # fmt: skip


def write_npz(f: IO[bytes], names: list[str], arrays: list[np.ndarray], progress: Any = None) -> None:
    """Write arrays to ``f`` as ``np.savez`` does: a zip (stored) of ``NAME.npy`` members.

    Each member is a ``.npy`` written by NumPy's own ``numpy.lib.format.write_array``
    (no pickle: ``np.load(..., allow_pickle=False)`` reads it), streamed without
    holding a second copy of the data.

    Raises:
        UnsupportedTypeError: a dtype ``.npy`` cannot describe (bfloat16, float8:
            NumPy would store them as opaque bytes); the message names the array.
    """
    taken = set(names)
    for name, array in zip(names, arrays):
        if "\x00" in name:
            raise UnsupportedTypeError(f"array {name!r}: a .npz member name cannot hold a NUL character")
        if name.endswith(".npy") and name[:-4] in taken:  # np.load would answer z[name] with the other array
            raise UnsupportedTypeError(f"arrays {name[:-4]!r} and {name!r}: np.load cannot tell them apart in a .npz")
        if array.dtype.name not in NPY_DTYPES:
            raise UnsupportedTypeError(f"array {name!r}: a .npz file has no dtype {array.dtype.name} "
                                       "(np.load would return raw bytes); convert it first, e.g. to float32")  # fmt: skip
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in zip(names, arrays):
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
            if progress is not None:
                progress(array.nbytes)
