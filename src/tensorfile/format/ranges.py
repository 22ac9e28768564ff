"""Parts of an open file: copy-on-write maps of byte ranges, and positioned reads of rows.

Lazy readers (:func:`tensorfile.open`) never map a whole file. Under an address-space
limit smaller than the file (``ulimit -v``, ``RLIMIT_AS``), a map of the whole file
fails with ``ENOMEM`` before one byte is read (safetensors#528); here each tensor costs
only the address space of the bytes around it:

* :class:`RangeMaps` maps a tensor of at most :data:`WINDOW` bytes through the window
  that holds it: the ``WINDOW`` bytes from the multiple of ``WINDOW`` at or below its
  first byte (the rest of the file where that is shorter). Tensors in one window share
  its map, so a file of many small tensors costs a few maps, not one per tensor. A
  tensor that is larger, or that crosses the end of its window, gets a map of its own:
  from its first byte rounded down to ``mmap.ALLOCATIONGRANULARITY`` to its last.
  A map lives as long as an array uses it (plus, for windows, while it is the last
  one used, so a loop over small tensors does not map the same window again and
  again); closing the file never invalidates an array. Each live map is one kernel
  mapping and, in Python before 3.13, one duplicated file descriptor.
* :func:`read_rows` reads a run of rows of a tensor's leading dimension with ``preadv``
  into fresh memory (:mod:`.memory`): ``f.slice(name)[a:b]`` reads and holds only those
  rows' bytes, whatever the tensor's size.
"""

from __future__ import annotations

import math
import mmap
import os
import weakref
from typing import Sequence

import numpy as np

from ..errors import FormatError, LimitError
from ..limits import Budget
from .dtypes import byte_view
from .memory import empty_array

__all__ = ["RangeMaps", "read_rows", "pread_exact", "WINDOW", "READ_CHUNK"]

#: Bytes of a shared window of :class:`RangeMaps` (a multiple of ``mmap.ALLOCATIONGRANULARITY``).
WINDOW = 64 << 20
#: Bytes read per system call.
READ_CHUNK = 8 << 20


class RangeMaps:
    """Copy-on-write maps of parts of one open file (see the module docs).

    Threads may share it: at worst two of them map one window at once, and one map is dropped.

    Args:
        fd: the file, open for reading; the caller closes it (arrays already made stay valid).
        size: its size in bytes when opened (a map never reaches past it).
        path: the file's name, for messages.
    """

    def __init__(self, fd: int, size: int, path: str) -> None:
        self._fd, self._size, self._path = fd, size, path
        self._windows: dict[int, weakref.ref[mmap.mmap]] = {}
        self._recent: tuple[int, mmap.mmap] | None = None  # the last window used, and its number

    def array(self, offset: int, dtype: np.dtype, shape: Sequence[int], name: str) -> np.ndarray:
        """A copy-on-write array of ``dtype`` and ``shape`` over the file's bytes from ``offset`` (bytes from its start).

        Writing to it changes only this process's copy, never the file. Tensors of one
        window are views of one map: an array returned twice shares its memory.

        Raises:
            FormatError: the range lies past the end of the file (it shrank after it was opened),
                or NumPy cannot make the shape.
            LimitError: the kernel refuses the map (``ENOMEM`` under an address-space
                limit smaller than the tensor, too many maps or open files); names ``name``.
        """
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        try:
            if nbytes == 0:
                return np.empty(tuple(shape), dtype)  # ValueError for dims NumPy cannot make even empty
            buffer, start = self._map(offset, nbytes)
            flat = np.frombuffer(buffer, dtype, count, start)
        except ValueError as exc:  # the file shrank after it was opened, or an impossible shape
            raise FormatError(f"{self._path}: mapping tensor {name!r}: {exc}") from None
        except OSError as exc:  # ENOMEM (address-space limit, vm.max_map_count), EMFILE
            raise LimitError(f"{self._path}: mapping tensor {name!r} ({nbytes} bytes): {exc.strerror or exc}") from None
        return flat.reshape(tuple(shape))

    def _map(self, offset: int, nbytes: int) -> tuple[mmap.mmap, int]:
        """A map holding bytes ``offset`` to ``offset + nbytes`` of the file, and where ``offset`` lies in it."""
        index = offset // WINDOW
        low = index * WINDOW
        if offset + nbytes > low + WINDOW:  # larger than a window, or across its end: a map of its own
            low = offset - offset % mmap.ALLOCATIONGRANULARITY
            return self._mmap(low, offset + nbytes - low), offset - low
        recent = self._recent  # read once: another thread may replace it
        if recent is not None and recent[0] == index:
            return recent[1], offset - low
        ref = self._windows.get(index)
        window = ref() if ref is not None else None
        if window is None:
            window = self._mmap(low, min(WINDOW, self._size - low))
            self._windows[index] = weakref.ref(window)
        self._recent = (index, window)
        return window, offset - low

    def _mmap(self, offset: int, length: int) -> mmap.mmap:
        # ValueError when the file is now shorter than offset + length (mmap checks its size now)
        return mmap.mmap(self._fd, length, access=mmap.ACCESS_COPY, offset=offset)

    def release(self) -> None:
        """Forget every map (those arrays use are released with the last of them)."""
        self._windows.clear()
        self._recent = None


