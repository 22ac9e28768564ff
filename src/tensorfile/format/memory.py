"""Host buffers for tensors read from files.

Every reader allocates the arrays it fills here, so that loaded memory is fast to fault
in and ordinary for the user: private (not shared with ``fork()``ed DataLoader workers),
returned to the kernel when the array is freed.

Chosen by measurement in fresh processes (``benchmarks/allocators.py``, numbers in
``docs/PERFORMANCE.md``): reading a 1.3 GiB file into NumPy's ``np.empty`` arrays took
anywhere from 0.2 to 3.4 s here (median 0.49 s on one thread, 2.1 s on two), into private
anonymous maps a steady 0.64 s on one thread and 0.35 s on two, into ``torch.empty`` 0.45 s
on two.
NumPy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for arrays
of 4 MiB or more; where huge pages are assembled at fault time
(``/sys/kernel/mm/transparent_hugepage/defrag`` = ``madvise``, common in virtual
machines), the first touch of such an array stalls on memory compaction. Buffers of
:data:`MAP_MIN_BYTES` or more are therefore private anonymous maps with the kernel's
default page policy, as ``malloc`` (and so torch) gets them; smaller ones are plain
``np.empty`` (NumPy asks no huge pages for them, and its heap reuses freed blocks).
"""

from __future__ import annotations

import math
import mmap
from typing import Sequence

import numpy as np

__all__ = ["empty_bytes", "empty_array", "MAP_MIN_BYTES"]

#: Buffers of at least this many bytes are memory maps (NumPy's huge-page threshold).
MAP_MIN_BYTES = 4 << 20


def empty_bytes(nbytes: int) -> np.ndarray:
    """An uninitialized (for maps: zeroed on first touch) writable ``uint8`` array of ``nbytes`` bytes.

    Raises:
        MemoryError: the memory cannot be had (as ``np.empty`` raises it).
    """
    if nbytes < MAP_MIN_BYTES:
        return np.empty(nbytes, np.uint8)
    try:
        buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError as exc:  # ENOMEM, or a size the kernel refuses: what np.empty reports as MemoryError
        raise MemoryError(f"cannot allocate {nbytes} bytes: {exc.strerror or exc}") from None
    return np.frombuffer(buffer, np.uint8)


def empty_array(shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """An uninitialized writable C-ordered array of ``shape`` and ``dtype``, allocated as :func:`empty_bytes` says.

    Raises:
        ValueError: ``shape`` is not a valid NumPy shape for ``dtype`` (negative dims,
            more than 64 dims, too large). MemoryError: the memory cannot be had.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MAP_MIN_BYTES or dtype.hasobject:
        return np.empty(shape, dtype)
    return empty_bytes(nbytes).view(dtype).reshape(shape)
