"""Checksums of tensor data: XXH3-64 (Cyan4973/xxHash, ``xxhash.h``) via ``xxhash``.

A checksum covers a tensor's bytes exactly as stored in the data buffer
(little-endian, C order) and is written as 16 lowercase hex digits, the
big-endian rendering of the 64-bit hash (``xxhash.xxh3_64().hexdigest()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import xxhash

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["ALGORITHM", "HEX_DIGITS", "Hasher", "checksum", "HashPool", "OverlappedHasher"]

ALGORITHM = "xxh3-64"
HEX_DIGITS = 16
Hasher = xxhash.xxh3_64


def checksum(data: bytes | memoryview) -> str:
    """Return the XXH3-64 checksum of ``data`` as 16 hex digits."""
    return xxhash.xxh3_64_hexdigest(data)


class HashPool:
    """A helper thread, started on first use, for :class:`OverlappedHasher` (a context manager)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # only when hashing overlaps: not for `ls`

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tensorfile-hash")
        return self._pool.submit(fn, *args)

    def __enter__(self) -> "HashPool":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()


class OverlappedHasher:
    """XXH3-64 of a stream of pieces, hashing each large piece on the pool's thread.

    ``update`` returns at once for a large piece, so the caller can read or
    write the next one meanwhile: ``xxhash`` and file I/O both release the GIL,
    so on two cores the hash costs no time. Pieces are hashed in order; each
    stays referenced until hashed. Small pieces are hashed inline (a hand-off
    costs more than they do).
    """

    MIN_PARALLEL = 1 << 20

    def __init__(self, pool: HashPool) -> None:
        self._hasher = Hasher()
        self._pool = pool
        self._pending: Future[Any] | None = None

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def update(self, piece: memoryview) -> None:
        self._wait()
        if len(piece) < self.MIN_PARALLEL:
            self._hasher.update(piece)
        else:
            self._pending = self._pool.submit(self._hasher.update, piece)

    def hexdigest(self) -> str:
        self._wait()
        return self._hasher.hexdigest()
