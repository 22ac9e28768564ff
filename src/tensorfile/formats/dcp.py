"""PyTorch Distributed Checkpoint (DCP) folders, read in one process without torch and without ``pickle``.

Reference: pytorch/pytorch ``torch/distributed/checkpoint/`` of torch 2.13: ``filesystem.py``
(``FileSystemWriter``, ``_write_item``, ``FileSystemReader``), ``metadata.py``, ``hf_storage.py`` and
``_hf_utils.py`` (``HuggingFaceStorageWriter``). Three layouts of a checkpoint folder are read:

1. ``dcp.save`` with ``FileSystemWriter`` (the default): a ``.metadata`` pickle (:mod:`.dcp_metadata`) and
   ``__<rank>_<n>.distcp`` data files; each tensor chunk, and each value that is not a tensor, is a
   ``torch.save`` zip archive of its own at the ``offset`` and ``length`` the metadata gives, read by
   the torch reader within those bytes (:func:`.torch.read_torch_range`: the pickle machine, never ``pickle``).
2. ``FileSystemWriter(serialization_format=SerializationFormat.SAFETENSORS)``: the same ``.metadata``;
   in each ``.distcp`` file the values come first (``torch.save`` archives, as above), then one safetensors
   file that runs to the end of the file and holds the rank's tensor chunks by name; every chunk's
   ``offset`` is that safetensors file's first byte. (``dcp.load`` of torch 2.13 cannot read this layout.)
3. ``HuggingFaceStorageWriter``: safetensors files only (``model-00001-of-00002.safetensors``, or with
   ``save_distributed=True`` ``shard-00001-model-00001-of-00001.safetensors`` with no index), each chunk a
   tensor under its DCP name, placed by the ``"DCP_SHARDING_INFO"`` JSON in the header's ``__metadata__``
   (``{name: {"saved_offsets": [...]}}``); a tensor's global shape is where its chunks end, as
   ``HuggingFaceStorageReader.read_metadata`` computes it.

What a chunk's bytes are is read from them: a zip's signature ``PK\\x03\\x04``, or a safetensors length
prefix followed by ``{``; anything else is a :class:`FormatError`. A chunk must hold the dtype and the
sizes the description gives. Every layout is checked by :func:`.dcp_layout.check_layout` before any data
is read, and every array is charged to the checkpoint's :class:`~tensorfile.limits.Budget` (sized by all
its data files together) before it is allocated.

:func:`tensorfile.load` gives a flat dict by DCP's dotted names (``model.layer.weight``,
``optim.state.0.exp_avg``, ``optim.param_groups.0.lr``): tensors assembled from their chunks, other values
as the torch reader gives them. :func:`tensorfile.open` reads the description only, then each tensor's
chunks when it is asked for.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from ..errors import FormatError
from ..format.header import Header, parse_header, strict_json
from ..format.memory import empty_array
from ..format.ranges import pread_exact
from ..format.reader import SafetensorsReader
from ..limits import Budget, Limits
from .base import Format, Probe
from .dcp_layout import METADATA_NAME, Chunk, Item, Layout, TensorEntry, ValueEntry, check_layout
from .dcp_metadata import MODULE, read_metadata

__all__ = ["DCP", "read_checkpoint", "DcpReader", "HF_SHARDING_KEY"]

#: The ``__metadata__`` key of DCP's safetensors files that places each tensor in its global tensor.
HF_SHARDING_KEY = "DCP_SHARDING_INFO"
_ZIP = b"PK\x03\x04"


def read_checkpoint(path: str, limits: Limits) -> Layout:
    """The checked description of the DCP checkpoint at ``path``: its folder, or its ``.metadata`` file.

    A folder with a ``.metadata`` file is read through it (layouts 1 and 2 of the module docs); a folder
    without one through the headers of its DCP safetensors files (layout 3).

    Raises:
        FileNotFoundError: no such file or folder.
        UnsafeFileError, UnsupportedTypeError, FormatError: see :func:`.dcp_metadata.read_metadata` and
            :func:`.dcp_layout.check_layout`.
    """
    if os.path.isdir(path):
        metadata = os.path.join(path, METADATA_NAME)
        if os.path.isfile(metadata):
            return read_metadata(metadata, limits)
        return _hf_layout(path, limits)
    return read_metadata(path, limits)


def _hf_layout(folder: str, limits: Limits) -> Layout:
    """Layout 3: every ``*.safetensors`` file in ``folder``, each tensor a chunk placed by ``DCP_SHARDING_INFO``."""
    names = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors") and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise FormatError(f"{folder}: no {METADATA_NAME} and no safetensors files: not a DCP checkpoint")
    parts: dict[str, list[Chunk]] = {}
    dtypes: dict[str, np.dtype] = {}
    for name in names:
        path = os.path.join(folder, name)
        with SafetensorsReader(path, limits) as reader:
            placed = _sharding(path, reader.metadata.get(HF_SHARDING_KEY))
            for key, entry in reader.entries.items():
                offsets = placed.get(key, (0,) * len(entry.shape)) if placed is not None else (0,) * len(entry.shape)
                if dtypes.setdefault(key, entry.dtype) != entry.dtype:
                    raise FormatError(f"{path}: tensor {key!r} is {entry.dtype.name} here, {dtypes[key].name} in another file")
                parts.setdefault(key, []).append(Chunk(offsets, entry.shape, Item(name, 0, entry.nbytes, key)))
    entries: dict[str, TensorEntry | ValueEntry] = {}
    for key, chunks in parts.items():
        rank = len(chunks[0].sizes)
        if any(len(c.offsets) != rank or len(c.sizes) != rank for c in chunks):
            raise FormatError(f"{folder}: tensor {key!r}: chunks of different ranks or offsets of the wrong length")
        shape = tuple(max(c.offsets[d] + c.sizes[d] for c in chunks) for d in range(rank))
        entries[key] = TensorEntry(key, dtypes[key], shape, tuple(chunks))
    layout = Layout(folder, folder, entries, metadata={"layout": "Hugging Face safetensors (DCP)"})
    check_layout(layout, limits.budget(folder, 0))
    return layout


def _sharding(path: str, text: str | None) -> dict[str, tuple[int, ...]] | None:
    """``DCP_SHARDING_INFO`` as ``{name: offsets}`` (None when the file has none)."""
    if text is None:
        return None
    try:
        doc = strict_json(text)
    except (FormatError, ValueError, RecursionError) as exc:
        raise FormatError(f"{path}: {HF_SHARDING_KEY} is not JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: {HF_SHARDING_KEY} is not a JSON object")
    placed: dict[str, tuple[int, ...]] = {}
    for key, value in doc.items():
        offsets = value.get("saved_offsets") if isinstance(value, dict) else None
        if not isinstance(offsets, list) or not all(type(o) is int for o in offsets):
            raise FormatError(f"{path}: {HF_SHARDING_KEY} gives {key!r} no saved_offsets of ints")
        placed[key] = tuple(offsets)
    return placed


class DcpReader:
    """Reads the tensors and values of one checked :class:`Layout` (a context manager: closes its files).

    Each chunk is read into fresh memory charged to the budget given; safetensors headers inside data
    files are parsed once each.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._fds: dict[str, int] = {}
        self._headers: dict[tuple[str, int], Header] = {}

    def _fd(self, file: str) -> int:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(self.layout.path(file), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return fd

    def read(self, entry: TensorEntry | ValueEntry, budget: Budget) -> Any:
        """A tensor assembled from its chunks (a NumPy array of its global shape), or a value."""
        if isinstance(entry, ValueEntry):
            return self._torch(entry.name, entry.item, budget)
        whole = entry.chunks[0] if len(entry.chunks) == 1 else None
        if whole is not None and whole.sizes == entry.shape:
            return self._chunk(entry, whole, budget)
        budget.charge(entry.nbytes, f"tensor {entry.name!r} of shape {entry.shape} ({entry.dtype.name})")
        out = empty_array(entry.shape, entry.dtype)
        for chunk in entry.chunks:
            if all(chunk.sizes):
                out[tuple(slice(o, o + s) for o, s in zip(chunk.offsets, chunk.sizes))] = self._chunk(entry, chunk, budget)
        return out

    def _where(self, name: str, item: Item) -> str:
        return f"{self.layout.path(item.file)}: {name!r} (bytes {item.offset} to {item.offset + item.length})"

    def _torch(self, name: str, item: Item, budget: Budget) -> Any:
        from .torch import read_torch_range

        return read_torch_range(self.layout.path(item.file), self._fd(item.file), item.offset, item.length, budget,
                                self._where(name, item))  # fmt: skip

    def _chunk(self, entry: TensorEntry, chunk: Chunk, budget: Budget) -> np.ndarray:
        item = chunk.item
        what = self._where(entry.name, item)
        fd = self._fd(item.file)
        start = os.pread(fd, 9, item.offset)
        if start.startswith(_ZIP):
            array = self._torch(entry.name, item, budget)
            if not isinstance(array, np.ndarray):
                raise FormatError(f"{what}: holds {type(array).__name__}, not a tensor chunk")
            array = np.asarray(array)
            if array.dtype != entry.dtype or array.shape != chunk.sizes:
                raise FormatError(f"{what}: a chunk of shape {array.shape} ({array.dtype.name}); the metadata says "
                                  f"{chunk.sizes} ({entry.dtype.name})")  # fmt: skip
            return array
        if start[8:9] != b"{":
            raise FormatError(f"{what}: neither a torch.save archive nor a safetensors file starts there")
        header = self._header(item, what)
        stored = header.entries.get(item.key)
        if stored is None:
            raise FormatError(f"{what}: the safetensors data there holds no tensor named {item.key!r}")
        if stored.dtype != entry.dtype or stored.shape != chunk.sizes:
            raise FormatError(f"{what}: a chunk of shape {stored.shape} ({stored.dtype.name}); the metadata says "
                              f"{chunk.sizes} ({entry.dtype.name})")  # fmt: skip
        budget.charge(stored.nbytes, f"a chunk of tensor {entry.name!r}")
        array = empty_array(stored.shape, stored.dtype)
        if stored.nbytes:
            pread_exact(fd, memoryview(array.reshape(-1).view(np.uint8)), item.offset + header.data_start + stored.begin,
                        self.layout.path(item.file), entry.name)  # fmt: skip
        return array

    def _header(self, item: Item, what: str) -> Header:
        """The safetensors header at ``item.offset`` (the file runs from there to the end of the data file)."""
        key = (item.file, item.offset)
        header = self._headers.get(key)
        if header is None:
            fd, size = self._fd(item.file), self.layout.files[item.file] - item.offset
            header = parse_header(os.pread(fd, 8, item.offset), lambda n: os.pread(fd, n, item.offset + 8), size, what)
            self._headers[key] = header
        return header

    def close(self) -> None:
        """Close the data files."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> "DcpReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load(path: str, framework: str | None, options: Mapping[str, Any], limits: Limits) -> Any:
    from ..frameworks import get_adapter
    from ..handoff import convert_tree, source_framework

    layout = read_checkpoint(path, limits)
    budget = limits.budget(layout.what, layout.nbytes)
    with DcpReader(layout) as reader:
        value = {name: reader.read(entry, budget) for name, entry in layout.entries.items()}
    adapter = get_adapter(framework or source_framework("torch", layout.what))
    return convert_tree(value, adapter, layout.what, options, limits.max_depth)


def _open(path: str, limits: Limits, framework: str | None, options: Mapping[str, Any], verify: bool) -> Any:
    from ..files import load
    from ..frameworks import get_adapter
    from ..handoff import source_framework, to_framework
    from ..lazyfile import TensorInfo
    from ._opened import ForeignFile, _code

    layout = read_checkpoint(path, limits)
    reader = DcpReader(layout)
    tensors = {n: e for n, e in layout.entries.items() if isinstance(e, TensorEntry)}
    infos = {n: TensorInfo(n, e.dtype.name, e.shape, e.nbytes, _code(e.dtype.name), None, None) for n, e in tensors.items()}
    adapter = get_adapter(framework or source_framework("torch", layout.what))

    def mapped(name: str) -> np.ndarray:
        return reader.read(tensors[name], limits.budget(layout.what, layout.nbytes))

    return ForeignFile(
        path, DCP, infos, layout.metadata, mapped=mapped,
        convert=lambda name, a: to_framework(adapter, layout.what, name, a, {}, options),
        load=lambda: load(path, framework=framework, limits=limits, **options), close=reader.close,
    )  # fmt: skip


def _sniff(probe: Probe) -> float:
    """1 for a pickle that names DCP's metadata module first (every ``.metadata`` torch writes); 0.6 for any
    other file named ``.metadata`` that starts like a pickle, so the DCP reader refuses it by what it holds."""
    prefix = probe.prefix
    pickle = len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5
    if pickle and MODULE.encode() in prefix[:256]:
        return 1.0
    if os.path.basename(probe.path) == METADATA_NAME and prefix[:1] in (b"\x80", b"(", b"c", b"}", b"]", b"N"):
        return 0.6
    return 0.0


def _sniff_folder(path: str) -> float:
    """0.9 for a folder holding ``.metadata``; 0.8 for one whose safetensors files carry DCP's sharding info."""
    if os.path.isfile(os.path.join(path, METADATA_NAME)):
        return 0.9
    try:
        names = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
    except OSError:
        return 0.0
    for name in names[:1]:
        try:
            with open(os.path.join(path, name), "rb") as f:
                if HF_SHARDING_KEY.encode() in f.read(4096):
                    return 0.8
        except OSError:
            return 0.0
    return 0.0


def _write(obj: Any, path: Any, metadata: Mapping[str, str] | None, progress: Any) -> None:
    from .dcp_write import write_dcp

    write_dcp(obj, path, metadata, progress)


#: A DCP checkpoint: its folder (or its ``.metadata`` file); written as one rank's folder (:mod:`.dcp_write`).
DCP = Format("dcp", "PyTorch Distributed Checkpoint (DCP)", "torch", (), sniff=_sniff, sniff_folder=_sniff_folder,
             load=_load, open=_open, write=_write)  # fmt: skip
