"""PyTorch ``torch.save`` files, zip (torch >= 1.6) and legacy stream, read without torch.

Reference: pytorch/pytorch ``torch/serialization.py`` and ``torch/_utils.py``.
Tensors come back as NumPy arrays (views of one storage array where they shared
a storage); ``nn.Parameter`` is marked so that :func:`tensorfile.load` can hand
back a Parameter. The pickle goes through :mod:`.unpickler` with a table built
afresh for each file (a hostile BUILD can only ever touch throwaway objects).
"""

from __future__ import annotations

import os
import zipfile
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import FormatError, UnsupportedTypeError
from ..format.dtypes import dtype_from_name
from ..format.memory import empty_bytes
from ..format.reader import READERS
from ..limits import DEFAULT_LIMITS, Budget, array_nbytes
from ..safepickle.machine import Record, load_pickle
from ..safepickle.numpy_objects import numpy_table, python_table, resolve
from ..tree import short
from ._write import tree_writer
from ._zip import FileRange, check_zip, member_array, zip_errors
from .base import Format, Probe

__all__ = ["read_torch", "read_torch_range", "Parameter", "is_torch_zip", "TORCH"]

_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}  # fmt: skip
_TORCH_DTYPES = {
    "float64": "float64", "float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "int64": "int64",
    "int32": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool", "complex64": "complex64",
    "complex128": "complex128", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "float8_e4m3fn": "float8_e4m3fn", "float8_e5m2": "float8_e5m2", "float8_e4m3fnuz": "float8_e4m3fnuz",
    "float8_e5m2fnuz": "float8_e5m2fnuz",
}  # fmt: skip
_QUANTIZED = {"QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage"}


class Parameter(np.ndarray):
    """A NumPy array that was an ``nn.Parameter`` (``requires_grad`` kept)."""

    requires_grad: bool = True


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None
    member: zipfile.ZipInfo | None = None
    nbytes: int = 0  # whole items of the storage's member


@dataclass(eq=False)
class _Lazy(Record):
    """A tensor to build once its storage is read (``_rebuild_tensor_v2`` / ``_v3``)."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: np.dtype | None
    requires_grad: bool = False
    parameter: bool = False
    __hash__ = None  # type: ignore[assignment]

    def setstate(self, state: Any) -> None:
        """A tensor's BUILD state (its ``__dict__``, e.g. from a Parameter subclass): dropped."""
        if state is not None and type(state) not in (dict, OrderedDict, tuple):
            raise FormatError(f"a tensor with a state of type {type(state).__name__}")


@dataclass(frozen=True)
class _DTypeName:
    """``torch.float32`` and friends: a name, fresh for each file (never a process-wide descriptor)."""

    name: str


@dataclass(frozen=True)
class _StorageType:
    """``torch.FloatStorage`` and friends: the element dtype's name (or a quantized storage's class)."""

    dtype: str | None
    quantized: str | None = None


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int for v in value):
        raise FormatError(f"{what} must be a tuple of ints, found {short(value)}")
    return tuple(value)


