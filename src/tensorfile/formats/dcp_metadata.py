"""A DCP checkpoint's ``.metadata`` pickle, run on tensorfile's pickle machine with stand-ins for DCP's classes.

Reference: pytorch/pytorch ``torch/distributed/checkpoint/metadata.py`` and ``filesystem.py``
(``_FileSystemWriter.finish`` writes ``pickle.dump(metadata)``; ``FileSystemReader.read_metadata``
reads it back with ``pickle.load``, which runs whatever the file names). torch 2.x pickles, with
protocol 4 and each object as ``NEWOBJ`` then ``BUILD`` with its state::

    Metadata               {state_dict_metadata: {fqn: TensorStorageMetadata | BytesStorageMetadata},
                            planner_data: {fqn: path in the nested state dict}, storage_data:
                            {MetadataIndex: _StorageInfo}, storage_meta: StorageMeta, version: "1.0.0"}
    TensorStorageMetadata  {properties: TensorProperties, size: torch.Size, chunks: [ChunkStorageMetadata]}
    TensorProperties       (dtype, layout, requires_grad, _MEM_FORMAT_ENCODING(n), pin_memory)
    ChunkStorageMetadata   {offsets: torch.Size, sizes: torch.Size}
    BytesStorageMetadata   no state
    MetadataIndex          {fqn, index[, offset: torch.Size]}      (offset for a tensor's chunk only)
    _StorageInfo           {relative_path, offset, length[, transform_descriptors]}
    StorageMeta            {checkpoint_id (a pathlib path or str), save_id, load_id, modules}

The table maps exactly these names (with ``torch.Size``, torch's dtypes, ``torch.serialization._get_layout``
and pathlib's path classes) to stand-ins of this module: records that keep their state as plain data.
No class of torch's is ever made, nothing is imported, and any other name is refused with
:class:`UnsafeFileError` before it is called. A record takes only the fields DCP writes (a field it
does not know is a :class:`FormatError`: a newer DCP may mean something tensorfile does not read),
except ``StorageMeta``, which only describes the save. ``planner_data`` is read as data and not used:
entries keep DCP's flattened names (``optim.state.0.exp_avg``).

A ``_StorageInfo`` with ``transform_descriptors`` (DCP's experimental ``_extensions``; torch 2.13 has one,
``stream.zstd/1``, zstd compression) is refused with :class:`UnsupportedTypeError` naming it.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from ..errors import FormatError, UnsupportedTypeError
from ..format.dtypes import dtype_from_name
from ..limits import Limits
from ..safepickle.machine import Record, load_pickle
from .dcp_layout import Chunk, Item, Layout, TensorEntry, ValueEntry, check_layout
from .torch import _TORCH_DTYPES, _DTypeName, _ints

__all__ = ["read_metadata", "MODULE"]

#: The module of DCP's metadata classes (its name opens every ``.metadata`` pickle torch writes).
MODULE = "torch.distributed.checkpoint.metadata"
_FILESYSTEM = "torch.distributed.checkpoint.filesystem"
_PATHS = ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")


class _Fields(Record):
    """One of DCP's dataclasses: ``NEWOBJ`` with no arguments, then ``BUILD`` with a dict of its fields."""

    title = "object"
    fields: frozenset[str] = frozenset()
    lenient = False  # True: fields it does not know are dropped

    def __init__(self, what: str) -> None:
        self.what = what
        self.state: dict[str, Any] = {}

    def setstate(self, state: Any) -> None:
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise FormatError(f"{self.what}: a {self.title} whose state is {type(state).__name__}, not a dict of fields")
        unknown = sorted(set(state) - self.fields)
        if unknown and not self.lenient:
            raise FormatError(f"{self.what}: a {self.title} with fields {unknown[:5]} tensorfile does not know "
                              f"(expected some of {sorted(self.fields)})")  # fmt: skip
        self.state = {k: v for k, v in state.items() if k in self.fields}


class _Metadata(_Fields):
    title, fields = "Metadata", frozenset({"state_dict_metadata", "planner_data", "storage_data", "storage_meta", "version"})


class _TensorStorage(_Fields):
    title, fields = "TensorStorageMetadata", frozenset({"properties", "size", "chunks"})


class _BytesStorage(_Fields):
    title = "BytesStorageMetadata"


class _Chunk(_Fields):
    title, fields = "ChunkStorageMetadata", frozenset({"offsets", "sizes"})


class _Index(_Fields):
    """``MetadataIndex``: a key of ``storage_data`` (hashed by identity; matched by ``(fqn, offset)``)."""

    title, fields = "MetadataIndex", frozenset({"fqn", "offset", "index"})
    __hash__ = object.__hash__


