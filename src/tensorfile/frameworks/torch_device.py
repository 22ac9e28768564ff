"""torch tensors on an accelerator (CUDA): loads through pinned host buffers, and device-to-host staging.

Loads (:func:`load_streamed`, :func:`fill_streamed`): the file's bytes go through the ring of
:mod:`tensorfile.format.pipeline`, whose slots are pinned (page-locked) host memory here, and each
filled slot is copied to the device asynchronously on a side stream (``copy_(non_blocking=True)``,
then a ``torch.cuda.Event`` the ring waits for before it refills the slot). The disk read of
one piece thus overlaps the host-to-device copy of the one before; host memory stays at a few
slots (:data:`tensorfile.format.pipeline.SLOTS` x :data:`~tensorfile.format.pipeline.CHUNK`
bytes at most) whatever the file's size, and no pageable copy of the whole state is made.
Before returning, the device's current stream waits for the side stream, so the caller's kernels
see the loaded values; the side stream first waits for the current stream, so work already
queued on a destination (a model's parameter) is done before it is overwritten.

Saves (:class:`DeviceSource`): an asynchronous checkpoint copies a CUDA tensor straight into a
reused pinned staging buffer, on the tensor's current stream (after the kernels that computed
it), and waits for that copy's event before a background writer reads the buffer.

Only the functions here touch CUDA. :data:`STREAM_DEVICE_TYPES` says which devices take these
paths; tests add ``"cpu"`` to run the same code without a GPU (copies are then synchronous
``copy_`` calls and buffers are ordinary host memory).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..format import pipeline
from ..format.dtypes import STORED_AS, dtype_from_name, name_of
from ..format.header import TensorEntry
from ..format.memory import empty_array, empty_bytes
from ..format.pipeline import Piece, RingStats, stream_pieces
from ..format.reader import READERS
from ..format.record import logical_shape
from .torch import ADAPTER, NAME_TO_TORCH, TORCH_TO_NAME, _target_device

__all__ = ["STREAM_DEVICE_TYPES", "streams_to", "pinned_bytes", "pinned_array", "DeviceSource", "load_streamed",
           "fill_streamed", "fillable", "LAST_STATS"]  # fmt: skip

#: Device types whose loads go through pinned buffers and whose tensors are staged device-to-host.
STREAM_DEVICE_TYPES: set[str] = {"cuda"}
#: :class:`tensorfile.format.pipeline.RingStats` of the last streamed load or fill (for tests and benchmarks).
LAST_STATS: list[RingStats] = []


def streams_to(device: torch.device) -> bool:
    """True when tensors for ``device`` take the pinned, overlapped path."""
    return device.type in STREAM_DEVICE_TYPES and (device.type != "cuda" or torch.cuda.is_available())


def _pinning() -> bool:
    return torch.cuda.is_available()


def pinned_bytes(nbytes: int) -> np.ndarray:
    """A writable ``uint8`` array of ``nbytes`` bytes in pinned host memory (ordinary memory without CUDA).

    The array keeps the torch tensor owning the memory alive (``Tensor.numpy()`` sets it as its base). It comes
    from torch's caching host allocator, which rounds each block up to a power of two (a 24 MiB tensor's buffer
    holds 32 MiB of page-locked memory) and keeps freed blocks for reuse. Where CUDA refuses to pin more (the
    limit of locked memory), ordinary memory is returned: copies from it are then synchronous, still correct.
    """
    if not _pinning():
        return empty_bytes(nbytes)
    try:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True).numpy()
    except RuntimeError:  # cudaHostAlloc refused
        return empty_bytes(nbytes)


def pinned_array(shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """An uninitialized C-ordered array of ``shape`` and ``dtype`` in pinned host memory (see :func:`pinned_bytes`)."""
    dtype = np.dtype(dtype)
    if not _pinning():
        return empty_array(shape, dtype)
    count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    return pinned_bytes(count * dtype.itemsize).view(dtype).reshape(tuple(shape))


class _EventFence:
    """A CUDA event recorded after a copy: ``wait()`` blocks this thread until the copy is done."""

    __slots__ = ("event",)

    def __init__(self, stream: Any) -> None:
        self.event = torch.cuda.Event()
        self.event.record(stream)

    def wait(self) -> None:
        self.event.synchronize()


def _bytes_of(tensor: torch.Tensor) -> torch.Tensor:
    """A flat ``uint8`` view of a contiguous tensor's bytes."""
    return tensor.reshape(-1).view(torch.uint8)


