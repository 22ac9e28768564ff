"""Stream tensors into a safetensors file, hashing each one on the way.

The header must come first but holds every tensor's checksum, which is known
only once its bytes have been written. Checksums have a fixed width, so the
header's length is known in advance: the writer reserves it, streams the data
after it in chunks of :data:`CHUNK_BYTES` (hashing each chunk while it is hot in
cache), then seeks back and writes the header. Memory held beyond the caller's
tensors is one chunk (only for non-contiguous or big-endian inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Mapping, Sequence

import numpy as np

from .checksums import HEX_DIGITS, HashPool, OverlappedHasher
from .dtypes import STORED_AS, byte_view, code_of
from .header import HEADER_ALIGN, build_header

__all__ = ["CHUNK_BYTES", "Tensor", "write_tensors", "tensor_chunks", "layout_order"]

#: Bytes hashed and written per system call.
CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class Tensor:
    """A tensor to write: its name and a host array (any strides, any byte order)."""

    name: str
    array: np.ndarray

    @property
    def code(self) -> str:
        return code_of(self.array.dtype, self.name)

    @property
    def shape(self) -> tuple[int, ...]:
        extra = STORED_AS.get(self.array.dtype.name)
        return tuple(self.array.shape) + ((extra[1],) if extra else ())


def layout_order(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Order tensors as the reference writer does: item size descending, then name.

    With the data buffer starting at a multiple of 16, every tensor is then
    naturally aligned for zero-copy memory mapping.
    """
    return sorted(tensors, key=lambda t: (-t.array.dtype.itemsize, t.name))


def _is_little_endian(dtype: np.dtype) -> bool:
    return dtype.byteorder in "<|" or (dtype.byteorder == "=" and np.little_endian)


def _little_endian(a: np.ndarray) -> np.ndarray:
    return a if _is_little_endian(a.dtype) else a.astype(a.dtype.newbyteorder("<"))


def tensor_chunks(array: np.ndarray, chunk: int = CHUNK_BYTES) -> Iterator[memoryview]:
    """Yield the array's bytes, little-endian and C order, as pieces of about ``chunk`` bytes.

    A C-contiguous little-endian array is sliced without copying; otherwise each
    piece is a copy of at most about ``chunk`` bytes.
    """
    if array.size == 0:
        return
    if array.flags.c_contiguous and _is_little_endian(array.dtype):
        flat = byte_view(array)
        for start in range(0, len(flat), chunk):
            yield flat[start : start + chunk]
        return
    if array.nbytes <= chunk or array.ndim == 0:
        yield byte_view(_little_endian(np.ascontiguousarray(array)))
        return
    row = array[0].nbytes
    if row <= chunk or array.ndim == 1:
        step = max(1, chunk // max(row, 1))
        for start in range(0, array.shape[0], step):
            yield byte_view(_little_endian(np.ascontiguousarray(array[start : start + step])))
        return
    for i in range(array.shape[0]):
        yield from tensor_chunks(array[i], chunk)


def _write_all(f: BinaryIO, data: memoryview) -> None:
    while data:
        n = f.write(data)
        if n is None or n <= 0:
            raise OSError(f"short write: {len(data)} bytes could not be written")
        data = data[n:]


def write_tensors(
    f: BinaryIO,
    tensors: Sequence[Tensor],
    metadata: Callable[[Mapping[str, str]], Mapping[str, str] | None],
    *,
    seal: Callable[[bytes], bytes] | None = None,
    progress: Callable[[int], None] | None = None,
    align: int = HEADER_ALIGN,
) -> dict[str, str]:
    """Write a complete safetensors file to ``f`` (an unbuffered, seekable binary file).

    Args:
        f: the open file, positioned at 0.
        tensors: the tensors, in data order (see :func:`layout_order`).
        metadata: given ``{name: checksum}``, returns ``__metadata__``. It is
            called twice, first with placeholder checksums of the same width,
            and must return a header of the same length both times.
        seal: given the final header's N bytes, returns them with a header
            checksum filled in (same length).
        progress: called with the number of bytes written after each chunk.
        align: the data buffer's alignment (see :func:`build_header`).

    Returns:
        ``{name: checksum}`` (16 hex digits, XXH3-64 of the stored bytes).
    """
    layout = [(t.name, t.code, t.shape, t.array.nbytes) for t in tensors]
    placeholder = {t.name: "0" * HEX_DIGITS for t in tensors}
    header_len = len(build_header(layout, metadata(placeholder), align))
    f.seek(header_len)
    sums: dict[str, str] = {}
    with HashPool() as pool:
        for t in tensors:
            h = OverlappedHasher(pool)
            for piece in tensor_chunks(t.array):
                h.update(piece)  # hashed on the pool's thread while this one writes
                _write_all(f, piece)
                if progress is not None:
                    progress(len(piece))
            sums[t.name] = h.hexdigest()
    header = build_header(layout, metadata(sums), align)
    if seal is not None:
        header = header[:8] + seal(header[8:])
    if len(header) != header_len:  # pragma: no cover - guards the fixed-width invariant
        raise RuntimeError("header length changed between placeholder and final checksums")
    f.seek(0)
    _write_all(f, memoryview(header))
    return sums