def _table(path: str, budget: Budget) -> dict[tuple[str, str], Any]:
    """The names a torch pickle may use, each a fresh function or value for this file only.

    As torch's ``weights_only=True`` reads: tensors, Parameters, dtypes, ``torch.Size``,
    ``torch.device``, plain Python values (:func:`python_table`) and NumPy arrays and
    scalars (:func:`numpy_table`).
    """

    def rebuild_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False, *rest: Any) -> _Lazy:
        if not isinstance(storage, _Storage) or type(offset) is not int:
            raise FormatError(f"{path}: a tensor that is not built on a storage")
        budget.count_tensor("a tensor")
        return _Lazy(storage, offset, _ints(size, "size"), _ints(stride, "stride"), None, bool(requires_grad))

    def rebuild_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, dtype: Any, *rest: Any) -> _Lazy:
        lazy = rebuild_v2(storage, offset, size, stride, requires_grad)
        if not isinstance(dtype, _DTypeName):
            raise FormatError(f"{path}: tensor dtype {type(dtype).__name__} is not a torch dtype")
        lazy.dtype = dtype_from_name(dtype.name)
        return lazy

    def rebuild_parameter(data: Any, requires_grad: Any = True, *rest: Any) -> Any:
        if isinstance(data, _Lazy):
            data.parameter, data.requires_grad = True, bool(requires_grad)
        return data

    def size(*args: Any) -> tuple[int, ...]:
        dims = args[0] if len(args) == 1 and type(args[0]) in (tuple, list) else args
        return _ints(tuple(dims), "torch.Size")

    def device(*args: Any) -> str:
        if not all(type(a) in (str, int) for a in args):
            raise FormatError(f"{path}: torch.device of {[type(a).__name__ for a in args]}")
        return ":".join(str(a) for a in args)[:64]

    table: dict[tuple[str, str], Any] = {
        **python_table(path),
        **numpy_table(path, budget),
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_v2,
        ("torch._utils", "_rebuild_tensor_v3"): rebuild_v3,
        ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
        ("torch", "Size"): size,
        ("torch", "device"): device,
    }
    for name, dtype in _STORAGE_DTYPES.items():
        table[("torch", name)] = _StorageType(dtype)
    table[("torch.storage", "UntypedStorage")] = _StorageType("uint8")
    for name in _QUANTIZED:
        table[("torch", name)] = _StorageType(None, name)
    for name in _TORCH_DTYPES:
        table[("torch", name)] = _DTypeName(name)
    return table


def _storage_kind(kind: Any, path: str) -> np.dtype:
    if isinstance(kind, _StorageType) and kind.quantized is not None:
        raise UnsupportedTypeError(f"{path}: quantized storage torch.{kind.quantized} is not supported (dequantize it first)")
    if not isinstance(kind, _StorageType) or kind.dtype is None:
        raise FormatError(f"{path}: unknown storage type {type(kind).__name__}")
    return dtype_from_name(kind.dtype)


def _materialize(value: Any, path: str, budget: Budget) -> Any:
    """Containers with arrays in place of the pickle's records (shared containers and tensors stay shared)."""

    def convert(record: Any) -> Any:
        return _tensor(record, path, budget) if isinstance(record, _Lazy) else NotImplemented

    return resolve(value, path, budget.limits.max_depth, convert)


#: Most dims a tensor may have (NumPy's limit).
MAX_DIMS = 64


@dataclass(frozen=True)
class _Layout:
    """Where a tensor lies in its storage: bytes ``begin`` to ``end`` hold every element it reaches."""

    dtype: np.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]  # in items; 0 for dims of one (never used)
    nbytes: int  # the tensor's own bytes (a view may reach fewer or more of the storage)
    begin: int
    end: int
    storage_bytes: int

    def label(self) -> str:
        return f"tensor of shape {self.shape} ({self.dtype.name}), a view of a {self.storage_bytes}-byte storage"


def _layout(lazy: _Lazy, path: str, storage_bytes: int) -> _Layout:
    """Check that ``lazy`` lies inside its storage of ``storage_bytes`` bytes, and say where (nothing read)."""
    dtype = lazy.dtype if lazy.dtype is not None else lazy.storage.dtype
    item = dtype.itemsize
    shape, stride = lazy.shape, lazy.stride
    if len(shape) > MAX_DIMS or len(shape) != len(stride):
        raise FormatError(f"{path}: a tensor of {len(shape)} dims with {len(stride)} strides (at most {MAX_DIMS} dims)")
    if any(s < 0 for s in stride) or any(d < 0 for d in shape) or lazy.offset < 0:
        raise FormatError(f"{path}: a tensor with a negative size, stride or offset: {shape}, {stride}, {lazy.offset}")
    nbytes = array_nbytes(shape, item, f"{path}: a tensor (a view of a {storage_bytes}-byte storage)")
    if not nbytes:
        return _Layout(dtype, shape, stride, 0, 0, 0, storage_bytes)
    stride = tuple(s if d > 1 else 0 for d, s in zip(shape, stride))  # a stride of a dim of one is never used
    end = (lazy.offset + sum((d - 1) * s for d, s in zip(shape, stride)) + 1) * item
    if end > storage_bytes:
        raise FormatError(f"{path}: a tensor of shape {shape} reaches byte {end} of a {storage_bytes}-byte storage")
    return _Layout(dtype, shape, stride, nbytes, lazy.offset * item, end, storage_bytes)


