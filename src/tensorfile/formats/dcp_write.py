"""Write a DCP checkpoint folder that ``torch.distributed.checkpoint.load`` reads, without torch and without ``pickle``.

Reference: pytorch/pytorch ``torch/distributed/checkpoint/`` of torch 2.13: ``_traverse.py`` and
``_nested_dict.py`` (how a state dict is flattened to dotted names), ``filesystem.py`` (``_write_item``:
each item a ``torch.save`` archive at an offset of a ``.distcp`` file; ``finish``: the ``.metadata``
pickle) and ``metadata.py`` (what that pickle holds: see :mod:`.dcp_metadata`).

The folder written holds one data file, ``__0_<random>.distcp``, and ``.metadata``, as one rank of
``dcp.save`` writes them (one chunk per tensor: the whole tensor). Each tensor, and each value that DCP
keeps whole (a tuple, a list of plain values, an int...), is a ``torch.save`` archive written by
tensorfile's torch writer; ``.metadata`` is written by tensorfile's own pickle writer
(:mod:`tensorfile.safepickle.write`), from names only: nothing of torch is imported, and no object is
pickled by Python's ``pickle``. ``dcp.load`` (and ``torch.load`` inside it) then reads these files with
``pickle``, as it reads every DCP checkpoint: the folder is as safe as the values given to it.

The commit: the data file is written under a new name and synced, then ``.metadata`` replaces the old
one atomically (:func:`tensorfile.atomic.atomic_write`), then the folder's other ``.distcp`` files (an
earlier save's) are removed. An interrupted save leaves the previous checkpoint readable, unlike
``dcp.save``, which deletes the old ``.metadata`` before it renames the new one in.
"""

from __future__ import annotations

import io
import os
import secrets
from typing import Any, Callable, Mapping

import numpy as np

from ..atomic import atomic_write
from ..errors import UnsupportedTypeError
from ..safepickle.write import Call, Global, Object, PickleWriter
from ..tree import flatten, unflatten
from .dcp_layout import METADATA_NAME
from .dcp_metadata import MODULE

__all__ = ["write_dcp", "dcp_items"]

_FILESYSTEM = "torch.distributed.checkpoint.filesystem"
_SIZE = Global("torch", "Size")
_LAYOUT = Call(Global("torch.serialization", "_get_layout"), ("torch.strided",))
_CONTIGUOUS = Call(Global(MODULE, "_MEM_FORMAT_ENCODING"), (0,))
#: The version ``FileSystemWriter.finish`` of torch 2.13 records (``CURRENT_DCP_VERSION``).
VERSION = "1.0.0"