class _StorageInfo(_Fields):
    title, fields = "_StorageInfo", frozenset({"relative_path", "offset", "length", "transform_descriptors"})


class _StorageMeta(_Fields):
    title, fields, lenient = "StorageMeta", frozenset({"checkpoint_id", "save_id", "load_id", "modules"}), True


class _Properties(_Fields):
    """``TensorProperties``: its ``__getstate__`` is a tuple ``(dtype, layout, requires_grad, memory format, pin)``."""

    title = "TensorProperties"

    def setstate(self, state: Any) -> None:
        if type(state) is not tuple or len(state) != 5:
            raise FormatError(f"{self.what}: a TensorProperties whose state is not its 5 fields")
        self.state = dict(zip(("dtype", "layout", "requires_grad", "memory_format", "pin_memory"), state))


def _table(what: str) -> dict[tuple[str, str], Any]:
    """The names a DCP ``.metadata`` pickle may use, each a fresh function for this file."""

    def make(kind: type[_Fields]) -> Callable[..., _Fields]:
        def new(*args: Any) -> _Fields:
            if args:
                raise FormatError(f"{what}: a {kind.title} made with arguments")
            return kind(what)

        return new

    def size(dims: Any = ()) -> tuple[int, ...]:
        return _ints(dims, f"{what}: torch.Size")

    def layout(name: Any) -> str:
        if type(name) is not str or len(name) > 64:
            raise FormatError(f"{what}: a tensor layout named by {type(name).__name__}")
        return name

    def memory_format(code: Any) -> int:
        if code not in (0, 1, 2) or type(code) is not int:
            raise FormatError(f"{what}: memory format {str(code)[:20]} (DCP writes 0, 1 or 2)")
        return code

    def path(*parts: Any) -> str:
        if not all(type(p) is str for p in parts):
            raise FormatError(f"{what}: a path of {[type(p).__name__ for p in parts][:4]}")
        return "/".join(parts)

    table: dict[tuple[str, str], Any] = {
        (MODULE, kind.title): make(kind)
        for kind in (_Metadata, _TensorStorage, _BytesStorage, _Chunk, _Index, _StorageMeta, _Properties)
    }
    table[(_FILESYSTEM, "_StorageInfo")] = make(_StorageInfo)
    table[(MODULE, "_MEM_FORMAT_ENCODING")] = memory_format
    table[("torch", "Size")] = size
    table[("torch.serialization", "_get_layout")] = layout
    for module in ("pathlib", "pathlib._local"):  # Python 3.13 moved the classes to pathlib._local
        for name in _PATHS:
            table[(module, name)] = path
    for name in _TORCH_DTYPES:
        table[("torch", name)] = _DTypeName(name)
    return table


def read_metadata(path: str, limits: Limits) -> Layout:
    """The checkpoint described by the ``.metadata`` file ``path``, checked (:func:`.dcp_layout.check_layout`).

    Args:
        path: the ``.metadata`` file; data files are named relative to its folder.
        limits: bound the pickle (``max_header_bytes``, strings, nesting) and the number of chunks.

    Returns:
        A :class:`Layout` with the tensors and values in their saved order.

    Raises:
        UnsafeFileError: the pickle names anything outside the table (nothing is imported or run).
        UnsupportedTypeError: a transform (compression), a layout other than strided, an unknown dtype.
        FormatError: not a DCP Metadata, a field of the wrong type, or a rule of :mod:`.dcp_layout` broken.
    """
    size = os.path.getsize(path)
    budget = limits.budget(path, size)
    budget.check_header(size, "the .metadata pickle")
    with open(path, "rb") as f:
        data = f.read(size)
    root = load_pickle(data, _table(path), what=path, budget=budget)
    if not isinstance(root, _Metadata):
        raise FormatError(f"{path}: not a DCP checkpoint's metadata: the pickle holds {type(root).__name__}, "
                          "not torch.distributed.checkpoint.metadata.Metadata")  # fmt: skip
    items = _items(path, root.state.get("storage_data"))
    described = root.state.get("state_dict_metadata")
    if type(described) is not dict:
        raise FormatError(f"{path}: state_dict_metadata is {type(described).__name__}, not a dict")
    entries: dict[str, TensorEntry | ValueEntry] = {}
    for name, kind in described.items():
        if type(name) is not str:
            raise FormatError(f"{path}: a name of type {type(name).__name__} in state_dict_metadata")
        if isinstance(kind, _BytesStorage):
            entries[name] = ValueEntry(name, _find(path, items, name, None))
        elif isinstance(kind, _TensorStorage):
            entries[name] = _tensor(path, items, name, kind.state)
        else:
            raise FormatError(f"{path}: {name!r} is described by {type(kind).__name__}, not a DCP storage metadata")
    layout = Layout(os.path.dirname(os.path.abspath(path)), path, entries, metadata=_about(root.state))
    check_layout(layout, budget)
    return layout