def _tensor(lazy: _Lazy, path: str, budget: Budget) -> np.ndarray:
    """The tensor ``lazy`` describes, as a view of its storage; its bytes are charged to ``budget`` first."""
    storage = lazy.storage
    if storage.data is None:
        raise FormatError(f"{path}: storage {storage.key!r} has no data")
    raw = storage.data.view(np.uint8)
    layout = _layout(lazy, path, raw.size)
    budget.charge(layout.nbytes, layout.label())
    return _parameter(_strided(raw[layout.begin : layout.end], layout), lazy)


def _strided(raw: np.ndarray, layout: _Layout) -> np.ndarray:
    """The tensor over ``raw``, the bytes ``layout.begin`` to ``layout.end`` of its storage (a view: tensors of
    one storage share memory)."""
    if not layout.nbytes:
        return np.empty(layout.shape, layout.dtype)
    # as_strided cannot rebuild ml_dtypes types (bfloat16, float8) from their type string, so those go
    # through an unsigned carrier of their size.
    item = layout.dtype.itemsize
    carrier = np.dtype(f"<u{item}") if item in (1, 2, 4, 8) else layout.dtype
    strides = [s * item for s in layout.stride]
    return np.lib.stride_tricks.as_strided(raw.view(carrier), layout.shape, strides, writeable=True).view(layout.dtype)


def _parameter(array: np.ndarray, lazy: _Lazy) -> np.ndarray:
    if not lazy.parameter:
        return array
    parameter = array.view(Parameter)
    parameter.requires_grad = lazy.requires_grad
    return parameter


def _storage_id(pid: Any, what: str) -> tuple[Any, str, int]:
    """``(storage type, key, element count)`` of a persistent id ``('storage', type, key, location, numel, ...)``."""
    if type(pid) is not tuple or len(pid) < 5 or pid[0] != "storage" or type(pid[4]) is not int or pid[4] < 0:
        raise FormatError(f"{what}: unexpected persistent id {str(pid)[:120]}")
    if type(pid[2]) not in (str, int) or len(str(pid[2])) > 256:
        raise FormatError(f"{what}: a storage key of type {type(pid[2]).__name__}")
    return pid[1], str(pid[2]), pid[4]


def is_torch_zip(zf: zipfile.ZipFile) -> str | None:
    """The archive's root folder if it holds a torch.save pickle (``<root>/data.pkl``)."""
    for name in zf.namelist():
        if name.endswith("/data.pkl") and name.count("/") == 1:
            return name.split("/", 1)[0]
    return None


#: Large storages are read in pieces of this size, by :data:`READERS` helper threads (``preadv`` releases the GIL).
READ_CHUNK = 8 << 20
#: Storages smaller than this are read at once by the unpickling thread (a hand-off costs more).
SMALL = 1 << 20
def _read_into(path: str, fd: int, info: zipfile.ZipInfo, piece: memoryview, position: int) -> None:
    """Fill ``piece`` with the file's bytes from ``position`` on (a part of member ``info``)."""
    done = 0
    while done < len(piece):
        got = os.preadv(fd, [piece[done:]], position + done)
        if got <= 0:
            raise FormatError(
                f"{path}: {info.filename!r}: expected {len(piece)} bytes at byte {position}, the file ended "
                f"after {done} (truncated)"
            )
        done += got


