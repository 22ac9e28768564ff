"""Lazy reading: :func:`open` and the :class:`TensorFile` it returns.

A tensorfile or safetensors file is memory-mapped (copy-on-write) tensor by tensor;
other tools' files get a :class:`tensorfile.formats._opened.ForeignFile` with the
same methods (see :func:`open`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from .errors import FormatError
from .files import (
    _as_logical,
    _check_limits,
    _verify,
    find_format,
    load,
    resolve_index,
)
from .format.checksums import checksum
from .format.dtypes import STORED_AS, byte_view, dtype_from_name
from .format.header import TensorEntry
from .format.reader import SafetensorsReader
from .format.record import RECORD_KEY, logical_shape, read_record
from .handoff import check_framework, pick_adapter
from .lazyfile import LazyFile, TensorInfo, TensorSlice
from .limits import DEFAULT_LIMITS, Limits, out_of_memory
from .storage import is_url, local_path
from .tree import unflatten

__all__ = ["open", "TensorFile", "TensorInfo", "TensorSlice"]


class TensorFile(LazyFile):
    """A tensorfile or safetensors file opened by :func:`open`: lazy, zero-copy, read-only access by tensor name."""

    format = "safetensors"

    def __init__(
        self, path: str | os.PathLike[str], framework: str | None, map_location: Any, verify: bool, device: Any = None,
        limits: Limits = DEFAULT_LIMITS, reader: SafetensorsReader | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        check_framework(framework)
        self._limits = limits
        self._reader = reader if reader is not None else SafetensorsReader(path, limits)  # reader: an object's ranges
        self._storage = {} if reader is None else {"storage_options": storage_options}
        self.path = self._reader.path
        try:
            self._record = read_record(self._reader.header, self._reader.path)
        except BaseException:
            self._reader.close()
            raise
        self._framework, self._verify = framework, verify
        self._options = {"map_location": map_location, "device": device}

    # Mapping-like access
    def keys(self) -> list[str]:
        """Tensor names as stored, in data order."""
        return list(self._reader.entries)

    def __len__(self) -> int:
        return len(self._reader.entries)

    def __contains__(self, name: object) -> bool:
        return name in self._reader.entries

    def _entry(self, name: str) -> TensorEntry:
        try:
            return self._reader.entries[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def _info(self, name: str) -> Mapping[str, Any]:
        return self._record.tensors[name] if self._record is not None else {}

    def _mapped(self, name: str) -> np.ndarray:
        entry = self._entry(name)
        return _as_logical(self._reader.map(entry), self._info(name), entry)

    def _rows(self, name: str, start: int, stop: int) -> np.ndarray:
        entry = self._entry(name)
        info = self._info(name)
        dtype = info.get("dtype")
        dtype = dtype_from_name(dtype) if dtype in STORED_AS else entry.dtype
        budget = self._limits.budget(self.path, self._reader.size)
        return self._reader.read_rows(entry, logical_shape(entry, info), dtype, start, stop, budget)

    def _convert(self, name: str, array: np.ndarray) -> Any:
        info = self._info(name)
        adapter = pick_adapter(self._framework, info.get("framework"), self.path)
        return adapter.from_numpy(array, info, self._options)

    def __getitem__(self, name: str) -> Any:
        """The tensor ``name``, memory-mapped (copy-on-write) where the framework allows.

        Only the bytes around the tensor are mapped (:mod:`tensorfile.format.ranges`), so
        a tensor can be read under an address-space limit (``ulimit -v``) smaller than the file.

        Raises:
            KeyError: no such tensor.
            IntegrityError: its checksum does not match (only when opened with verify=True).
            LimitError: the tensor cannot be mapped (larger than the address space left).
        """
        entry = self._entry(name)
        array = self._reader.map(entry)
        if self._verify and self._record is not None:
            found = checksum(byte_view(array) if entry.nbytes else b"")
            _verify(self.path, name, self._record.tensors[name]["checksum"], found)
        array = _as_logical(array, self._info(name), entry)
        if (self._reader.header.data_start + entry.begin) % array.dtype.itemsize:
            self._limits.budget(self.path, self._reader.size).charge(entry.nbytes, f"a copy of tensor {name!r}")
            array = array.copy()  # misaligned in the file (other writers): frameworks need alignment (maps start on a page)
        return self._convert(name, array)

    def read(self, name: str) -> Any:
        """The tensor ``name`` read into fresh memory (``preadv``), its checksum always checked when the file
        records one: nothing of the file stays mapped or resident once the tensor is dropped (what
        ``load_parameters`` wants, one tensor at a time).

        Raises:
            KeyError: no such tensor. IntegrityError: its checksum does not match.
            LimitError: its bytes exceed the memory budget (:class:`tensorfile.Limits`).
        """
        entry = self._entry(name)
        self._limits.budget(self.path, self._reader.size).charge(entry.nbytes, f"tensor {name!r}")
        array, found = self._reader.read(entry, hash=self._record is not None)
        if self._record is not None:
            _verify(self.path, name, self._record.tensors[name]["checksum"], found)
        return self._convert(name, _as_logical(array, self._info(name), entry))

    def info(self, name: str) -> TensorInfo:
        """dtype, shape and size of ``name`` without reading its data."""
        entry = self._entry(name)
        info = self._info(name)
        dtype = info.get("dtype") or entry.dtype.name
        return TensorInfo(
            name, dtype, logical_shape(entry, info), entry.nbytes, entry.code,
            self._reader.header.data_start + entry.begin, info.get("checksum"),
        )  # fmt: skip

    @property
    def metadata(self) -> dict[str, str]:
        """User metadata (``__metadata__`` without tensorfile's own entry)."""
        return {k: v for k, v in self._reader.metadata.items() if k != RECORD_KEY}

    @property
    def has_record(self) -> bool:
        """True when the file carries tensorfile's record (structure and checksums)."""
        return self._record is not None

    @property
    def has_shared_storage(self) -> bool:
        """True when the file records tensors that shared storage (``load`` rebuilds them as views)."""
        return self._record is not None and bool(self._record.shared)

    def load(self, *, mapped: bool = False) -> Any:
        """The whole saved structure, as :func:`load` returns it.

        Args:
            mapped: each tensor as ``f[name]`` returns it (memory-mapped,
                checksums checked only when opened with ``verify=True``) instead
                of read into memory; tensors that shared storage do not share it.
        """
        if not mapped:
            return load(self.path, framework=self._framework, limits=self._limits, **self._options, **self._storage)
        if self._record is None:
            return {name: self[name] for name in self.keys()}

        def tensor(name: Any) -> Any:
            if not isinstance(name, str) or name not in self:
                raise FormatError(f"{self.path}: the structure names tensor {name!r}, which the file does not hold")
            return self[name]

        return unflatten(self._record.root, tensor)

    def close(self) -> None:
        """Close the file; tensors already returned stay valid."""
        self._reader.close()


def open(  # noqa: A001 - mirrors builtins.open / safetensors.safe_open
    path: str | os.PathLike[str],
    *,
    framework: str | None = None,
    map_location: Any = None,
    device: Any = None,
    verify: bool = False,
    limits: Limits | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> LazyFile:
    """Open a file for lazy, zero-copy reading; use as a context manager.

    ``f.keys()``, ``f[name]`` (memory-mapped, copy-on-write: changing it never
    changes the file), ``f.metadata``, ``f.info(name)`` (dtype, shape, nbytes
    without reading data) and ``f.slice(name)[...]`` (reads only the requested
    rows). Every file gives a :class:`tensorfile.lazyfile.LazyFile`; ``f.format``
    names its format (:mod:`tensorfile.formats`).

    Only the bytes around each tensor are mapped, never the whole file
    (:mod:`tensorfile.format.ranges`), and a slice of rows is read with
    ``pread``: both work under an address-space limit (``ulimit -v``) smaller
    than the file; a tensor larger than the address space left raises
    :class:`LimitError` when it is read.

    tensorfile and safetensors files give a :class:`TensorFile`. A sharded
    ``model.safetensors.index.json`` (shards opened lazily, tensors mapped),
    GGUF files (tensors mapped) and DCP checkpoint folders (metadata read now,
    a tensor's chunks read and assembled when it is asked for) stay lazy too; so do torch zips,
    ``.npy`` / ``.npz``, MXNet, HDF5 and ``.keras`` files: every check of the file's structure runs when it
    is opened (through the same safe readers as :func:`load`, within ``limits``), and a tensor's bytes are
    read when ``f[name]`` asks for them; their tensors are named by dotted path
    (``"optimizer.state.0.exp_avg"``). Only a pre-1.6 torch stream is read whole when opened.

    Args:
        path: the file; as in :func:`load`, ``path + ".index.json"`` is used when
            ``path`` does not exist but that index does.
        framework: as in :func:`load`.
        map_location: as in :func:`load`.
        device: as in :func:`load`.
        verify: check each tensor's checksum when it is read with ``f[name]``
            (reads all of its bytes, which a lazy reader usually wants to
            avoid; :func:`load` always verifies).
        limits: as in :func:`load`.
        storage_options: for a ``path`` that is an fsspec URL (``s3://bucket/key``...;
            see :func:`tensorfile.save`): options for its filesystem. A tensorfile or
            safetensors object is read by byte ranges, never whole: its first 64 KiB
            (the header; a longer header in a second request), then each tensor's
            range when it is read (``f[name]`` and ``f.read(name)`` give fresh arrays,
            charged to ``limits``) and only the rows' range for ``f.slice(name)[a:b]``
            (:mod:`tensorfile.storage.reader`). Other formats are refused there
            (:func:`load` reads them). Ignored for a local path.

    Raises:
        FileNotFoundError, FormatError, UnsafeFileError, LimitError: as :func:`load`.
        ImportError: ``path`` is a URL and fsspec or its backend is not installed.
    """
    check_framework(framework)
    limits = _check_limits(limits)
    path = local_path(path)
    if is_url(path):
        from .storage.files import open_url

        return open_url(path, storage_options, limits, framework, map_location, device, verify)  # type: ignore[arg-type]
    path = resolve_index(path)
    fmt = find_format(path)
    options = {"map_location": map_location, "device": device}
    try:
        return fmt.open_file(path, limits, framework, options, verify)
    except MemoryError as exc:  # within the budget, but more than this machine gives (a sparse file, say)
        raise out_of_memory(path, exc) from None