class _HostToDevice:
    """Asynchronous copies of host pieces into device byte tensors, on one side stream per CUDA device."""

    def __init__(self) -> None:
        self._streams: dict[torch.device, Any] = {}

    def _stream(self, device: torch.device) -> Any:
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))  # destinations allocated / used there first
        return stream

    def prepare(self, devices: Iterable[torch.device]) -> None:
        """Open the side streams now: after every destination was allocated, before any copy."""
        for device in devices:
            if device.type == "cuda":
                self._stream(device)

    def send(self, target: torch.Tensor, start: int, data: np.ndarray) -> _EventFence | None:
        source = torch.from_numpy(data)
        part = target[start : start + len(data)]
        if target.device.type != "cuda":
            part.copy_(source)
            return None
        stream = self._stream(target.device)
        with torch.cuda.stream(stream):
            part.copy_(source, non_blocking=True)
        return _EventFence(stream)

    def finish(self) -> None:
        """Make each device's current stream wait for the copies (called on success and on error)."""
        for device, stream in self._streams.items():
            torch.cuda.current_stream(device).wait_stream(stream)


def _stream_into(items: Sequence[tuple[Any, int]], targets: Mapping[Any, torch.Tensor],
                 read: Callable[[Any, int, np.ndarray], None],
                 check: Callable[[Any, str | None], None] | None) -> RingStats:  # fmt: skip
    """Read each item's bytes through the pinned ring into ``targets[item]`` (a flat ``uint8`` device tensor)."""
    copier = _HostToDevice()
    copier.prepare({t.device for t in targets.values()})  # as tensors name them: cuda:0, never a bare cuda

    def send(piece: Piece) -> _EventFence | None:
        if piece.last and check is not None:
            check(piece.item, piece.checksum)  # before the last piece lands: a bad tensor stops the load
        return copier.send(targets[piece.item], piece.start, piece.data)

    readers = max(1, min(READERS, pipeline.SLOTS - 1))
    try:
        stats = stream_pieces(items, read, send, readers=readers, hash=check is not None, allocate=pinned_bytes)
    finally:
        copier.finish()
    LAST_STATS[:] = [stats]
    return stats


def _torch_dtype(entry: TensorEntry, info: Mapping[str, Any]) -> torch.dtype | None:
    name = info.get("dtype")
    name = name if isinstance(name, str) and name in STORED_AS else name_of(entry.dtype)
    return NAME_TO_TORCH.get(name)