class _StorageReader:
    """Reads the members of one torch zip file into new arrays (a context manager).

    torch writes storages uncompressed, so a storage is read straight from the file
    into its array with ``preadv``: one copy, from the page cache into the array.
    Large storages are read in pieces by helper threads while the pickle goes on;
    :meth:`wait` returns once every piece is in. Members compressed by a re-zipping
    tool (or encrypted) go through zipfile, which also checks their CRC-32.

    Stored members are not CRC-checked, as torch.load does not check them: CRC-32
    (zlib, about 4 GB/s here) would cost more than the read itself.
    """

    def __init__(self, path: str, fd: int, zf: zipfile.ZipFile, budget: Budget, offsets: dict[str, int], base: int = 0) -> None:
        self.path, self.fd, self.zf, self.budget, self.offsets, self.base = path, fd, zf, budget, offsets, base
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []

    def read(self, info: zipfile.ZipInfo) -> np.ndarray:
        """Member ``info``'s bytes in a new writable uint8 array (large ones complete only after :meth:`wait`)."""
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            return member_array(self.zf, info, self.budget, f"member {info.filename!r}")  # inflated, CRC-32 checked
        start = self.base + self.offsets[info.filename]  # check_zip found it inside the archive, overlapping no other member
        self.budget.charge(info.file_size, f"member {info.filename!r}")
        data = empty_bytes(info.file_size)
        view = data.data
        if info.file_size < SMALL:
            _read_into(self.path, self.fd, info, view, start)
            return data
        if self._pool is None:
            self._pool = ThreadPoolExecutor(READERS, thread_name_prefix="tensorfile-read")
        for begin in range(0, info.file_size, READ_CHUNK):
            piece = view[begin : begin + READ_CHUNK]
            self._pending.append(self._pool.submit(_read_into, self.path, self.fd, info, piece, start + begin))
        return data

    def wait(self) -> None:
        """Wait for every piece; raises the first piece's error (FormatError when the file was cut short)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __enter__(self) -> "_StorageReader":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _small_member(path: str, zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A small record (data.pkl, byteorder), its size checked first; zip damage becomes a FormatError."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise FormatError(f"{path}: {name!r} claims {info.file_size} bytes (at most {limit} are read)")
    with zip_errors(f"{path}: {name!r}"), zf.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise FormatError(f"{path}: {name!r} holds more than {limit} bytes")
    return data


def _archive(path: str, zf: zipfile.ZipFile, root: str, budget: Budget) -> tuple[dict[str, int], bytes]:
    """Check a torch zip's members (nothing of a storage read); where each member's data starts, and data.pkl."""
    names = set(zf.namelist())
    strays = sorted(n for n in names if not n.startswith(f"{root}/"))
    if strays:  # torch.load refuses them too; two archives in one zip would be read differently by two readers
        raise FormatError(f"{path}: member {strays[0]!r} is outside the archive's folder {root!r}/")
    if f"{root}/constants.pkl" in names or any(n.startswith(f"{root}/code/") for n in names):
        raise UnsupportedTypeError(f"{path}: a TorchScript archive (it carries code); tensorfile does not read TorchScript")
    offsets = check_zip(path, zf, budget)  # duplicate names, local headers, overlaps, zip bombs
    byteorder = _small_member(path, zf, f"{root}/byteorder", 64) if f"{root}/byteorder" in names else b"little"
    if byteorder.strip() != b"little":
        raise UnsupportedTypeError(f"{path}: big-endian torch files are not supported (byteorder {byteorder[:16]!r})")
    return offsets, _small_member(path, zf, f"{root}/data.pkl", budget.limits.max_header_bytes)


def _unpickle(path: str, zf: zipfile.ZipFile, root: str, pickled: bytes, budget: Budget,
              read: Callable[[zipfile.ZipInfo], np.ndarray] | None) -> Any:  # fmt: skip
    """data.pkl's value, with a :class:`_Lazy` for each tensor; ``read(member)`` reads a storage's bytes
    (None: storages are described, not read)."""
    names = set(zf.namelist())
    storages: dict[str, _Storage] = {}
    table = _table(path, budget)

    def persistent_load(pid: Any) -> _Storage:
        kind, key, numel = _storage_id(pid, path)
        if key not in storages:
            dtype = _storage_kind(kind, path)
            member = f"{root}/data/{key}"
            if member not in names:
                raise FormatError(f"{path}: storage {key!r} is missing from the archive")
            info = zf.getinfo(member)
            if numel * dtype.itemsize > info.file_size and kind.dtype != "uint8":
                raise FormatError(
                    f"{path}: storage {key!r} claims {numel} elements, the archive holds {info.file_size} bytes"
                )
            usable = (info.file_size // dtype.itemsize) * dtype.itemsize
            data = read(info)[:usable].view(dtype) if read is not None else None
            storages[key] = _Storage(key, dtype, numel, data, info, usable)
        return storages[key]

    return load_pickle(pickled, table, persistent_load=persistent_load, what=f"{path}: data.pkl", budget=budget)


def _read_zip(path: str, f: Any, zf: zipfile.ZipFile, root: str, budget: Budget, fd: int | None = None, base: int = 0) -> Any:
    """The value of the torch zip ``zf`` read from ``f`` (an archive that starts at byte ``base`` of file ``fd``)."""
    offsets, pickled = _archive(path, zf, root, budget)
    with _StorageReader(path, f.fileno() if fd is None else fd, zf, budget, offsets, base) as reader:
        value = _unpickle(path, zf, root, pickled, budget, reader.read)
        reader.wait()
    return _materialize(value, path, budget)


def torch_zip(path: str, f: Any) -> tuple[zipfile.ZipFile, str]:
    """The zip archive in the open file ``f`` and its root folder (the caller closes the archive).

    Raises:
        FormatError: not a readable zip, or one without ``<root>/data.pkl``.
    """
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, NotImplementedError, UnicodeDecodeError, ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{path}: a damaged zip archive ({exc})") from None
    root = is_torch_zip(zf)
    if root is None:
        zf.close()
        raise FormatError(f"{path}: a zip archive without a torch data.pkl")
    return zf, root


def read_torch(path: str, budget: Budget | None = None) -> Any:
    """Read a ``torch.save`` file (zip or legacy) into NumPy arrays and Python containers.

    Every storage and every tensor (a view may be wider than its storage) is charged
    to ``budget`` (default: :data:`tensorfile.limits.DEFAULT_LIMITS` for this file) first.

    Raises:
        UnsafeFileError: the pickle names a global outside the safe table.
        UnsupportedTypeError: TorchScript, quantized storages, big-endian files.
        FormatError: malformed or truncated.
    """
    try:
        return _read(path, budget)
    except RecursionError:
        raise FormatError(f"{path}: nested too deeply") from None


def read_torch_range(path: str, fd: int, start: int, length: int, budget: Budget, what: str) -> Any:
    """The value of a ``torch.save`` zip stored as bytes ``start`` to ``start + length`` of an open file
    (a DCP ``.distcp`` item: pytorch/pytorch ``torch/distributed/checkpoint/filesystem.py``, ``_write_item``).

    The archive is checked (:func:`._zip.check_zip`) and read as :func:`read_torch` reads a file, within
    those bytes only; ``what`` names it in messages (``"ckpt/__0_0.distcp: 'model.w'"``).

    Raises:
        UnsafeFileError, UnsupportedTypeError, FormatError: as :func:`read_torch`.
    """
    window = FileRange(fd, start, length)
    try:
        zf = zipfile.ZipFile(window)
    except (zipfile.BadZipFile, NotImplementedError, UnicodeDecodeError, ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{what}: not a torch.save zip archive ({exc})") from None
    with zf:
        root = is_torch_zip(zf)
        if root is None:
            raise FormatError(f"{what}: a zip archive without a torch data.pkl")
        try:
            return _read_zip(what, window, zf, root, budget, fd, start)
        except RecursionError:
            raise FormatError(f"{what}: nested too deeply") from None


def _read(path: str, budget: Budget | None) -> Any:
    with open(path, "rb") as f:
        if budget is None:
            budget = DEFAULT_LIMITS.budget(path, os.fstat(f.fileno()).st_size)
        prefix = f.read(4)
        f.seek(0)
        if prefix.startswith(b"PK"):
            zf, root = torch_zip(path, f)
            with zf:
                return _read_zip(path, f, zf, root, budget)
        from .torch_legacy import read_legacy

        return read_legacy(path, f, budget)



def _zip_sniff(probe: Probe) -> float:
    names = probe.zip_names()
    return 0.95 if names is not None and any(n.endswith("/data.pkl") and n.count("/") == 1 for n in names) else 0.0


def _write_body(f: Any, flat: Any, bar: Any) -> None:
    from ._torch_write import write_torch

    write_torch(f, flat, bar)


def _index(path: str, budget: Budget) -> Any:
    from ._torch_index import index_torch

    return index_torch(path, budget)


#: ``torch.save`` since torch 1.6: a zip archive of ``data.pkl`` and one member per storage.
TORCH = Format(
    "torch", "PyTorch torch.save (zip)", "torch", (".pt", ".pth", ".bin", ".ckpt"), sniff=_zip_sniff,
    read=lambda path, budget: read_torch(path, budget), index=_index, write=tree_writer("a torch.save file", _write_body),
)  # fmt: skip