def _items(path: str, storage: Any) -> dict[tuple[str, tuple[int, ...] | None], Item]:
    """``storage_data`` by ``(fqn, chunk offsets)`` (offsets None for a value), as DCP's ``MetadataIndex`` matches."""
    if type(storage) is not dict:
        raise FormatError(f"{path}: storage_data is {type(storage).__name__}, not a dict (not written by FileSystemWriter?)")
    items: dict[tuple[str, tuple[int, ...] | None], Item] = {}
    for key, info in storage.items():
        if not isinstance(key, _Index) or not isinstance(info, _StorageInfo):
            raise FormatError(f"{path}: storage_data maps {type(key).__name__} to {type(info).__name__}, "
                              "not MetadataIndex to _StorageInfo")  # fmt: skip
        fqn, offset = key.state.get("fqn"), key.state.get("offset")
        if type(fqn) is not str or not (offset is None or type(offset) is tuple):
            raise FormatError(f"{path}: a MetadataIndex of {type(fqn).__name__} at {type(offset).__name__}")
        if (fqn, offset) in items:
            raise FormatError(f"{path}: {fqn!r} at {offset} has two places in storage_data")
        items[(fqn, offset)] = _item(path, fqn, info.state)
    return items


def _item(path: str, fqn: str, state: dict[str, Any]) -> Item:
    file, offset, length = state.get("relative_path"), state.get("offset"), state.get("length")
    if type(file) is not str or type(offset) is not int or type(length) is not int:
        raise FormatError(f"{path}: {fqn!r}: a _StorageInfo without a file name, an offset and a length")
    transforms = state.get("transform_descriptors")
    if transforms:
        shown = [str(t)[:40] for t in transforms][:3] if type(transforms) in (list, tuple) else str(transforms)[:40]
        raise UnsupportedTypeError(f"{path}: {fqn!r} is stored through the transforms {shown} (DCP's _extensions; "
                                   "stream.zstd is zstd compression), which tensorfile does not read")  # fmt: skip
    return Item(file, offset, length, fqn)


def _find(path: str, items: dict[Any, Item], name: str, offsets: tuple[int, ...] | None) -> Item:
    item = items.get((name, offsets))
    if item is None:
        where = "" if offsets is None else f" chunk at {offsets}"
        raise FormatError(f"{path}: {name!r}{where} has no place in storage_data (its data is missing)")
    return item


def _tensor(path: str, items: dict[Any, Item], name: str, state: dict[str, Any]) -> TensorEntry:
    what = f"{path}: tensor {name!r}"
    properties, chunks = state.get("properties"), state.get("chunks")
    if not isinstance(properties, _Properties) or not isinstance(properties.state.get("dtype"), _DTypeName):
        raise FormatError(f"{what}: its properties hold no torch dtype")
    layout = properties.state.get("layout")
    if layout != "torch.strided":
        raise UnsupportedTypeError(f"{what}: layout {str(layout)[:40]}; tensorfile reads dense (strided) tensors")
    try:
        dtype = dtype_from_name(properties.state["dtype"].name)
    except UnsupportedTypeError as exc:
        raise UnsupportedTypeError(f"{what}: {exc}") from None
    shape = state.get("size")
    if type(shape) is not tuple or type(chunks) is not list:
        raise FormatError(f"{what}: a TensorStorageMetadata without a size and a list of chunks")
    parts = []
    for chunk in chunks:
        if not isinstance(chunk, _Chunk):
            raise FormatError(f"{what}: a chunk of type {type(chunk).__name__}")
        offsets, sizes = chunk.state.get("offsets"), chunk.state.get("sizes")
        if type(offsets) is not tuple or type(sizes) is not tuple:
            raise FormatError(f"{what}: a chunk without offsets and sizes")
        parts.append(Chunk(offsets, sizes, _find(path, items, name, offsets)))
    return TensorEntry(name, dtype, shape, tuple(parts))


def _about(state: dict[str, Any]) -> dict[str, str]:
    """What ``tensorfile info`` shows of the checkpoint: DCP's version and the save's id."""
    about = {"dcp_version": state.get("version")}
    meta = state.get("storage_meta")
    if isinstance(meta, _StorageMeta):
        about["save_id"] = meta.state.get("save_id")
    return {k: v[:200] for k, v in about.items() if type(v) is str}
