""":func:`tensorfile.open` for files that are not one safetensors file.

A :class:`ForeignFile` offers what :class:`tensorfile.TensorFile` offers
(``keys``, ``f[name]``, ``info``, ``slice``, ``metadata``, ``load``) over:

* a Hugging Face sharded index: each shard is opened lazily, its tensors
  memory-mapped (copy-on-write) as ``f[name]`` asks for them;
* GGUF: tensors memory-mapped (copy-on-write) from the file, quantized ones listed;
* torch zip, ``.npy``, ``.npz``, MXNet, HDF5 and ``.keras`` files (formats with an
  ``index``, :mod:`._index`): their headers read when opened, each tensor read from
  the file when ``f[name]`` asks for it, through the same safe readers
  :func:`tensorfile.load` uses;
* a legacy (pre-1.6) ``torch.save`` stream: read once when opened (its storages sit
  between pickles, so listing them is reading them).

Tensors of other tools' files are named by dotted path (``"optimizer.state.0.exp_avg"``),
as the CLI lists them.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import FormatError, UnsupportedTypeError
from ..format.dtypes import code_of
from ..lazyfile import LazyFile
from ..limits import Limits
from .base import Format

__all__ = ["ForeignFile"]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class ForeignFile(LazyFile):
    """Tensors by name from a sharded index, a GGUF file or another tool's file (see the module docs).

    Attributes:
        path: the file opened.
        format: its format's name (:mod:`tensorfile.formats`).
        title: what ``tensorfile info`` calls that format.
        structure: the file's value as :func:`tensorfile.load` returns it, with tensors not read yet
            in place (its plain values, an epoch or a learning rate, are there); None for a file of
            named tensors only (sharded, GGUF).
    """

    def __init__(
        self,
        path: str,
        format: Format,
        infos: Mapping[str, Any],
        metadata: Mapping[str, Any],
        mapped: Callable[[str], np.ndarray],
        convert: Callable[[str, np.ndarray], Any],
        load: Callable[[], Any],
        get: Callable[[str], Any] | None = None,
        close: Callable[[], None] = lambda: None,
        has_record: bool = False,
        rows: Callable[[str, int, int], np.ndarray] | None = None,
        structure: Any = None,
    ) -> None:
        self.path, self.format, self.title = path, format.name, format.title
        self.structure = structure
        self._infos = dict(infos)
        self._metadata = {str(k): _text(v) for k, v in metadata.items()}
        self._mapped_fn, self._convert_fn, self._load, self._get, self._close = mapped, convert, load, get, close
        self._closed = False
        self._has_record = has_record
        self._rows_fn = rows

    def keys(self) -> list[str]:
        """Tensor names, in the file's order."""
        return list(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the file is closed")

    def _mapped(self, name: str) -> np.ndarray:
        self._check_open()
        self.info(name)
        return self._mapped_fn(name)

    def _rows(self, name: str, start: int, stop: int) -> np.ndarray | None:
        if self._rows_fn is None:
            return None
        self._check_open()
        self.info(name)
        return self._rows_fn(name, start, stop)

    def _convert(self, name: str, array: np.ndarray) -> Any:
        return self._convert_fn(name, array)

    def __getitem__(self, name: str) -> Any:
        """The tensor ``name`` (memory-mapped where the format allows, copy-on-write).

        Raises:
            KeyError: no such tensor.
        """
        self._check_open()
        if self._get is not None:
            self.info(name)
            return self._get(name)
        return self._convert(name, self._mapped(name))

    def info(self, name: str) -> Any:
        """dtype, shape and size of ``name`` (a :class:`tensorfile.TensorInfo`) without reading its data."""
        if name not in self._infos:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        return self._infos[name]

    @property
    def metadata(self) -> dict[str, str]:
        """The file's metadata as text (JSON for values that are not strings)."""
        return dict(self._metadata)

    @property
    def has_record(self) -> bool:
        """True only for a sharded checkpoint whose every shard is a tensorfile file (checksums, checked on load)."""
        return self._has_record

    def load(self) -> Any:
        """The whole file, as :func:`tensorfile.load` returns it."""
        return self._load()

    def close(self) -> None:
        """Close the file; tensors already returned stay valid."""
        self._closed = True
        self._close()


def array_info(name: str, array: Any, offset: int | None = None) -> Any:
    """A :class:`tensorfile.TensorInfo` for an array held in memory or mapped at ``offset``, or for an
    :class:`._index.Entry` (a tensor not read yet: same dtype, shape and size)."""
    from ..lazyfile import TensorInfo

    try:
        code = code_of(array.dtype, name)
    except UnsupportedTypeError:  # NumPy-only dtypes (strings, long double) have no safetensors code
        code = ""
    return TensorInfo(name, array.dtype.name, tuple(array.shape), int(array.nbytes), code, offset, None)  # type: ignore[arg-type]



def open_sharded(path: str, framework: str | None, options: Mapping[str, Any], verify: bool, limits: Limits) -> ForeignFile:
    """A sharded index: each shard opened (header only) now, tensors mapped when asked for."""
    from ..files import load
    from ..lazy import TensorFile
    from .sharded import read_index

    shards: list[TensorFile] = []

    def open_shard(shard_path: str) -> dict[str, TensorFile]:
        f = TensorFile(shard_path, framework, options.get("map_location"), verify, options.get("device"), limits=limits)
        shards.append(f)
        return {name: f for name in f.keys()}

    def close() -> None:
        for f in shards:
            f.close()

    try:
        owner = read_index(path, open_shard)
        with open(path, "rb") as index:
            metadata = json.loads(index.read().decode("utf-8")).get("metadata") or {}
    except BaseException:
        close()
        raise
    from .sharded import SHARDED

    return ForeignFile(
        path, SHARDED, {name: f.info(name) for name, f in owner.items()},
        metadata if isinstance(metadata, dict) else {},
        mapped=lambda name: owner[name]._mapped(name), convert=lambda name, a: owner[name]._convert(name, a),
        load=lambda: load(path, framework=framework, limits=limits, **options), get=lambda name: owner[name][name],
        close=close,
        has_record=bool(shards) and all(f.has_record for f in shards),
        rows=lambda name, start, stop: owner[name]._rows(name, start, stop),
    )  # fmt: skip


def open_read(path: str, fmt: Format, framework: str | None, options: Mapping[str, Any], limits: Limits) -> ForeignFile:
    """Another tool's file, read now through its format's safe reader (within ``limits``), served by dotted name."""
    from ..files import load
    from ..frameworks import get_adapter
    from ..handoff import source_framework, to_framework
    from ..tree import flat_arrays

    value = fmt.read_value(path, limits)
    arrays = flat_arrays(value)
    if framework is None:
        framework = source_framework(fmt.framework, path)
    adapter = get_adapter(framework)
    return ForeignFile(
        path, fmt, {name: array_info(name, a) for name, a in arrays.items()}, {},
        mapped=arrays.__getitem__, convert=lambda name, a: to_framework(adapter, path, name, a, {}, options),
        load=lambda: load(path, framework=framework, limits=limits, **options), structure=value,
    )  # fmt: skip


def open_indexed(path: str, fmt: Format, framework: str | None, options: Mapping[str, Any], limits: Limits) -> ForeignFile:
    """Another tool's file listed from its headers (``fmt.index``); each tensor read when ``f[name]`` asks.

    The file's one :class:`~tensorfile.limits.Budget` (from ``limits``) is charged for the headers, then
    for each tensor the first time it is read; reading a tensor again charges a fresh budget of the same
    size (the caller holds at most the file's data once per name; each read is bounded).
    """
    from ..files import load
    from ..frameworks import get_adapter
    from ..handoff import source_framework, to_framework
    from ..limits import out_of_memory
    from ..tree import flat_arrays
    from ._index import Entry

    size = os.path.getsize(path)
    budget = limits.budget(path, size)
    index = fmt.index(path, budget)  # type: ignore[misc]
    try:
        named = flat_arrays(index.value, leaf=Entry)
        infos = {name: array_info(name, item) for name, item in named.items()}
        if framework is None:
            framework = source_framework(fmt.framework, path)
        adapter = get_adapter(framework)
    except BaseException:
        index.close()
        raise
    charged: set[str] = set()

    def mapped(name: str) -> np.ndarray:
        item = named[name]
        if not isinstance(item, Entry):
            return item  # held in the headers (an array pickled in data.pkl), read when opened
        first = name not in charged
        charged.add(name)
        try:
            return item.read(budget if first else limits.budget(path, size), f"tensor {name!r}")
        except MemoryError as exc:
            raise out_of_memory(path, exc) from None
        except RecursionError:
            raise FormatError(f"{path}: tensor {name!r}: nested too deeply") from None

    return ForeignFile(
        path, fmt, infos, {}, mapped=mapped, convert=lambda name, a: to_framework(adapter, path, name, a, {}, options),
        load=lambda: load(path, framework=framework, limits=limits, **options), close=index.close,
        structure=index.value,
    )  # fmt: skip


def open_gguf(path: str, framework: str | None, options: Mapping[str, Any], limits: Limits) -> ForeignFile:
    """A GGUF file: header read now, tensors memory-mapped (copy-on-write) when asked for, each through the
    bytes around it only (:class:`tensorfile.format.ranges.RangeMaps`); slices of rows read with ``pread``.

    Quantized tensors are listed (their dtype is the ggml type name, e.g. ``"Q4_K"``);
    reading one raises :class:`UnsupportedTypeError`. Big-endian files give copies
    in the machine's byte order (charged to ``limits``).
    """
    import sys

    from ..files import load
    from ..format.dtypes import dtype_from_name
    from ..format.ranges import RangeMaps, read_rows
    from ..frameworks import get_adapter
    from ..handoff import to_framework
    from ..lazyfile import TensorInfo
    from .gguf import GGUF, read_header

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        header = read_header(path, limits.budget(path, size))
        adapter = get_adapter(framework or "numpy")
    except BaseException:
        os.close(fd)
        raise
    maps = RangeMaps(fd, size, path)
    swap = header.big_endian != (sys.byteorder == "big")
    infos = {
        name: TensorInfo(name, t.dtype or t.type_name, t.shape, t.nbytes, _code(t.dtype), t.offset, None)
        for name, t in header.tensors.items()
    }

    def dtype_of(name: str) -> np.dtype:
        t = header.tensors[name]
        if t.dtype is None:
            raise UnsupportedTypeError(f"{path}: tensor {name!r} has type {t.type_name} (quantized), which tensorfile does not read")
        return dtype_from_name(t.dtype)

    def mapped(name: str) -> np.ndarray:
        dtype, t = dtype_of(name), header.tensors[name]
        array = maps.array(t.offset, dtype.newbyteorder(">" if header.big_endian else "<"), t.shape, name)
        if swap and dtype.itemsize > 1:
            limits.budget(path, size).charge(t.nbytes, f"tensor {name!r} in the machine's byte order")
            return array.astype(dtype)
        return array

    def rows(name: str, start: int, stop: int) -> np.ndarray:
        dtype, t = dtype_of(name), header.tensors[name]
        array = read_rows(fd, path, name, t.offset, t.shape, dtype, start, stop, limits.budget(path, size))
        if swap and dtype.itemsize > 1:
            array.view(f"u{dtype.itemsize}").byteswap(inplace=True)
        return array

    def close() -> None:
        nonlocal fd
        if fd >= 0:  # once: the descriptor's number may be reused after
            maps.release()
            os.close(fd)
            fd = -1

    return ForeignFile(
        path, GGUF, infos, header.metadata, mapped=mapped,
        convert=lambda name, a: to_framework(adapter, path, name, a, {}, options),
        load=lambda: load(path, framework=framework, limits=limits, **options), close=close, rows=rows,
    )  # fmt: skip


def _code(dtype: str | None) -> str:
    from ..format.dtypes import dtype_from_name

    return code_of(dtype_from_name(dtype)) if dtype else ""
