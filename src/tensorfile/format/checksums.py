"""Checksums of tensor data: XXH3-64 (Cyan4973/xxHash, ``xxhash.h``) via ``xxhash``.

A checksum covers a tensor's bytes exactly as stored in the data buffer
(little-endian, C order) and is written as 16 lowercase hex digits, the
big-endian rendering of the 64-bit hash (``xxhash.xxh3_64().hexdigest()``).
"""

from __future__ import annotations

import xxhash

__all__ = ["ALGORITHM", "HEX_DIGITS", "Hasher", "checksum"]

ALGORITHM = "xxh3-64"
HEX_DIGITS = 16
Hasher = xxhash.xxh3_64


def checksum(data: bytes | memoryview) -> str:
    """Return the XXH3-64 checksum of ``data`` as 16 hex digits."""
    return xxhash.xxh3_64_hexdigest(data)
