"""NumPy ``.npy`` and ``.npz`` files, read without ``eval`` and without pickle; ``.npz`` written.

Reference: numpy/numpy ``numpy/lib/_format_impl.py`` (``read_array``,
``_read_array_header``) and ``numpy/lib/_npyio_impl.py`` (``NpzFile``)::

    b"\x93NUMPY", u8 major (1, 2, 3), u8 minor, header length (u16 LE for v1, u32 LE after),
    header: a dict literal {'descr': ..., 'fortran_order': ..., 'shape': (...)}, latin-1 (v3: UTF-8), then the data

Rules a file must follow here (each broken one is a :class:`FormatError` or
:class:`UnsupportedTypeError` naming the file, and the member of an ``.npz``):

- the header is at most 10,000 bytes (NumPy's own cap) and is parsed with
  :func:`ast.literal_eval` (literals only, never code) after dropping Python 2's
  ``L`` suffixes; exactly the keys ``descr``, ``fortran_order``, ``shape``;
- ``descr`` is a printable ASCII string NumPy parses to a plain dtype: bool, integers, floats,
  complex, bytes ``S``, text ``U``, raw ``V``, datetimes; never structured, never a
  subarray (``'(2,)f4'``), never of itemsize 0; ``'|O'`` (a pickle) goes to
  :mod:`tensorfile.safepickle.numpy_objects`, which reads plain data only;
- ``shape`` is a tuple of at most 64 (NumPy's limit) non-negative ints whose
  product times the itemsize fits in 63 bits, and whose bytes the file (or the
  member's declared size) holds;
- every array is charged to the file's :class:`~tensorfile.limits.Budget` before
  it is allocated and read into that one buffer (a zip member in pieces),
  byte-swapped in place; only a Fortran-order array of 2 dims or more needs a
  second, charged, copy (the result is always C order, native byte order);
- an ``.npz`` is checked by :func:`._zip.check_zip` first (no duplicate members,
  local headers agreeing with the central directory, no zip bomb); members not
  named ``*.npy`` are skipped, as ``np.load`` does not list them as arrays;
- :func:`index_npy` and :func:`index_npz` (``tensorfile.open``) check every header (and the
  archive) as above when the file is opened, and read an array, by the same code, when it is
  asked for; an object array (plain data, no tensor of its own) is read when opened.
"""

from __future__ import annotations

import ast
import functools
import io
import os
import re
import struct
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Callable

import numpy as np

from ..errors import FormatError, UnsupportedTypeError
from ..format.memory import empty_array
from ..format.reader import PARALLEL_MIN, READERS
from ..limits import DEFAULT_LIMITS, Budget, array_nbytes
from ..safepickle.numpy_objects import check_text
from ._index import Entry, Index
from ._write import flat_writer
from ._zip import StoredMember, check_expansion, check_zip, drain, fill, open_zip, zip_errors
from .base import Format, Probe

# check_expansion and zip_errors live in ._zip; still importable from here until their callers move.
__all__ = ["read_npy", "read_npz", "index_npy", "index_npz", "write_npz", "NPY_DTYPES", "MAX_HEADER", "MAX_EXPANSION", "MAX_DIMS",
           "check_expansion", "zip_errors"]  # fmt: skip

MAGIC = b"\x93NUMPY"
MAX_HEADER = 10_000
#: Largest expansion accepted for a compressed member (the default of ``Limits.max_expansion``).
MAX_EXPANSION = 200
#: Most dimensions of an array (NumPy 2's ``NPY_MAXDIMS``).
MAX_DIMS = 64
_LONG = re.compile(r"(\d+)L\b")
#: dtype kinds read: bool, signed, unsigned, float, complex, bytes, text, raw bytes, datetime, timedelta.
_KINDS = frozenset("biufcSUVMm")


