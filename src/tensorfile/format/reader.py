"""Read tensors from a safetensors file: copied into fresh arrays, or memory-mapped.

The header is parsed and fully validated (:mod:`.header`) before any tensor is
touched, so every offset used here lies inside the file.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import FormatError, LimitError
from ..limits import DEFAULT_LIMITS, Budget, Limits
from .checksums import Hasher, checksum
from .dtypes import byte_view
from .header import OPEN_FLAGS, TensorEntry, read_header
from .memory import empty_array
from .ranges import READ_CHUNK, RangeMaps, pread_exact, read_rows

__all__ = ["SafetensorsReader", "READ_CHUNK", "PARALLEL_MIN", "READERS"]

#: :meth:`SafetensorsReader.read_all` hands tensors of at least this many bytes to helper threads.
PARALLEL_MIN = 1 << 20
#: Helper threads that read large tensors: one per core, at most 4 (the page-cache copy saturates memory
#: bandwidth beyond that).
READERS = max(1, min(4, os.cpu_count() or 1))


class SafetensorsReader:
    """An open safetensors file with a validated header.

    Args:
        path: the file.

    Raises:
        FileNotFoundError: no such file.
        FormatError: the file is not a valid safetensors file; when it looks
            like another format (zip, pickle, NumPy, HDF5...) the message says so.
    """

    def __init__(self, path: str | os.PathLike[str], limits: Limits | None = None) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, OPEN_FLAGS)
        try:
            self.size, self.header = read_header(self._fd, self.path, limits or DEFAULT_LIMITS)
            self._maps = RangeMaps(self._fd, self.size, self.path)
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def entries(self) -> dict[str, TensorEntry]:
        """Tensors by name, in data order."""
        return self.header.entries

    @property
    def metadata(self) -> dict[str, str]:
        """``__metadata__`` as stored (empty when absent)."""
        return dict(self.header.metadata or {})

    def read(self, entry: TensorEntry, *, hash: bool = False, out: np.ndarray | None = None) -> tuple[np.ndarray, str | None]:
        """Read one tensor into a new writable array (memory from :func:`.memory.empty_array`), or into ``out``.

        Args:
            out: a C-contiguous writable array of exactly ``entry.nbytes`` bytes to read into (its dtype and
                shape are the caller's; a slice of a larger array, a tensor's own memory).

        Returns:
            ``(array, checksum)``: the array has ``entry``'s dtype and shape;
            checksum is XXH3-64 of its bytes as hex when ``hash`` is set, else None.
            Each piece of :data:`READ_CHUNK` bytes is hashed right after it is read,
            while it is in the CPU's cache.

        Raises:
            FormatError: the file ended early (it changed after opening), or the
                shape is impossible. LimitError: the memory cannot be had.
        """
        self._check_open()
        if out is not None:
            if not out.flags.c_contiguous or not out.flags.writeable or out.nbytes != entry.nbytes:
                raise ValueError(f"{self.path}: tensor {entry.name!r}: out must be a writable C-contiguous array of "
                                 f"{entry.nbytes} bytes")  # fmt: skip
            array = out
        else:
            try:
                array = empty_array(entry.shape, entry.dtype)
            except (ValueError, MemoryError) as exc:
                error = LimitError if isinstance(exc, MemoryError) else FormatError
                raise error(f"{self.path}: tensor {entry.name!r} of shape {list(entry.shape)}: {exc}") from None
        if not entry.nbytes:
            return array, (checksum(b"") if hash else None)
        flat = byte_view(array)
        position = self.header.data_start + entry.begin
        if entry.nbytes <= READ_CHUNK:  # one system call, one hash call: most tensors
            self._read_piece(entry, flat, position)
            return array, (checksum(flat) if hash else None)
        hasher = Hasher() if hash else None
        for start in range(0, entry.nbytes, READ_CHUNK):
            piece = flat[start : start + READ_CHUNK]
            self._read_piece(entry, piece, position + start)
            if hasher is not None:
                hasher.update(piece)
        return array, (hasher.hexdigest() if hasher is not None else None)

    def read_range(self, entry: TensorEntry, start: int, out: np.ndarray) -> None:
        """Fill ``out`` (a writable C-contiguous array) with the tensor's bytes from byte ``start`` on.

        Raises:
            ValueError: the range does not lie inside the tensor. FormatError: the file ended early.
        """
        self._check_open()
        if start < 0 or start + out.nbytes > entry.nbytes:
            raise ValueError(f"{self.path}: tensor {entry.name!r}: bytes {start}:{start + out.nbytes} lie outside "
                             f"its {entry.nbytes} bytes")  # fmt: skip
        if out.nbytes:
            self._read_piece(entry, byte_view(out), self.header.data_start + entry.begin + start)

    def _read_piece(self, entry: TensorEntry, piece: memoryview, offset: int) -> None:
        pread_exact(self._fd, piece, offset, self.path, entry.name)

    def read_all(
        self, entries: Iterable[TensorEntry], *, hash: bool = False
    ) -> Iterator[tuple[TensorEntry, np.ndarray, str | None]]:
        """:meth:`read` each entry, yielding ``(entry, array, checksum)`` in the given order.

        Tensors of :data:`PARALLEL_MIN` bytes or more are read (and hashed) by
        :data:`READERS` helper threads, largest first, while this thread reads the
        small ones: ``preadv`` and ``xxhash`` release the GIL, so the cores fault in
        fresh memory and copy from the page cache together (on two cores, a 1.3 GiB
        load takes about half the time of one thread). Stopping the iteration early
        cancels the reads not yet started.
        """
        entries = list(entries)
        big = sorted((e for e in entries if e.nbytes >= PARALLEL_MIN), key=lambda e: -e.nbytes)
        if READERS < 2 or len(big) < 2:
            for entry in entries:
                yield (entry, *self.read(entry, hash=hash))
            return
        pool = ThreadPoolExecutor(READERS, thread_name_prefix="tensorfile-read")
        try:
            pending = {id(e): pool.submit(self.read, e, hash=hash) for e in big}
            for entry in entries:
                job = pending.pop(id(entry), None)
                yield (entry, *(job.result() if job is not None else self.read(entry, hash=hash)))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def map(self, entry: TensorEntry) -> np.ndarray:
        """A zero-copy, copy-on-write array over the tensor's bytes in the file.

        Only the bytes around the tensor are mapped (:class:`.ranges.RangeMaps`), never
        the whole file, so this works under an address-space limit smaller than the
        file. Writing to it changes only this process's copy, never the file. As with
        any memory map, if another process truncates the file later, touching the
        array raises SIGBUS; tensorfile itself never truncates a file (it replaces
        files by renaming).

        Raises:
            FormatError: the file shrank after it was opened. LimitError: the kernel
                refuses the map (e.g. a tensor larger than the address space left).
        """
        self._check_open()
        return self._maps.array(self.header.data_start + entry.begin, entry.dtype, entry.shape, entry.name)

    def read_rows(self, entry: TensorEntry, shape: tuple[int, ...], dtype: np.dtype, start: int, stop: int,
                  budget: Budget, out: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Rows ``start:stop`` of the tensor's leading dimension read into a fresh array
        (:func:`.ranges.read_rows`); ``shape`` and ``dtype`` are how its bytes are seen
        (complex128 for a tensor stored as F64 pairs); into ``out`` when given (see :func:`.ranges.read_rows`).

        Raises:
            LimitError: over ``budget``, or the memory cannot be had. FormatError: the file ended early.
        """
        self._check_open()
        return read_rows(self._fd, self.path, entry.name, self.header.data_start + entry.begin, shape, dtype, start,
                         stop, budget, out)  # fmt: skip

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ValueError(f"{self.path}: the file is closed")

    def close(self) -> None:
        """Close the file. Arrays returned by :meth:`map` stay valid."""
        self._maps.release()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "SafetensorsReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
