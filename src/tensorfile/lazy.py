"""Lazy reading: :func:`open` and the :class:`TensorFile` it returns.

A tensorfile or safetensors file is memory-mapped (copy-on-write) tensor by tensor;
other tools' files get a :class:`tensorfile.foreign.opened.ForeignFile` with the
same methods (see :func:`open`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import FormatError
from .format.checksums import checksum
from .format.dtypes import byte_view
from .format.header import TensorEntry
from .format.reader import SafetensorsReader
from .format.record import RECORD_KEY, logical_shape
from .files import _adapter, _as_logical, _check_framework, _read_record, _verify, load, read_prefix, resolve_index
from .tree import unflatten

__all__ = ["open", "TensorFile", "TensorInfo", "TensorSlice"]


@dataclass(frozen=True)
class TensorInfo:
    """What the header says of a tensor, read without touching its data.

    Attributes:
        name: the tensor's name in the file.
        dtype: NumPy dtype name (``"float32"``, ``"bfloat16"``, ``"complex128"``...).
        shape: dims.
        nbytes: size of its data in bytes.
        code: safetensors dtype code on disk (``"F32"``).
        offset: byte offset of its data from the start of the file.
        checksum: XXH3-64 hex digest, or None for files without tensorfile's record.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    code: str
    offset: int
    checksum: str | None


class TensorSlice:
    """Part of one tensor: ``f.slice(name)[rows]`` reads only those rows' bytes."""

    def __init__(self, owner: "TensorFile", name: str) -> None:
        self._owner, self._name = owner, name
        info = owner.info(name)
        self.shape, self.dtype = info.shape, info.dtype

    def __getitem__(self, index: Any) -> Any:
        view = self._owner._mapped(self._name)
        return self._owner._convert(self._name, np.array(view[index]))


class TensorFile:
    """A file opened by :func:`open`: lazy, zero-copy, read-only access by tensor name."""

    def __init__(
        self, path: str | os.PathLike[str], framework: str | None, map_location: Any, verify: bool, device: Any = None
    ) -> None:
        _check_framework(framework)
        self._reader = SafetensorsReader(path)
        self.path = self._reader.path
        try:
            self._record = _read_record(self._reader)
        except BaseException:
            self._reader.close()
            raise
        self._framework, self._verify = framework, verify
        self._options = {"map_location": map_location, "device": device}

    # Mapping-like access
    def keys(self) -> list[str]:
        """Tensor names as stored, in data order."""
        return list(self._reader.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

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

    def _convert(self, name: str, array: np.ndarray) -> Any:
        info = self._info(name)
        adapter = _adapter(self._framework, info.get("framework"), self.path)
        return adapter.from_numpy(array, info, self._options)

    def __getitem__(self, name: str) -> Any:
        """The tensor ``name``, memory-mapped (copy-on-write) where the framework allows.

        Raises:
            KeyError: no such tensor.
            IntegrityError: its checksum does not match (only when opened with verify=True).
        """
        entry = self._entry(name)
        array = self._reader.map(entry)
        if self._verify and self._record is not None:
            found = checksum(byte_view(array) if entry.nbytes else b"")
            _verify(self.path, name, self._record.tensors[name]["checksum"], found)
        array = _as_logical(array, self._info(name), entry)
        if (self._reader.header.data_start + entry.begin) % array.dtype.itemsize:
            array = array.copy()  # misaligned in the file (other writers): frameworks need alignment (maps start on a page)
        return self._convert(name, array)

    def info(self, name: str) -> TensorInfo:
        """dtype, shape and size of ``name`` without reading its data."""
        entry = self._entry(name)
        info = self._info(name)
        dtype = info.get("dtype") or entry.dtype.name
        return TensorInfo(
            name, dtype, logical_shape(entry, info), entry.nbytes, entry.code,
            self._reader.header.data_start + entry.begin, info.get("checksum"),
        )  # fmt: skip

    def slice(self, name: str) -> TensorSlice:
        """A handle whose indexing reads only the requested part, e.g. ``f.slice("w")[10:20]``."""
        self._entry(name)
        return TensorSlice(self, name)

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
            return load(self.path, framework=self._framework, **self._options)
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

    def __enter__(self) -> "TensorFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open(  # noqa: A001 - mirrors builtins.open / safetensors.safe_open
    path: str | os.PathLike[str],
    *,
    framework: str | None = None,
    map_location: Any = None,
    device: Any = None,
    verify: bool = False,
) -> TensorFile | Any:
    """Open a file for lazy, zero-copy reading; use as a context manager.

    ``f.keys()``, ``f[name]`` (memory-mapped, copy-on-write: changing it never
    changes the file), ``f.metadata``, ``f.info(name)`` (dtype, shape, nbytes
    without reading data) and ``f.slice(name)[...]`` (reads only the requested
    rows).

    Other tools' files give a :class:`tensorfile.foreign.opened.ForeignFile`
    with the same methods: a sharded ``model.safetensors.index.json`` (shards
    opened lazily, tensors mapped) and GGUF files (tensors mapped) stay lazy;
    torch, NumPy, MXNet and Keras files are read once, when opened, through the
    safe readers of :func:`load`, and their tensors are named by dotted path
    (``"optimizer.state.0.exp_avg"``).

    Args:
        path: the file; as in :func:`load`, ``path + ".index.json"`` is used when
            ``path`` does not exist but that index does.
        framework: as in :func:`load`.
        map_location: as in :func:`load`.
        device: as in :func:`load`.
        verify: check each tensor's checksum when it is read with ``f[name]``
            (reads all of its bytes, which a lazy reader usually wants to
            avoid; :func:`load` always verifies).

    Raises:
        FileNotFoundError, FormatError: as :func:`load`.
    """
    _check_framework(framework)
    path = resolve_index(path)
    kind = _foreign_kind(path)
    if kind is None:
        return TensorFile(path, framework, map_location, verify, device)
    from .formats import _opened as opened

    options = {"map_location": map_location, "device": device}
    if kind == "sharded safetensors index":
        return opened.open_sharded(path, framework, options, verify)
    if kind == "GGUF":
        return opened.open_gguf(path, framework, options)
    return opened.open_read(path, kind, framework, options)


def _foreign_kind(path: str) -> str | None:
    """What another tool's file that tensorfile reads is (as ``tensorfile info`` names it); None otherwise."""
    from .formats._detect import describe, is_readable

    prefix = read_prefix(path)
    if prefix is None:
        return None  # the safetensors reader names the problem
    kind = describe(path, prefix)
    return kind if is_readable(kind) else None