def pread_exact(fd: int, buffer: memoryview, offset: int, path: str, name: str) -> None:
    """Fill ``buffer`` with the file's bytes from ``offset``, :data:`READ_CHUNK` bytes per ``preadv``.

    Raises:
        FormatError: the file ended early ("expected N bytes at offset O, got M"; names tensor ``name``).
    """
    for start in range(0, len(buffer), READ_CHUNK):
        piece = buffer[start : start + READ_CHUNK]
        got = os.preadv(fd, [piece], offset + start)
        if got != len(piece):
            raise FormatError(
                f"{path}: reading tensor {name!r}, expected {len(piece)} bytes at offset {offset + start}, got {got}"
            )


def read_rows(
    fd: int, path: str, name: str, offset: int, shape: Sequence[int], dtype: np.dtype, start: int, stop: int,
    budget: Budget, out: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Rows ``start:stop`` of the leading dimension of a C-ordered tensor stored at ``offset``, read into fresh memory
    (or into ``out``, a writable C-contiguous array of exactly those rows' bytes, not charged to ``budget``).

    Args:
        fd, path: the open file and its name.
        name: the tensor, for messages.
        offset: its first byte, from the start of the file.
        shape, dtype: the whole tensor's (at least one dim); ``0 <= start <= stop <= shape[0]``.
        budget: charged with the rows' bytes before they are allocated.

    Returns:
        A writable array of ``dtype`` and shape ``(stop - start, *shape[1:])``.

    Raises:
        LimitError: over ``budget``, or the memory cannot be had. FormatError: the file ended early.
    """
    if out is not None:
        row = dtype.itemsize * math.prod(shape[1:])
        if not out.flags.c_contiguous or not out.flags.writeable or out.nbytes != (stop - start) * row:
            raise ValueError(f"{path}: rows {start}:{stop} of tensor {name!r}: out must be a writable C-contiguous "
                             f"array of {(stop - start) * row} bytes")  # fmt: skip
    else:
        out, row = rows_buffer(path, name, shape, dtype, start, stop, budget)
    if out.nbytes:
        pread_exact(fd, byte_view(out), offset + start * row, path, name)
    return out


def rows_buffer(path: str, name: str, shape: Sequence[int], dtype: np.dtype, start: int, stop: int,
                budget: Budget) -> tuple[np.ndarray, int]:  # fmt: skip
    """Fresh memory for rows ``start:stop`` of a tensor of ``shape`` (charged to ``budget`` first), and the bytes
    of one row: what every reader of rows fills (:func:`read_rows`, object-store reads).

    Raises:
        LimitError: over ``budget``, or the memory cannot be had.
    """
    rest = tuple(shape[1:])
    row = dtype.itemsize * math.prod(rest)
    what = f"rows {start}:{stop} of tensor {name!r}"
    budget.charge((stop - start) * row, what)
    try:
        return empty_array((stop - start, *rest), dtype), row
    except MemoryError as exc:
        raise LimitError(f"{path}: {what}: {exc}") from None
