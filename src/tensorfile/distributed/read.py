"""Reading regions of a distributed checkpoint's tensors from their chunks (NumPy only, no framework).

:func:`fill` writes any box of a tensor (``offsets``, ``lengths`` in its global index space) into an array,
reading only the chunks that overlap the box. A chunk inside the box is read whole, its checksum checked
(XXH3-64, hashed while read), straight into the destination when that part of it is contiguous; a chunk that
the box cuts is read by rows (``pread`` of its leading rows in the box) and its checksum is not checked
unless ``verify`` asks for whole reads. On object storage (an fsspec URL) every read is a byte-range
request of the same bytes (:mod:`.remote`). Each shard file is opened once (its header parsed and checked as
:class:`tensorfile.format.reader.SafetensorsReader` does) and must hold the chunk under the tensor's name,
with the chunk's lengths as its shape and the manifest's dtype.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from ..errors import FormatError, IntegrityError
from ..files import _as_logical, _verify
from ..format.dtypes import dtype_from_name
from ..format.memory import empty_array
from ..format.reader import SafetensorsReader
from ..format.record import logical_shape, read_record
from ..limits import DEFAULT_LIMITS, Budget, Limits
from .manifest import MANIFEST, Chunk, Entry, Manifest

__all__ = ["Shards", "fill", "assemble", "overlap", "checkpoint_size"]


def overlap(a_off: tuple[int, ...], a_len: tuple[int, ...], b_off: tuple[int, ...], b_len: tuple[int, ...],
            ) -> tuple[tuple[int, ...], tuple[int, ...]] | None:  # fmt: skip
    """The intersection of two boxes as ``(offsets, lengths)``; None when it is empty."""
    low = tuple(max(a, b) for a, b in zip(a_off, b_off))
    high = tuple(min(a + m, b + n) for a, m, b, n in zip(a_off, a_len, b_off, b_len))
    if any(h <= lo for lo, h in zip(low, high)):
        return None
    return low, tuple(h - lo for lo, h in zip(low, high))


def checkpoint_size(folder: str, manifest: Manifest) -> int:
    """Bytes of the manifest's files (what a reader's memory budget is reckoned from)."""
    total = 0
    for name in manifest.files:
        try:
            total += os.path.getsize(os.path.join(folder, name))
        except OSError:
            pass  # a missing file is reported when it is read
    return total


class Shards:
    """The shard files of one checkpoint, each opened when first needed.

    Args:
        folder: the checkpoint's folder. manifest: its manifest (read by :func:`.manifest.read`).
        limits: charged (one budget for the whole checkpoint, reckoned from its files' sizes) before
            every allocation.
    """

    def __init__(self, folder: str, manifest: Manifest, limits: Limits = DEFAULT_LIMITS, budget: Budget | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        from ..storage import is_url

        self.folder, self.manifest, self.limits = folder, manifest, limits
        self._objects = None
        if is_url(folder):  # on object storage: shard objects read by byte ranges
            from .remote import ShardObjects

            self._objects = ShardObjects(folder, manifest, storage_options)
        size = self._objects.total if self._objects is not None else checkpoint_size(folder, manifest)
        self.budget = budget or limits.budget(os.path.join(folder, MANIFEST), size)
        self._open: dict[int, tuple[SafetensorsReader, Any]] = {}
        from ..checkpoint.blobs import recorded_checksums

        #: an incremental step's checksums per tensor, matched against its blobs' (None: another checkpoint)
        self._expected = recorded_checksums(os.path.join(folder, MANIFEST), manifest)

    def _reader(self, index: int) -> tuple[SafetensorsReader, Any]:
        found = self._open.get(index)
        if found is None:
            path = os.path.join(self.folder, self.manifest.files[index])
            try:
                if self._expected is not None and self._objects is None:  # a blob: a hard link, never a symlink
                    from ..checkpoint.blobs import check_regular

                    check_regular(path)
                reader = self._objects.open(index, self.limits) if self._objects else SafetensorsReader(path, self.limits)
            except FileNotFoundError:
                raise FormatError(f"{path}: named by the checkpoint's manifest, but missing") from None
            try:
                record = read_record(reader.header, reader.path)
            except BaseException:
                reader.close()
                raise
            found = self._open[index] = (reader, record)
        return found

    def _entry(self, entry: Entry, chunk: Chunk) -> tuple[SafetensorsReader, Any, Any, np.dtype]:
        reader, record = self._reader(chunk.file)
        stored = reader.entries.get(entry.name)
        info = record.tensors.get(entry.name, {}) if record is not None else {}
        where = f"{reader.path}: tensor {entry.name!r}"
        if stored is None:
            raise FormatError(f"{where}: named by the manifest, but the file does not hold it")
        shape = logical_shape(stored, info)
        dtype = dtype_from_name(info["dtype"]) if "dtype" in info else stored.dtype
        if shape != chunk.lengths or dtype != dtype_from_name(entry.dtype):
            raise FormatError(f"{where}: the manifest expects a chunk of shape {list(chunk.lengths)} {entry.dtype}, "
                              f"the file holds {list(shape)} {dtype.name}")  # fmt: skip
        if self._expected is not None and info.get("checksum") != self._expected[entry.name]:
            raise IntegrityError(f"{where}: the file records checksum {info.get('checksum')}, the step's "
                                 f"manifest {self._expected[entry.name]}: another file is in the place of the blob "
                                 "it names")  # fmt: skip
        return reader, record, stored, dtype

    def whole(self, entry: Entry, chunk: Chunk, out: np.ndarray | None = None) -> np.ndarray:
        """The whole chunk, its checksum checked (when its file records one); read into ``out`` when given
        (a C-contiguous array of the chunk's shape and dtype), else into fresh memory charged to the budget.

        Raises:
            IntegrityError: the checksum does not match. FormatError: the file does not hold the chunk.
        """
        reader, record, stored, dtype = self._entry(entry, chunk)
        if out is None:
            self.budget.charge(stored.nbytes, f"tensor {entry.name!r}")
            array, found = reader.read(stored, hash=record is not None)
            array = _as_logical(array, record.tensors[entry.name] if record is not None else {}, stored)
        else:
            _, found = reader.read(stored, hash=record is not None, out=out)
            array = out
        if record is not None:
            _verify(reader.path, entry.name, record.tensors[entry.name]["checksum"], found)
        return array

    def part(self, entry: Entry, chunk: Chunk, offsets: tuple[int, ...], lengths: tuple[int, ...],
             out: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """The box ``offsets``/``lengths`` (global) of a chunk, read by rows: only the rows it spans. With ``out``
        (a C-contiguous array of the box; the box must span the chunk's whole trailing dims) the rows are read
        straight into it."""
        reader, _, stored, dtype = self._entry(entry, chunk)
        rel = [o - c for o, c in zip(offsets, chunk.offsets)]
        rows = reader.read_rows(stored, chunk.lengths, dtype, rel[0], rel[0] + lengths[0], self.budget,
                                None if out is None else out.reshape(-1).view(np.uint8))  # fmt: skip
        return out if out is not None else rows[(slice(None), *(slice(r, r + n) for r, n in zip(rel[1:], lengths[1:])))]

    def all_checked(self) -> bool:
        """True when every shard file records tensorfile's checksums (opens every file's header).

        Raises:
            FormatError: a file is missing or is not a safetensors file.
        """
        return all(self._reader(i)[1] is not None for i in range(len(self.manifest.files)))

    def close(self) -> None:
        """Close every file opened."""
        for reader, _ in self._open.values():
            reader.close()
        self._open.clear()

    def __enter__(self) -> "Shards":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def fill(shards: Shards, entry: Entry, out: np.ndarray, offsets: tuple[int, ...], *, verify: bool = False) -> None:
    """Write the box of ``entry`` at ``offsets`` of ``out.shape`` into ``out`` (a writable array of the
    tensor's dtype, any strides), reading only the chunks it overlaps.

    Args:
        verify: read every chunk the box touches whole, so that every byte used is checked against its
            checksum (costs the reads of the parts outside the box).

    Raises:
        FormatError, IntegrityError: a chunk's file is missing, does not hold it, or is damaged.
    """
    lengths = tuple(out.shape)
    for chunk in entry.chunks:
        box = overlap(offsets, lengths, chunk.offsets, chunk.lengths)
        if box is None:
            continue
        low, size = box
        dest = out[(*(slice(lo - o, lo - o + n) for lo, o, n in zip(low, offsets, size)), ...)]  # 0-d: a view too
        inside = size == chunk.lengths
        direct = dest.flags.c_contiguous and dest.flags.writeable
        if inside and direct:
            shards.whole(entry, chunk, out=dest.reshape(-1).view(np.uint8))
        elif inside or verify:
            data = shards.whole(entry, chunk)
            dest[...] = data[(*(slice(lo - c, lo - c + n) for lo, c, n in zip(low, chunk.offsets, size)), ...)]
        elif direct and size[1:] == chunk.lengths[1:]:  # whole rows of the chunk (FSDP2 onto another world size)
            shards.part(entry, chunk, low, size, out=dest)
        else:
            dest[...] = shards.part(entry, chunk, low, size)


def assemble(shards: Shards, entry: Entry, start: int | None = None, stop: int | None = None) -> np.ndarray:
    """The whole tensor, or rows ``start:stop`` of its leading dim, in fresh memory charged to the budget.

    Raises:
        LimitError: over the budget. FormatError, IntegrityError: as :func:`fill`.
    """
    shape = entry.shape
    offsets = (0,) * len(shape)
    if start is not None and shape:
        stop = shape[0] if stop is None else stop
        shape, offsets = (stop - start, *shape[1:]), (start, *offsets[1:])
    dtype = dtype_from_name(entry.dtype)
    nbytes = dtype.itemsize
    for d in shape:
        nbytes *= d
    shards.budget.charge(nbytes, f"tensor {entry.name!r}")
    out = empty_array(shape, dtype)
    if out.size:
        fill(shards, entry, out, offsets)
    return out