def load_streamed(reader: Any, entries: Sequence[TensorEntry], infos: Mapping[str, Mapping[str, Any]],
                  options: Mapping[str, Any], verify: Callable[[str, str, str, str | None], None] | None,
                  ) -> dict[str, Any]:  # fmt: skip
    """The tensors of ``entries`` whose target device streams (:func:`streams_to`), loaded onto it.

    Args:
        reader: an open :class:`tensorfile.format.reader.SafetensorsReader`.
        entries: the tensors to consider (others of the file are left alone).
        infos: each tensor's record (empty for a file without one): ``device``, ``parameter``, ``dtype``...
        options: ``map_location`` / ``device`` as :func:`tensorfile.load` takes them.
        verify: ``verify(path, name, expected, found)`` checks a checksum (None: the file has none).

    Returns:
        name -> tensor on its device (an ``nn.Parameter`` where recorded), for the tensors streamed; the
        caller loads the rest on the host path. Empty when nothing streams (a callable ``map_location``).

    Raises:
        IntegrityError: from ``verify``. FormatError: the file ended early. RuntimeError: from CUDA.
    """
    map_location = options.get("map_location")
    if map_location is None:
        map_location = options.get("device")
    if callable(map_location) and not isinstance(map_location, (str, torch.device, dict)):
        return {}
    if isinstance(map_location, (str, torch.device)) and not streams_to(torch.device(map_location)):
        return {}  # one target for every tensor, on the host path: nothing to look at per tensor
    targets: dict[str, torch.device] = {}
    seen: dict[str, tuple[torch.device, bool]] = {}
    for entry in entries:
        saved = infos.get(entry.name, {}).get("device", "cpu")
        found = seen.get(saved)
        if found is None:
            device = _target_device(saved, map_location)
            found = seen[saved] = (device, streams_to(device))
        if found[1] and _torch_dtype(entry, infos.get(entry.name, {})) is not None:
            targets[entry.name] = found[0]
    if not targets:
        return {}
    chosen = [e for e in entries if e.name in targets]
    flat = {e.name: torch.empty(e.nbytes, dtype=torch.uint8, device=targets[e.name]) for e in chosen}
    check = None
    if verify is not None:
        def check(name: str, found: str | None) -> None:
            verify(reader.path, name, infos[name]["checksum"], found)

    _stream_into([(e.name, e.nbytes) for e in chosen], flat, lambda name, start, out: reader.read_range(
        reader.entries[name], start, out), check)  # fmt: skip
    out: dict[str, Any] = {}
    for entry in chosen:
        info = infos.get(entry.name, {})
        tensor = flat.pop(entry.name).view(_torch_dtype(entry, info)).reshape(logical_shape(entry, info))
        out[entry.name] = ADAPTER._finish(tensor, info, {"map_location": targets[entry.name]})
    return out


def fill_streamed(reader: Any, fills: Sequence[tuple[TensorEntry, torch.Tensor]],
                  check: Callable[[str, str | None], None] | None) -> RingStats:  # fmt: skip
    """Copy each entry's stored bytes into its tensor (same dtype, shape and byte count, contiguous, on a
    device that streams): ``load_parameters`` into a model on a GPU, without a device copy in between.

    Raises:
        IntegrityError: from ``check(name, found)`` (the tensor is then partly written: the caller checked
            every checksum before, see :mod:`tensorfile.parameters`). FormatError: the file ended early.
    """
    targets = {entry.name: _bytes_of(tensor.detach()) for entry, tensor in fills}
    return _stream_into([(e.name, e.nbytes) for e, _ in fills], targets, lambda name, start, out: reader.read_range(
        reader.entries[name], start, out), check)  # fmt: skip


def fillable(tensor: Any, entry: TensorEntry, info: Mapping[str, Any]) -> bool:
    """True when ``entry``'s bytes can be copied as they are into ``tensor`` (:func:`fill_streamed`)."""
    return (isinstance(tensor, torch.Tensor) and streams_to(tensor.device) and tensor.is_contiguous()
            and tensor.layout == torch.strided and _torch_dtype(entry, info) == tensor.dtype
            and tuple(tensor.shape) == tuple(logical_shape(entry, info))
            and tensor.numel() * tensor.element_size() == entry.nbytes)  # fmt: skip


class DeviceSource:
    """A tensor on a streamed device, to be staged into host memory by an asynchronous checkpoint.

    Attributes:
        shape, dtype: the host buffer's (the NumPy dtype of the tensor's torch dtype).
    """

    __slots__ = ("tensor", "shape", "dtype")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.shape = tuple(tensor.shape)
        self.dtype = dtype_from_name(TORCH_TO_NAME[tensor.dtype])

    def copy_to(self, buffer: np.ndarray) -> _EventFence | None:
        """Enqueue the device-to-host copy into ``buffer`` (C-contiguous, of :attr:`shape` and :attr:`dtype`) on
        the tensor's current stream (after the kernels that computed it); wait for the fence before reading it."""
        t = self.tensor.detach().resolve_conj().resolve_neg()
        host = torch.from_numpy(buffer.reshape(-1).view(np.uint8))
        if t.device.type != "cuda":
            host.copy_(_bytes_of(t.contiguous()))
            return None
        with torch.cuda.device(t.device):
            host.copy_(_bytes_of(t.contiguous()), non_blocking=True)
            return _EventFence(torch.cuda.current_stream(t.device))

