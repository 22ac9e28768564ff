"""A safetensors / tensorfile object read lazily by byte ranges: :class:`ObjectReader`.

:func:`tensorfile.open` of a URL reads the object's first :data:`HEAD_BYTES` bytes (the
8-byte header length and, for most files, the whole JSON header) in one request, the
rest of a longer header in a second, and then each tensor's bytes only when it is asked
for: ``f[name]`` and ``f.read(name)`` fetch the tensor's range, ``f.slice(name)[a:b]``
only the rows' range. Each range is one ``fs.cat_file(path, start=, end=)`` (fsspec
``fsspec/spec.py``; an HTTP ``Range: bytes=start-(end-1)`` GET on S3 and GCS), in pieces
of at most :data:`~tensorfile.format.ranges.READ_CHUNK` bytes. Nothing is cached and
nothing is memory-mapped: every tensor returned is a fresh array, charged to the memory
budget (:class:`tensorfile.Limits`) before it is allocated.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import FormatError
from ..format.dtypes import byte_view
from ..format.header import TensorEntry, parse_header
from ..format.ranges import READ_CHUNK, rows_buffer
from ..format.reader import SafetensorsReader
from ..format.sniff import looks_like
from ..limits import DEFAULT_LIMITS, Budget, Limits
from . import Location

__all__ = ["ObjectReader", "HEAD_BYTES", "open_object"]

#: Bytes fetched by the first request: the header length and, usually, the whole header.
HEAD_BYTES = 64 << 10


class ObjectReader(SafetensorsReader):
    """A :class:`~tensorfile.format.reader.SafetensorsReader` over an object, by byte ranges.

    Args:
        location: the object (:func:`tensorfile.storage.locate`).
        size: its size in bytes (from ``fs.info``).
        head: its first ``min(size, HEAD_BYTES)`` bytes, already fetched.
        limits: what it may make us allocate.

    Attributes:
        fetched: bytes received from the store so far (header included).

    Raises:
        FormatError: not a valid safetensors file (says what it looks like).
        LimitError: the header would take more memory than ``limits`` allow.
    """

    def __init__(self, location: Location, size: int, head: bytes, limits: Limits | None = None) -> None:
        self.path = location.url
        self._fs, self._key = location.fs, location.path
        self._limits = limits or DEFAULT_LIMITS
        self._closed = False
        self.size = size
        self.fetched = len(head)
        kind = looks_like(head[:16])
        if kind is not None and head[8:9] != b"{":
            raise FormatError(f"{self.path}: not a safetensors file; it looks like {kind}")

        def header_bytes(n: int) -> bytes:
            if 8 + n <= len(head):
                return head[8 : 8 + n]
            return head[8:] + self._fetch(len(head), 8 + n - len(head), "the header")  # the rest of a long header

        self.header = parse_header(head[:8], header_bytes, size, self.path, self._limits.allowed(size))

    def _fetch(self, offset: int, n: int, what: str) -> bytes:
        data = self._fs.cat_file(self._key, start=offset, end=offset + n)
        self.fetched += len(data)
        if len(data) != n:
            raise FormatError(f"{self.path}: reading {what}, expected {n} bytes at offset {offset}, got {len(data)} "
                              "(the object changed after it was opened?)")  # fmt: skip
        return data

    def _read_piece(self, entry: TensorEntry, piece: memoryview, offset: int) -> None:
        for start in range(0, len(piece), READ_CHUNK):
            part = piece[start : start + READ_CHUNK]
            part[:] = self._fetch(offset + start, len(part), f"tensor {entry.name!r}")

    def map(self, entry: TensorEntry) -> np.ndarray:
        """The tensor read into a fresh array (an object cannot be memory-mapped), charged to the budget.

        Raises:
            LimitError: its bytes exceed the memory budget. FormatError: the object is shorter than its header says.
        """
        self._check_open()
        self._limits.budget(self.path, self.size).charge(entry.nbytes, f"tensor {entry.name!r}")
        return self.read(entry)[0]

    def read_rows(self, entry: TensorEntry, shape: tuple[int, ...], dtype: np.dtype, start: int, stop: int,
                  budget: Budget, out: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Rows ``start:stop`` of the tensor's leading dimension: only their byte range is fetched; into ``out``
        when given (a writable C-contiguous array of exactly those rows' bytes, not charged to ``budget``).

        Raises:
            LimitError: over ``budget``, or the memory cannot be had. FormatError: the object ended early.
            ValueError: ``out`` is not such an array.
        """
        self._check_open()
        if out is None:
            out, row = rows_buffer(self.path, entry.name, shape, dtype, start, stop, budget)
        else:
            row = dtype.itemsize * math.prod(shape[1:])
            if not out.flags.c_contiguous or not out.flags.writeable or out.nbytes != (stop - start) * row:
                raise ValueError(f"{self.path}: rows {start}:{stop} of tensor {entry.name!r}: out must be a writable "
                                 f"C-contiguous array of {(stop - start) * row} bytes")  # fmt: skip
        if out.nbytes:
            self._read_piece(entry, byte_view(out), self.header.data_start + entry.begin + start * row)
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the file is closed")

    def close(self) -> None:
        """Forget the object (arrays already returned stay valid)."""
        self._closed = True

    def __enter__(self) -> "ObjectReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_object(location: Location, size: int, limits: Limits | None = None) -> ObjectReader:
    """An :class:`ObjectReader` over the object ``location`` of ``size`` bytes (its first
    :data:`HEAD_BYTES` fetched in one request).

    Raises:
        FileNotFoundError: no such object. FormatError, LimitError: as :class:`ObjectReader`.
    """
    head = location.fs.cat_file(location.path, start=0, end=min(size, HEAD_BYTES)) if size else b""
    return ObjectReader(location, size, head, limits)
