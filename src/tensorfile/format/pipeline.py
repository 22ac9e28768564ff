"""Reading tensors through a small ring of reusable host buffers, overlapped with their copy elsewhere.

The host-to-device half of a load onto an accelerator: reader threads fill host buffers
("slots") with the file's bytes, tensor by tensor (a tensor larger than a slot in pieces
of one slot), while the calling thread hands each filled slot to ``send`` (e.g. an
asynchronous copy to a GPU). ``send`` returns a *fence*, an object whose ``wait()``
returns once the slot's bytes have been consumed (a CUDA event), or None when the copy
was already done; a slot is refilled only after its fence was waited for, so an
asynchronous copy never reads bytes of the next piece.

Nothing here knows a device: the framework side supplies ``allocate`` (pinned host memory
for CUDA) and ``send``. Memory is bounded: at most ``slots`` buffers of
``min(chunk, largest tensor)`` bytes each exist at once, whatever the file's size, and they
are reused from the first piece to the last.

Pieces of one tensor are read in order by one reader thread (so its XXH3 checksum is
computed on the fly and given with its last piece); pieces of different tensors may
arrive in any order when there are several readers.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .checksums import Hasher
from .memory import empty_bytes

__all__ = ["Fence", "Piece", "RingStats", "stream_pieces", "CHUNK", "SLOTS"]

#: Default bytes of one slot: a tensor larger than this goes through the ring in pieces of this size.
CHUNK = 16 << 20
#: Default number of slots.
SLOTS = 4


class Fence(Protocol):
    """Returned by ``send``: ``wait()`` returns once the piece's host bytes may be overwritten."""

    def wait(self) -> None: ...


@dataclass(frozen=True)
class Piece:
    """Bytes ``start`` to ``start + len(data)`` of ``item``'s tensor, in a slot of the ring.

    Attributes:
        item: as given to :func:`stream_pieces`.
        start: byte offset of this piece in the tensor.
        data: a ``uint8`` view of the slot holding the bytes (valid until the fence returned for it is waited for).
        last: True for the tensor's last piece (a tensor of 0 bytes has one empty piece).
        checksum: on the last piece when hashing, XXH3-64 of the whole tensor as hex; else None.
    """

    item: Any
    start: int
    data: np.ndarray
    last: bool
    checksum: str | None = None


@dataclass
class RingStats:
    """What one :func:`stream_pieces` used: slots allocated, their bytes, pieces and bytes moved."""

    slots: int = 0
    slot_bytes: int = 0
    allocated_bytes: int = 0
    pieces: int = 0
    bytes: int = 0
    buffers: list[int] = field(default_factory=list)  # id() of each slot's array, for tests of reuse


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def stream_pieces(
    items: Sequence[tuple[Any, int]],
    read: Callable[[Any, int, np.ndarray], None],
    send: Callable[[Piece], Fence | None],
    *,
    slots: int | None = None,
    chunk: int | None = None,
    readers: int = 1,
    hash: bool = False,
    allocate: Callable[[int], np.ndarray] = empty_bytes,
) -> RingStats:
    """Read every item's bytes through the ring and hand each piece to ``send``, overlapping the two.

    Args:
        items: ``(item, nbytes)`` per tensor, in the order to read them.
        read: ``read(item, start, out)`` fills ``out`` (a ``uint8`` array) with the tensor's bytes from
            ``start``; called on a reader thread (it should release the GIL: ``preadv`` does).
        send: called on this thread with each filled :class:`Piece`; returns a :class:`Fence` (or None when
            the bytes were already consumed). An error it raises stops the readers and is raised here.
        slots: buffers in the ring (at least 2 for any overlap; 1 works, without overlap); default :data:`SLOTS`.
        chunk: the largest piece in bytes; each slot holds ``min(chunk, largest nbytes)`` bytes; default
            :data:`CHUNK`.
        readers: reader threads (each reads whole tensors, in order of ``items``).
        hash: compute each tensor's XXH3-64 as its pieces are read (given on its last piece).
        allocate: ``allocate(nbytes)`` -> a writable ``uint8`` array of ``nbytes`` bytes (a slot).

    Returns:
        :class:`RingStats`. Every fence has been waited for when this returns, so every piece was consumed.

    Raises:
        Whatever ``read``, ``send`` or ``allocate`` raise (the first error; the others stop without more reads).
    """
    slots = SLOTS if slots is None else slots
    chunk = CHUNK if chunk is None else chunk
    if slots < 1 or chunk < 1 or readers < 1:
        raise ValueError(f"slots, chunk and readers must be at least 1, got {slots}, {chunk}, {readers}")
    items = list(items)
    stats = RingStats(slot_bytes=max(1, min(chunk, max((n for _, n in items), default=1))))
    free: queue.Queue[Any] = queue.Queue()  # (slot or None, fence or None): None slots are allocated on first use
    for _ in range(slots):
        free.put((None, None))
    ready: queue.Queue[Any] = queue.Queue()
    work: queue.Queue[Any] = queue.Queue()
    for entry in items:
        work.put(entry)
    stop = threading.Event()
    lock = threading.Lock()

    def take() -> np.ndarray | None:
        slot, fence = free.get()
        if fence is not None:
            fence.wait()  # the previous piece in this slot has been consumed
        if stop.is_set():
            return None
        if slot is None:
            slot = allocate(stats.slot_bytes)
            with lock:
                stats.slots += 1
                stats.allocated_bytes += slot.nbytes
                stats.buffers.append(id(slot))
        return slot

    def reader() -> None:
        try:
            while not stop.is_set():
                try:
                    item, nbytes = work.get_nowait()
                except queue.Empty:
                    break
                hasher = Hasher() if hash else None
                start = 0
                while True:
                    slot = take()
                    if slot is None:
                        return
                    data = slot[: min(stats.slot_bytes, nbytes - start)]
                    if len(data):
                        read(item, start, data)
                    if hasher is not None:
                        hasher.update(data)
                    last = start + len(data) >= nbytes
                    digest = hasher.hexdigest() if hasher is not None and last else None
                    ready.put((slot, Piece(item, start, data, last, digest)))
                    start += len(data)
                    if last:
                        break
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put(_Failed(exc))
        finally:
            ready.put(_DONE)

    threads = [threading.Thread(target=reader, name=f"tensorfile-ring-{i}", daemon=True)
               for i in range(min(readers, max(1, len(items))))]  # fmt: skip
    for thread in threads:
        thread.start()
    running = len(threads)
    failed = True
    try:
        while running:
            got = ready.get()
            if got is _DONE:
                running -= 1
                continue
            if isinstance(got, _Failed):
                raise got.error
            slot, piece = got
            fence = send(piece)
            stats.pieces += 1
            stats.bytes += len(piece.data)
            free.put((slot, fence))
        failed = False
    finally:
        stop.set()
        for _ in threads:
            free.put((None, None))  # wakes a reader waiting for a slot
        for thread in threads:
            thread.join()
        late = _wait_all(free)
    if late is not None and not failed:
        raise late
    return stats


def _wait_all(free: "queue.Queue[Any]") -> BaseException | None:
    """Wait for every fence still in the ring (the slots may be freed after); the first error a wait raised."""
    first: BaseException | None = None
    while True:
        try:
            _, fence = free.get_nowait()
        except queue.Empty:
            break
        if fence is not None:
            try:
                fence.wait()
            except BaseException as exc:  # keep draining; the first error is raised after
                first = first or exc
    return first
