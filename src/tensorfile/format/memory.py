"""Host buffers for large reads.

NumPy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for
arrays of 4 MiB or more. Where huge pages are granted only on request and must be
assembled at fault time (``/sys/kernel/mm/transparent_hugepage/defrag`` =
``madvise``, common in virtual machines), the first touch of such an array can
stall on memory compaction: measured here, a 1.3 GiB read into fresh NumPy arrays
took 1.4 to 1.8 s against 0.6 to 1.0 s into plain pages (``docs/PERFORMANCE.md``).
:func:`empty_bytes` gives large buffers as *private* anonymous memory maps with the
kernel's default page policy, as ``malloc`` (and so torch) gets them: not shared with
``fork()``ed workers (a shared map fills about 1.45x slower here, and a DataLoader worker
would share it), freed when the array that keeps the map alive is freed.
"""

from __future__ import annotations

import mmap

import numpy as np

__all__ = ["empty_bytes", "MAP_MIN_BYTES"]

#: Buffers of at least this many bytes are memory maps (NumPy's huge-page threshold).
MAP_MIN_BYTES = 4 << 20


def empty_bytes(nbytes: int) -> np.ndarray:
    """An uninitialized (for maps: zeroed on first touch) writable ``uint8`` array of ``nbytes`` bytes."""
    if nbytes < MAP_MIN_BYTES:
        return np.empty(nbytes, np.uint8)
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), np.uint8)
