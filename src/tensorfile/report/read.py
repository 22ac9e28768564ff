"""Reading one tensor of an opened file in pieces of rows, so a report holds a few MiB of it at a time.

A tensorfile or safetensors file (and a sharded or GGUF one) reads each run of rows on its own with
``pread`` (:meth:`tensorfile.LazyFile.slice`); another format's tensor is taken whole once (its reader
has no cheaper way) and cut into views. A tensor above ``sample_above`` bytes is *sampled*: only
:data:`SAMPLE_BLOCKS` evenly spaced runs of rows, about ``sample_bytes`` in all, are read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..errors import FormatError
from ..files import _verify
from ..format.checksums import Hasher
from ..lazyfile import LazyFile

__all__ = ["CHUNK_BYTES", "SAMPLE_BLOCKS", "Pieces", "pieces"]

#: Most bytes of a tensor read at once (a larger tensor is read in runs of rows of about this size).
CHUNK_BYTES = 16 << 20
#: How many evenly spaced runs of rows a sampled tensor is read in.
SAMPLE_BLOCKS = 16


@dataclass
class Pieces:
    """A tensor's values, piece by piece.

    Attributes:
        chunks: iterator of NumPy arrays (any shape) that together hold the values read, in C order.
        total: the tensor's number of values.
        read: how many values ``chunks`` gives (``total`` unless sampled).
        sampled: True when only part of the tensor is read.
        verified: once ``chunks`` is used up: True when the file's checksum of the tensor was checked
            (tensorfile files, whole tensors), None when there is none to check (or it was sampled).
    """

    chunks: Iterator[np.ndarray]
    total: int
    read: int
    sampled: bool
    verified: bool | None = None


def _by_rows(f: LazyFile) -> bool:
    """Whether ``f`` reads a run of rows without reading the whole tensor."""
    from ..lazy import TensorFile

    return isinstance(f, TensorFile) or getattr(f, "_rows_fn", None) is not None


def _runs(rows: int, row_bytes: int, sample_bytes: int | None) -> list[tuple[int, int]]:
    """``(start, stop)`` runs of rows to read: every row in pieces of :data:`CHUNK_BYTES`, or (sampling)
    :data:`SAMPLE_BLOCKS` evenly spaced runs of about ``sample_bytes`` together."""
    step = max(1, CHUNK_BYTES // max(row_bytes, 1))
    if sample_bytes is None:
        return [(a, min(rows, a + step)) for a in range(0, rows, step)]
    per_block = max(1, math.ceil(sample_bytes / max(row_bytes, 1) / SAMPLE_BLOCKS))
    starts = np.linspace(0, rows - per_block, SAMPLE_BLOCKS).astype(np.int64)
    out: list[tuple[int, int]] = []
    for start in sorted(set(int(s) for s in starts)):
        stop = start + per_block
        if out and start < out[-1][1]:
            start = out[-1][1]
        out += [(a, min(stop, a + step)) for a in range(start, stop, step)]
    return out


def pieces(f: LazyFile, name: str, sample_above: int | None = None, sample_bytes: int = 64 << 20) -> Pieces:
    """The values of tensor ``name`` of the opened file ``f`` (opened with ``framework="numpy"``) in pieces.

    Args:
        sample_above: a tensor of more bytes than this is sampled (None: never).
        sample_bytes: about how many bytes a sampled tensor is read for.

    Raises:
        TensorFileError: the tensor cannot be read (a damaged file, over the memory limits).
    """
    info = f.info(name)
    shape = tuple(int(d) for d in info.shape)
    total = int(np.prod(shape, dtype=np.int64)) if shape else 1
    rows = shape[0] if shape else 1
    row_bytes = info.nbytes // rows if rows else 0
    if sample_above is not None:
        sample_bytes = min(sample_bytes, sample_above)
    sampled = sample_above is not None and info.nbytes > sample_above and rows > SAMPLE_BLOCKS
    runs = _runs(rows, row_bytes, sample_bytes if sampled else None) if shape and rows else []
    read = total if not sampled else sum(b - a for a, b in runs) * (total // rows)

    from ..lazy import TensorFile

    expected = info.checksum if isinstance(f, TensorFile) else None

    def chunks() -> Iterator[np.ndarray]:
        if not shape or total == 0 or (len(runs) == 1 and not sampled) or not _by_rows(f):
            whole = _array(f, name)
            out.verified = True if expected else None  # TensorFile.read checked it
            for a, b in runs or [(0, 1)]:
                yield whole[a:b] if shape else whole
            return
        part, hasher = f.slice(name), (Hasher() if expected and not sampled else None)
        for a, b in runs:
            piece = _checked(f, name, part[a:b])
            if hasher is not None:
                hasher.update(np.ascontiguousarray(piece).reshape(-1).view(np.uint8))
            yield piece
        if hasher is not None:
            _verify(f.path, name, expected, hasher.hexdigest())
            out.verified = True

    out = Pieces(chunks(), total, read, sampled)
    return out


def _array(f: LazyFile, name: str) -> np.ndarray:
    from ..lazy import TensorFile

    array = f.read(name) if isinstance(f, TensorFile) else f[name]  # read: its checksum checked, nothing mapped
    return _checked(f, name, array)


def _checked(f: LazyFile, name: str, array: Any) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    if array.dtype == object:
        raise FormatError(f"{f.path}: tensor {name!r} holds Python objects, not numbers")
    return array