def _header(f: IO[bytes], what: str) -> tuple[np.dtype, bool, tuple[int, ...], int]:
    """The dtype, Fortran order and shape of a ``.npy`` stream, and the bytes its preamble and header take."""
    magic = f.read(8)
    if len(magic) != 8 or not magic.startswith(MAGIC):
        raise FormatError(f"{what}: not a .npy file")
    major = magic[6]
    if major not in (1, 2, 3):
        raise FormatError(f"{what}: unknown .npy version {major}.{magic[7]}")
    width = 2 if major == 1 else 4
    size_bytes = f.read(width)
    if len(size_bytes) != width:
        raise FormatError(f"{what}: reading the header length, expected {width} bytes, got {len(size_bytes)}")
    (length,) = struct.unpack("<H" if major == 1 else "<I", size_bytes)
    if length > MAX_HEADER:
        raise FormatError(f"{what}: header of {length} bytes (the limit is {MAX_HEADER}, as in NumPy)")
    raw = f.read(length)
    if len(raw) != length:
        raise FormatError(f"{what}: reading the header, expected {length} bytes, got {len(raw)}")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
        with warnings.catch_warnings():  # the parser warns (SyntaxWarning) on odd literals: the file's, not the user's
            warnings.simplefilter("ignore")
            doc = ast.literal_eval(_LONG.sub(r"\1", text))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, OverflowError):
        raise FormatError(f"{what}: the header is not a Python literal: {raw[:80]!r}") from None
    if not isinstance(doc, dict) or set(doc) != {"descr", "fortran_order", "shape"}:
        raise FormatError(f"{what}: the header must hold exactly descr, fortran_order and shape")
    shape, fortran = doc["shape"], doc["fortran_order"]
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape) or type(fortran) is not bool:
        raise FormatError(f"{what}: bad shape {shape!r:.100} or fortran_order {fortran!r:.20}")
    if len(shape) > MAX_DIMS:
        raise FormatError(f"{what}: {len(shape)} dimensions (NumPy allows at most {MAX_DIMS})")
    return _dtype(doc["descr"], what), fortran, shape, len(magic) + len(size_bytes) + length


def _dtype(descr: Any, what: str) -> np.dtype:
    """The plain dtype ``descr`` names; UnsupportedTypeError for anything else, however NumPy fails on it."""
    if not isinstance(descr, str):
        raise UnsupportedTypeError(f"{what}: dtype {descr!r:.100} is not supported (structured arrays are not read)")
    if not (descr.isascii() and descr.isprintable()):  # NumPy reads "\x00" as bool: no such quirks here
        raise UnsupportedTypeError(f"{what}: dtype {descr!r:.100} is not printable ASCII")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 'a10' and friends, still read by NumPy
            dtype = np.dtype(descr)
    except Exception as exc:  # NumPy's dtype parser raises TypeError, ValueError, SyntaxError, RecursionError...
        name = type(exc).__name__
        raise UnsupportedTypeError(f"{what}: dtype {descr!r:.100} is not one NumPy reads ({name})") from None
    if dtype.hasobject and dtype.kind == "O":
        return dtype
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _KINDS:
        raise UnsupportedTypeError(f"{what}: dtype {descr!r:.100} is not supported (structured, subarray or unknown)")
    if dtype.itemsize == 0:
        raise UnsupportedTypeError(f"{what}: dtype {descr!r:.100} has items of 0 bytes")
    return dtype


def _read_array(f: IO[bytes], what: str, available: int, budget: Budget) -> Any:
    """The array of a ``.npy`` stream of ``available`` bytes (a file, or a zip member of that declared size)."""
    return _array_reader(f, what, available, budget)[1]()


