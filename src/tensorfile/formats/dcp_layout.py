"""A PyTorch Distributed Checkpoint (DCP) as plain data: what each saved name is, and where its bytes are.

Reference: pytorch/pytorch ``torch/distributed/checkpoint/metadata.py`` (a tensor is its global
``size`` and ``chunks``, each chunk its ``offsets`` and ``sizes`` in the global tensor) and
``filesystem.py`` (``_StorageInfo``: each chunk, and each non-tensor value, is ``length`` bytes at
``offset`` of the data file ``relative_path`` in the checkpoint's folder).

Both readers of a checkpoint's description (the ``.metadata`` pickle, :mod:`.dcp_metadata`; the
safetensors headers of Hugging Face DCP files, :mod:`.dcp`) give a :class:`Layout`, and
:func:`check_layout` holds it to these rules before a byte of data is read:

- a data file is a plain name in the checkpoint's folder (no separator, not ``.metadata``), and exists;
- every byte range lies inside its file (``offset + length`` at most the file's size);
- a tensor has at most :data:`MAX_DIMS` dims; every chunk has the tensor's number of dims, and lies inside
  the global shape (``0 <= offset`` and ``offset + size <= dim``, in every dim);
- no two chunks of a tensor share an element, and together they cover it (their element counts add
  up to the tensor's): the assembled tensor is one value, whichever chunk is read first;
- a chunk's data fits its byte range (a chunk of N bytes in a range of fewer is refused, so a shape
  that asks for terabytes is refused while the checkpoint is described, before anything is allocated);
- at most ``Limits.max_tensors`` chunks and values in all.

Every failure is a :class:`FormatError` naming the checkpoint, the name (``fqn``) and what was wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError
from ..limits import Budget, array_nbytes

__all__ = ["Item", "Chunk", "TensorEntry", "ValueEntry", "Layout", "check_layout", "MAX_DIMS", "METADATA_NAME"]

#: Most dims a tensor may have (NumPy's limit).
MAX_DIMS = 64
#: The name of the pickled description ``dcp.save`` writes in the checkpoint's folder.
METADATA_NAME = ".metadata"


@dataclass(frozen=True)
class Item:
    """``length`` bytes at byte ``offset`` of the data file ``file`` (a name in the checkpoint's folder).

    ``key`` is the name a safetensors header gives the chunk (the DCP name), where the bytes are in one.
    """

    file: str
    offset: int
    length: int
    key: str = ""


@dataclass(frozen=True)
class Chunk:
    """One saved piece of a tensor: ``tensor[offsets[0]:offsets[0]+sizes[0], ...]``, stored at ``item``."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    item: Item


@dataclass(frozen=True)
class TensorEntry:
    """A tensor of the checkpoint: its name (DCP's dotted ``fqn``), dtype, global shape and chunks."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    chunks: tuple[Chunk, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the assembled tensor."""
        return array_nbytes(self.shape, self.dtype.itemsize, self.name)


@dataclass(frozen=True)
class ValueEntry:
    """A value that is not a tensor (DCP's ``BytesStorageMetadata``): a ``torch.save`` of it, stored at ``item``."""

    name: str
    item: Item


@dataclass
class Layout:
    """A checkpoint: its folder, its entries in saved order, its data files and their sizes (bytes).

    Attributes:
        folder: the checkpoint's folder.
        what: names the checkpoint in messages (its ``.metadata`` path, or the folder).
        entries: tensors and values by name, in the order they were saved.
        files: each data file named by an entry, and its size in bytes (filled by :func:`check_layout`).
        metadata: text about the checkpoint (DCP version, save id, writer).
    """

    folder: str
    what: str
    entries: dict[str, TensorEntry | ValueEntry]
    files: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of the checkpoint's data files together."""
        return sum(self.files.values())

    def path(self, file: str) -> str:
        """The path of data file ``file``."""
        return os.path.join(self.folder, file)


def check_layout(layout: Layout, budget: Budget) -> None:
    """Hold ``layout`` to the rules in this module's docstring; record each data file's size in ``layout.files``.

    Raises:
        FormatError: a rule is broken (the message names the checkpoint, the entry and the rule).
        LimitError: more chunks and values than ``Limits.max_tensors``.
    """
    for name, entry in layout.entries.items():
        if isinstance(entry, ValueEntry):
            budget.count_tensor(f"value {name!r}")
            _check_item(layout, name, entry.item)
            continue
        _check_tensor(layout, entry, budget)


def _check_item(layout: Layout, name: str, item: Item) -> None:
    what = f"{layout.what}: {name!r}"
    file = item.file
    if (not isinstance(file, str) or file != os.path.basename(file) or file in ("", ".", "..", METADATA_NAME)
            or "\\" in file or "\x00" in file):  # fmt: skip
        raise FormatError(f"{what}: its data file {file!r} is not a file name in the checkpoint's folder")
    size = layout.files.get(file)
    if size is None:
        path = layout.path(file)
        if not os.path.isfile(path):
            raise FormatError(f"{what}: its data file {file!r} is missing from {layout.folder}")
        size = layout.files[file] = os.path.getsize(path)
    if item.offset < 0 or item.length < 0 or item.offset + item.length > size:
        raise FormatError(f"{what}: bytes {item.offset} to {item.offset + item.length} of {file!r}, "
                          f"which holds {size} bytes")  # fmt: skip


def _check_tensor(layout: Layout, entry: TensorEntry, budget: Budget) -> None:
    what = f"{layout.what}: tensor {entry.name!r}"
    shape = entry.shape
    if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
        raise FormatError(f"{what}: shape {shape} (at most {MAX_DIMS} dims, none negative)")
    item = entry.dtype.itemsize
    total = array_nbytes(shape, item, what) // item  # elements, overflow-checked
    covered = 0
    for chunk in entry.chunks:
        budget.count_tensor(f"a chunk of tensor {entry.name!r}")
        _check_item(layout, entry.name, chunk.item)
        offsets, sizes = chunk.offsets, chunk.sizes
        if len(offsets) != len(shape) or len(sizes) != len(shape):
            raise FormatError(f"{what}: a chunk at {offsets} of size {sizes} for a tensor of shape {shape}")
        if any(o < 0 or s < 0 or o + s > d for o, s, d in zip(offsets, sizes, shape)):
            raise FormatError(f"{what}: a chunk at {offsets} of size {sizes} lies outside its shape {shape}")
        nbytes = array_nbytes(sizes, item, what)
        if nbytes > chunk.item.length:
            raise FormatError(f"{what}: a chunk of {nbytes} bytes (size {sizes}, {entry.dtype.name}) is stored "
                              f"in {chunk.item.length} bytes")  # fmt: skip
        covered += nbytes // item
    _check_disjoint(what, entry.chunks)
    if covered != total:
        raise FormatError(f"{what}: its chunks hold {covered} of its {total} elements (shape {shape}): "
                          "the checkpoint is incomplete")  # fmt: skip


def _check_disjoint(what: str, chunks: tuple[Chunk, ...]) -> None:
    """Refuse two chunks that share an element: a sweep along dim 0, comparing only chunks whose rows overlap
    (a tensor sharded along dim 0 costs n log n comparisons; a grid of chunks, about its width per chunk)."""
    boxes = sorted((c for c in chunks if all(c.sizes)), key=lambda c: c.offsets[:1])
    if len(boxes) < 2 or not boxes[0].offsets:
        if len(boxes) > 1:  # two chunks of a scalar
            raise FormatError(f"{what}: {len(boxes)} chunks of one scalar")
        return
    active: list[Chunk] = []
    for box in boxes:
        start = box.offsets[0]
        active = [a for a in active if a.offsets[0] + a.sizes[0] > start]
        for other in active:
            if all(o1 < o2 + s2 and o2 < o1 + s1 for o1, s1, o2, s2 in zip(box.offsets, box.sizes, other.offsets, other.sizes)):
                raise FormatError(f"{what}: chunks at {other.offsets} (size {other.sizes}) and at {box.offsets} "
                                  f"(size {box.sizes}) overlap")  # fmt: skip
        active.append(box)