def dcp_items(state: Any) -> dict[str, tuple[tuple[str | int, ...], Any]]:
    """``state`` (a dict) flattened as DCP flattens it: ``{dotted name: (path, value)}``.

    Mappings are walked (keys as ``str(key)``); a list is walked when it holds an array, a mapping or a
    list that is walked; anything else (a tuple, a list of plain values, a scalar) is one value.

    Raises:
        UnsupportedTypeError: ``state`` is not a dict, or two paths give one name (``{"a.b": x, "a": {"b": y}}``).
    """
    if not isinstance(state, dict):
        raise UnsupportedTypeError(f"obj: a DCP checkpoint holds a state dict, not {type(state).__name__}")
    out: dict[str, tuple[tuple[str | int, ...], Any]] = {}

    def walked(value: Any) -> bool:
        if isinstance(value, dict):
            return True
        return isinstance(value, list) and any(isinstance(v, np.ndarray) or walked(v) for v in value)

    def walk(path: tuple[str | int, ...], value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(path + (str(key),), item)
        elif walked(value):
            for i, item in enumerate(value):
                walk(path + (i,), item)
        else:
            name = ".".join(map(str, path))
            if name in out:
                raise UnsupportedTypeError(f"obj: two values are both named {name!r} in a DCP checkpoint")
            out[name] = (path, value)

    for key, value in state.items():
        walk((str(key),), value)
    return out


class _Shifted(io.RawIOBase):
    """A file seen from byte ``base`` on: a zip written through it records offsets from its own first byte."""

    def __init__(self, f: Any, base: int) -> None:
        super().__init__()
        self._f, self._base = f, base

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        while view:  # an unbuffered file may take part of a large write
            view = view[self._f.write(view) :]
        return len(memoryview(data).cast("B"))

    def tell(self) -> int:
        return self._f.tell() - self._base

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            return self._f.seek(self._base + offset) - self._base
        return self._f.seek(offset, whence) - self._base

    def flush(self) -> None:
        self._f.flush()


def _size(dims: tuple[int, ...]) -> Call:
    return Call(_SIZE, (tuple(int(d) for d in dims),))


def _metadata(folder: str, items: dict[str, Any], places: dict[str, tuple[int, int]], file: str) -> bytes:
    """The ``.metadata`` pickle of DCP's ``Metadata`` for ``items`` stored at ``places`` of ``file``."""
    described: dict[str, Object] = {}
    storage: dict[Object, Object] = {}
    for name, (_, value) in items.items():
        offset, length = places[name]
        index: dict[str, Any] = {"fqn": name, "index": None}
        if isinstance(value, np.ndarray):
            zeros = _size((0,) * value.ndim)
            properties = Object(Global(MODULE, "TensorProperties"),
                                (Global("torch", value.dtype.name), _LAYOUT, False, _CONTIGUOUS, False))  # fmt: skip
            chunk = Object(Global(MODULE, "ChunkStorageMetadata"), {"offsets": zeros, "sizes": _size(value.shape)})
            described[name] = Object(Global(MODULE, "TensorStorageMetadata"),
                                     {"properties": properties, "size": _size(value.shape), "chunks": [chunk]})  # fmt: skip
            index["offset"] = zeros
        else:
            described[name] = Object(Global(MODULE, "BytesStorageMetadata"), None)
        key = Object(Global(MODULE, "MetadataIndex"), index)
        storage[key] = Object(Global(_FILESYSTEM, "_StorageInfo"), {"relative_path": file, "offset": offset, "length": length})
    meta = Object(Global(MODULE, "StorageMeta"), {"checkpoint_id": folder, "save_id": secrets.token_hex(16),
                                                   "load_id": None, "modules": []})  # fmt: skip
    state = {"state_dict_metadata": described, "planner_data": {name: path for name, (path, _) in items.items()},
             "storage_data": storage, "storage_meta": meta, "version": VERSION}  # fmt: skip
    return PickleWriter().dumps(Object(Global(MODULE, "Metadata"), state))


def write_dcp(obj: Any, path: str | os.PathLike[str], metadata: Mapping[str, str] | None,
              progress: Callable[[int, str], Any]) -> None:  # fmt: skip
    """Write ``obj`` (a state dict: nested dicts and lists of tensors and plain values) as the DCP folder ``path``.

    Raises:
        UnsupportedTypeError: ``obj`` is not a dict, holds what a torch.save file cannot, or ``metadata`` is given.
        FileExistsError: ``path`` is a file. OSError: the folder cannot be written (the previous checkpoint stays).
    """
    from ._torch_write import write_torch

    if metadata:
        raise UnsupportedTypeError("metadata: a DCP checkpoint has no place for metadata")
    folder = os.fspath(path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FileExistsError(f"{folder}: is a file; a DCP checkpoint is a folder")
    flat = flatten(obj, tie_once=True)
    arrays = {leaf.name: leaf.array for leaf in flat.leaves}
    items = dcp_items(unflatten(flat.root, arrays.__getitem__))
    os.makedirs(folder, exist_ok=True)
    file = f"__0_{secrets.token_hex(4)}.distcp"
    places: dict[str, tuple[int, int]] = {}
    total = sum(a.nbytes for a in arrays.values())
    with atomic_write(os.path.join(folder, file)) as f, progress(total, f"saving {os.path.basename(folder)}") as bar:
        for name, (_, value) in items.items():
            start = f.tell()
            try:
                write_torch(_Shifted(f, start), flatten(value, tie_once=True), bar)
            except UnsupportedTypeError as exc:
                raise UnsupportedTypeError(f"obj: {name!r}: {exc}") from None
            places[name] = (start, f.tell() - start)
    pickled = _metadata(os.path.abspath(folder), items, places, file)
    with atomic_write(os.path.join(folder, METADATA_NAME)) as f:
        _Shifted(f, 0).write(pickled)
    for stale in os.listdir(folder):
        if stale.endswith(".distcp") and stale != file:
            os.remove(os.path.join(folder, stale))
