"""Stream tensors into a safetensors file, hashing each one on the way.

The header must come first but holds every tensor's checksum, which is known
only once its bytes have been written. Checksums have a fixed width, so the
header's length is known in advance: the writer builds it once with unique
placeholders, streams the data after it in chunks of :data:`CHUNK_BYTES` (hashing
each chunk while it is hot in cache), then seeks back and writes the header with
the placeholders replaced. Small tensors are gathered into writes of about
:data:`CHUNK_BYTES`. Memory held beyond the caller's tensors is about two chunks:
one batch of small tensors, and one piece of a non-contiguous or big-endian input.
"""

from __future__ import annotations

import re
import secrets
from typing import BinaryIO, Callable, Iterator, Mapping, Sequence

import numpy as np

from .checksums import HashPool, OverlappedHasher, checksum
from .dtypes import STORED_AS, byte_view, code_of, name_of
from .header import HEADER_ALIGN, build_header

__all__ = ["CHUNK_BYTES", "SMALL_BYTES", "Tensor", "write_tensors", "tensor_chunks", "layout_order"]

#: Bytes hashed and written per system call.
CHUNK_BYTES = 8 << 20
#: Tensors under this many bytes are hashed on the calling thread and batched into shared writes.
SMALL_BYTES = OverlappedHasher.MIN_PARALLEL


class Tensor:
    """A tensor to write: its name and a host array (any strides, any byte order).

    ``code`` (safetensors dtype code) and ``shape`` (as stored: complex128 gains a
    trailing axis of 2) are computed once, here.

    Raises:
        UnsupportedTypeError: the array's dtype cannot be stored.
    """

    __slots__ = ("name", "array", "code", "shape")

    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name = name
        self.array = array
        self.code = code_of(array.dtype, name)
        extra = STORED_AS.get(name_of(array.dtype))
        self.shape: tuple[int, ...] = tuple(array.shape) + ((extra[1],) if extra else ())


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

    The header is built once, with a unique placeholder of 16 hex digits for each
    checksum (:class:`_Placeholders`); the data follows it, and the placeholders are
    then overwritten with the checksums, which have the same width.

    Args:
        f: the open file, positioned at 0.
        tensors: the tensors, in data order (see :func:`layout_order`).
        metadata: given ``{name: checksum}``, returns ``__metadata__``. It must
            hold each checksum verbatim or none of them, and is called once (twice
            only if a placeholder is not found exactly once).
        seal: given the final header's N bytes, returns them with a header
            checksum filled in (same length).
        progress: called with the number of bytes written after each write.
        align: the data buffer's alignment (see :func:`build_header`).

    Returns:
        ``{name: checksum}`` (16 hex digits, XXH3-64 of the stored bytes).

    Tensors under :data:`SMALL_BYTES` are hashed here and written together, in
    writes of about :data:`CHUNK_BYTES`; larger ones are written piece by piece
    from their own memory, each piece hashed on a helper thread meanwhile.
    """
    layout = [(t.name, t.code, t.shape, t.array.nbytes) for t in tensors]
    placeholders = _Placeholders([t.name for t in tensors])
    template = build_header(layout, metadata(placeholders.by_name), align)
    f.seek(len(template))
    sums: dict[str, str] = {}
    batch: list[memoryview] = []
    batched = 0

    def flush() -> None:
        nonlocal batched
        if batch:
            _write_all(f, batch[0] if len(batch) == 1 else memoryview(b"".join(batch)))
            if progress is not None:
                progress(batched)
            batch.clear()
            batched = 0

    with HashPool() as pool:
        for t in tensors:
            if t.array.nbytes < SMALL_BYTES:
                pieces = list(tensor_chunks(t.array))  # one piece (none when empty)
                sums[t.name] = checksum(pieces[0] if pieces else b"")
                batch.extend(pieces)
                batched += t.array.nbytes
                if batched >= CHUNK_BYTES:
                    flush()
                continue
            flush()
            h = OverlappedHasher(pool)
            for piece in tensor_chunks(t.array):
                h.update(piece)  # hashed on the pool's thread while this one writes
                _write_all(f, piece)
                if progress is not None:
                    progress(len(piece))
            sums[t.name] = h.hexdigest()
        flush()
    header = placeholders.fill(template, sums)
    if header is None:  # a placeholder was not found exactly once: build the header again
        header = build_header(layout, metadata(sums), align)
    if seal is not None:
        header = header[:8] + seal(header[8:])
    if len(header) != len(template):  # pragma: no cover - guards the fixed-width invariant
        raise RuntimeError("header length changed between placeholder and final checksums")
    f.seek(0)
    _write_all(f, memoryview(header))
    return sums


class _Placeholders:
    """One unique 16-hex-digit stand-in per checksum: 8 random digits for this save, then the tensor's index.

    :meth:`fill` finds them in one scan of the header. Each must occur exactly once;
    if user metadata happened to hold one too, it returns None and the caller
    builds the header again with the real checksums.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.prefix = secrets.token_hex(4)
        self.names = list(names)
        self.by_name = {name: f"{self.prefix}{i:08x}" for i, name in enumerate(self.names)}

    def fill(self, template: bytes, sums: Mapping[str, str]) -> bytes | None:
        found = [m.start() for m in re.finditer(self.prefix.encode() + rb"[0-9a-f]{8}", template)]
        if not found:
            return template  # the metadata holds no checksum
        seen = bytearray(len(self.names))
        out: list[bytes] = []
        last = 0
        for at in found:
            index = int(template[at + 8 : at + 16], 16)
            if index >= len(self.names) or seen[index]:
                return None
            seen[index] = 1
            out += (template[last:at], sums[self.names[index]].encode("ascii"))
            last = at + 16
        if len(found) != len(self.names):
            return None
        out.append(template[last:])
        return b"".join(out)