def _array_reader(f: IO[bytes], what: str, available: int, budget: Budget) -> tuple[int, Callable[[], Any]]:
    """Read and check a ``.npy`` stream's header, charge and allocate its array; returns the bytes of data left
    to read and the function that reads them and returns the array (an object array is read at once)."""
    dtype, fortran, shape, used = _header(f, what)
    left = available - used
    label = what.removeprefix(f"{budget.path}: ") or "the array"
    if dtype.kind == "O":  # a pickle of plain data (np.save of a dict or list), read without running code
        from ..safepickle.numpy_objects import read_object_array

        budget.check_header(left, f"{label}: the object array's pickle")
        direct = isinstance(f, (io.BufferedReader, io.FileIO))
        budget.charge(left if direct else 2 * left, f"{label}: the object array's pickle")  # pieces, then joined
        data = f.read(left) if direct else b"".join(iter(lambda: f.read(1 << 20), b""))
        if len(data) != left:
            raise FormatError(f"{what}: the object array's pickle, expected {left} bytes, got {len(data)}")
        value = read_object_array(data, what, budget)
        return 0, lambda: value
    nbytes = array_nbytes(shape, dtype.itemsize, what)
    if nbytes > left:
        raise FormatError(f"{what}: the header promises {nbytes} bytes of data, the file has {left}")
    budget.charge(nbytes, label)
    if fortran and len(shape) > 1:  # charged before anything is allocated
        budget.charge(nbytes, f"{label}: from Fortran to C order")
    array = empty_array((nbytes // dtype.itemsize,), dtype)

    def read() -> Any:
        fill(f, memoryview(array.view(np.uint8)), what)
        out = array
        if not dtype.isnative:
            out.byteswap(inplace=True)
            out = out.view(dtype.newbyteorder("="))
        check_text(out, what)
        if fortran and len(shape) > 1:
            return np.ascontiguousarray(out.reshape(shape[::-1]).T)
        return out.reshape(shape)

    return nbytes, read


def read_npy(path: str, budget: Budget | None = None) -> Any:
    """Read a ``.npy`` file (v1, v2, v3; Fortran order; any byte order) into a C-order native array.

    Object arrays come back as the plain data they pickle (a dict, a list...).

    Args:
        path: the file.
        budget: what the file may make us allocate (default: ``DEFAULT_LIMITS`` for its size).

    Raises:
        FormatError: malformed, truncated, or a header that is not a literal.
        UnsupportedTypeError: structured, subarray or unknown dtypes.
        LimitError: the array is larger than the budget allows.
        UnsafeFileError: an object array whose pickle names anything but plain data.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        budget = budget or DEFAULT_LIMITS.budget(path, size)
        budget.count_tensor("the array")
        return _read_array(f, path, size, budget)


def read_npz(path: str, zf: zipfile.ZipFile, budget: Budget | None = None) -> dict[str, Any]:
    """Read every ``NAME.npy`` member of an ``.npz`` archive (stored or deflated) into ``{NAME: array}``; an
    archive with other members (``np.load`` returns them as raw bytes) is refused, naming them.

    The archive is checked first (:func:`._zip.check_zip`): duplicate members,
    local headers that disagree with the central directory, overlapping members
    and zip bombs are refused before anything is inflated. Stored members of an archive
    on disk (``np.savez``) are read straight from the file (:class:`._zip.StoredMember`),
    those of :data:`~tensorfile.format.reader.PARALLEL_MIN` bytes or more on
    :data:`~tensorfile.format.reader.READERS` helper threads, largest first, each one's
    CRC-32 computed as it is read; deflated members go through ``zipfile``.
    Format: NumPy's ``numpy/lib/format.py`` (``.npy``) in a zip archive (PKWARE APPNOTE.TXT).

    Args:
        path: the archive's file (named in errors).
        zf: the archive, open for reading.
        budget: what the file may make us allocate (default: ``DEFAULT_LIMITS`` for its size).

    Raises:
        FormatError, UnsupportedTypeError, LimitError, UnsafeFileError: as :func:`read_npy`, naming the member.
        IntegrityError: a member fails its CRC-32 check.
    """
    budget = budget or DEFAULT_LIMITS.budget(path, os.path.getsize(path))
    offsets = check_zip(path, zf, budget)
    _refuse_others(path, zf)
    fd = _fileno(zf)
    out: dict[str, Any] = {}
    reads: list[tuple[str, int, Callable[[], Any]]] = []  # stored members: headers read, data read below
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            continue
        budget.count_tensor(f"member {info.filename!r}")
        name = info.filename[:-4]
        if fd is None or info.compress_type != zipfile.ZIP_STORED:
            out[name] = _read_member(path, zf, info, budget)
            continue
        what = f"{path}: member {info.filename!r}"
        member = StoredMember(fd, offsets[info.filename], info, what)
        nbytes, read = _array_reader(member, what, info.file_size, budget)
        out[name] = None
        reads.append((name, nbytes, functools.partial(_read_stored, member, read, what)))
    big = sorted((r for r in reads if r[1] >= PARALLEL_MIN), key=lambda r: -r[1])
    if READERS < 2 or len(big) < 2:
        for name, _, read in reads:
            out[name] = read()
        return out
    with ThreadPoolExecutor(READERS, thread_name_prefix="tensorfile-read") as pool:
        try:
            pending = {name: pool.submit(read) for name, _, read in big}
            for name, _, read in reads:  # the small ones here, while the threads read the large ones
                if name not in pending:
                    out[name] = read()
            for name, job in pending.items():
                out[name] = job.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return out


def _fileno(zf: zipfile.ZipFile) -> int | None:
    """The descriptor of the archive's file, or None when it is not a file on disk (a stream, a remote file)."""
    try:
        return zf.fp.fileno() if isinstance(zf.fp, (io.BufferedReader, io.FileIO)) else None  # type: ignore[union-attr]
    except (OSError, ValueError, AttributeError):
        return None


def _read_stored(member: StoredMember, read: Callable[[], Any], what: str) -> Any:
    """A stored member's array (``read`` from :func:`_array_reader`), then the rest of the member, so that its
    CRC-32 is checked over every byte (NumPy ignores bytes after the data)."""
    array = read()
    drain(member, what)
    return array


def _read_member(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget) -> Any:
    what = f"{path}: member {info.filename!r}"
    with zip_errors(what), zf.open(info) as member:
        array = _read_array(member, what, info.file_size, budget)
        drain(member, what)  # NumPy ignores bytes after the data; reading them checks the CRC-32
    return array


def _entry(f: IO[bytes], what: str, available: int, read: Callable[[Budget, str], Any]) -> Entry | None:
    """The array of a ``.npy`` stream described from its header (checked as :func:`_read_array` checks it),
    or None for an object array (a pickle of plain data: read whole, as it holds no tensor of its own)."""
    dtype, _, shape, used = _header(f, what)
    if dtype.kind == "O":
        return None
    nbytes = array_nbytes(shape, dtype.itemsize, what)
    if nbytes > available - used:
        raise FormatError(f"{what}: the header promises {nbytes} bytes of data, the file has {available - used}")
    return Entry(dtype.newbyteorder("="), shape, read)


def index_npy(path: str, budget: Budget) -> Index:
    """A ``.npy`` file's array from its header; the data read when asked for (:mod:`._index`).

    Raises:
        as :func:`read_npy` for the header (an object array is read now, whole).
    """
    f = open(path, "rb")
    try:
        size = os.fstat(f.fileno()).st_size
        budget.count_tensor("the array")

        def read(b: Budget, what: str) -> Any:
            f.seek(0)
            return _read_array(f, path, size, b)

        value: Any = _entry(f, path, size, read)
        if value is None:
            f.seek(0)
            value = _read_array(f, path, size, budget)
    except BaseException:
        f.close()
        raise
    return Index(value, f.close)


def index_npz(path: str, budget: Budget) -> Index:
    """An ``.npz`` archive's arrays from their members' headers (the archive checked as :func:`read_npz`
    checks it); each member read when asked for, inflated in pieces with its CRC-32 checked.

    Raises:
        as :func:`read_npz` for the archive and the headers (object arrays are read now, whole).
    """
    zf = open_zip(path, budget)
    try:
        _refuse_others(path, zf)
        out: dict[str, Any] = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            what = f"{path}: member {info.filename!r}"
            budget.count_tensor(f"member {info.filename!r}")
            read = lambda b, _, info=info: _read_member(path, zf, info, b)  # noqa: E731
            with zip_errors(what), zf.open(info) as member:
                entry = _entry(member, what, info.file_size, read)
            out[info.filename[:-4]] = entry if entry is not None else _read_member(path, zf, info, budget)
    except BaseException:
        zf.close()
        raise
    return Index(out, zf.close)


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


def _npz_sniff(probe: Probe) -> float:
    names = probe.zip_names()
    if not names or not any(n.endswith(".npy") for n in names):
        return 0.0
    if all(n.endswith(".npy") for n in names):
        return 0.9
    # arrays beside other members: an .npz the reader refuses by name (better than "not a file of tensors"),
    # unless another archive format's own member is there (a torch.save zip holds .../data.pkl)
    return 0.0 if any(n.endswith("data.pkl") for n in names) else 0.5


def _refuse_others(path: str, zf: zipfile.ZipFile) -> None:
    """Refuse an ``.npz`` holding members that are not arrays (``np.load`` would hand them out as raw bytes: a
    text, a pickle): FormatError naming them. Empty folder entries are ignored."""
    others = [i.filename for i in zf.infolist()
              if not i.filename.endswith(".npy") and not (i.filename.endswith("/") and i.file_size == 0)]  # fmt: skip
    if others:
        shown = ", ".join(repr(n) for n in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise FormatError(f"{path}: an .npz of arrays and {len(others)} other member(s): {shown}; tensorfile reads "
                          ".npz archives whose members are all .npy arrays (np.load would return the others as raw "
                          "bytes; read them with zipfile)")  # fmt: skip


def _read_npz_file(path: str, budget: Budget) -> dict[str, Any]:
    with open_zip(path, budget) as zf:
        return read_npz(path, zf, budget)


def _npz_body(f: IO[bytes], names: list[str] | None, arrays: list[np.ndarray], bar: Any) -> None:
    write_npz(f, names if names is not None else [f"arr_{i}" for i in range(len(arrays))], arrays, bar)


#: ``np.save``: one array (object arrays: plain data through the pickle machine).
NPY = Format("npy", "NumPy .npy", "numpy", (".npy",), sniff=lambda probe: float(probe.prefix.startswith(MAGIC)),
             read=lambda path, budget: read_npy(path, budget), index=index_npy)  # fmt: skip
#: ``np.savez`` / ``np.savez_compressed``: a zip of ``.npy`` members (read and written).
NPZ = Format("npz", "NumPy .npz", "numpy", (".npz",), sniff=_npz_sniff, read=_read_npz_file, index=index_npz,
             write=flat_writer("a NumPy .npz file", _npz_body), flat=True)  # fmt: skip
