"""Host staging buffers for asynchronous checkpoints: one reusable copy of the state.

An asynchronous save copies every tensor of the state into host memory, so that
training can change the tensors while a background thread writes the copy. The copy
is the training step's stall, so it must be a plain memory copy:

* buffers are allocated on the first snapshot, one per tensor place (its path in the
  state, shape and dtype), and reused by every later snapshot of the same layout;
  a tensor whose shape or dtype changed gets a new buffer, and buffers of places no
  longer in the state are freed;
* they come from :func:`tensorfile.format.memory.empty_array` (private memory, fast to
  fault in), and large copies run on two threads (NumPy releases the GIL while it
  copies): on the development machine, 1.25 GiB copied in 0.08 s into buffers already
  faulted in, 0.32 s into fresh ones on two threads, 0.53 s on one;
* :meth:`Staging.prefault` fills a second staging's buffers ahead of use (the
  manager runs it in the background after the first save).

Memory: one staging holds exactly the state's tensor bytes (plus page rounding).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import numpy as np

from ..errors import UnsupportedTypeError
from ..format.dtypes import name_of
from ..format.memory import empty_array
from ..format.reader import READERS  # one thread per core, at most 4: the same budget as reads
from ..frameworks import Inner, adapter_for, pytree_children

__all__ = ["Staging"]

#: Copies of at least this many bytes go to the copy threads.
PARALLEL_COPY_MIN = 1 << 20
#: :meth:`Staging.stage` starts copy threads only for at least this many bytes (starting them costs milliseconds).
PARALLEL_STAGE_MIN = 64 << 20


class _Tensor:
    """One tensor of a snapshot: where it is copied from and to, and (after the copies) its copy."""

    __slots__ = ("adapter", "source", "buffer", "record", "copy")

    def __init__(self, adapter: Any, source: np.ndarray, buffer: np.ndarray, record: dict[str, Any]) -> None:
        self.adapter, self.source, self.buffer, self.record, self.copy = adapter, source, buffer, record, None


def _build(shape: Any) -> Any:
    if isinstance(shape, _Tensor):
        return shape.copy
    if type(shape) is tuple and len(shape) == 2 and shape[0] in (dict, OrderedDict, list, tuple):
        kind, items = shape
        if kind in (dict, OrderedDict):
            return kind((k, _build(v)) for k, v in items)
        return kind(_build(v) for v in items)
    return shape


# Device tensors (CUDA): copied device-to-host straight into pinned buffers (tensorfile.frameworks.torch_device).
def _source(adapter: Any, value: Any, where: str) -> tuple[Any, Any]:
    """What a tensor is staged from (a host array, or the adapter's device copier) and how its buffer is allocated."""
    device = adapter.device_source(value, where)
    if device is None:
        return adapter.to_numpy(value, where), empty_array
    from ..frameworks.torch_device import pinned_array

    return device, pinned_array


def _device_copies(tensors: list["_Tensor"]) -> list[Any]:
    """Start the device-to-host copy of each device tensor into its buffer; their fences, to wait for."""
    fences = [t.source.copy_to(t.buffer) for t in tensors if not isinstance(t.source, np.ndarray)]
    return [f for f in fences if f is not None]


def _where(path: tuple[Any, ...]) -> str:
    return "state" + "".join(f"[{p!r}]" for p in path)


class Staging:
    """Reusable host buffers holding one snapshot of a state."""

    def __init__(self) -> None:
        self._active: list[Any] = []  # containers being planned: one met again contains itself
        self._buffers: dict[tuple[Any, ...], np.ndarray] = {}
        self._lock = threading.Lock()  # a snapshot and a background prefault may meet

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        return sum(b.nbytes for b in self._buffers.values())

    def snapshot(self, tree: Any) -> Any:
        """A deep copy of ``tree`` whose tensors live in this staging's buffers, in their own framework, on the host.

        Raises:
            UnsupportedTypeError: a value is neither a container, a plain value nor a tensor (names its place).
        """
        with self._lock:
            return self._snapshot(tree)

    def _snapshot(self, tree: Any) -> Any:
        # Two passes: every copy first, then each buffer handed back to its framework, because some
        # adapters copy in from_numpy (NumPy scalars, TensorFlow) and must see the copied bytes.
        tensors: list[_Tensor] = []
        by_id: dict[int, _Tensor] = {}
        used: set[tuple[Any, ...]] = set()
        try:
            shape = self._plan(tree, (), tensors, by_id, used)
        except RecursionError:  # as a synchronous save says it (tensorfile.tree.flatten)
            raise UnsupportedTypeError("obj: containers nested too deeply to store") from None
        fences = _device_copies(tensors)  # started first: they run while the host copies below do
        host = [t for t in tensors if isinstance(t.source, np.ndarray)]
        small = [t for t in host if t.buffer.nbytes < PARALLEL_COPY_MIN]
        large = [t for t in host if t.buffer.nbytes >= PARALLEL_COPY_MIN]
        for t in small:
            np.copyto(t.buffer, t.source)
        if len(large) > 1 and READERS > 1:
            with ThreadPoolExecutor(READERS, thread_name_prefix="tensorfile-stage") as pool:
                list(pool.map(lambda t: np.copyto(t.buffer, t.source), sorted(large, key=lambda t: -t.buffer.nbytes)))
        else:
            for t in large:
                np.copyto(t.buffer, t.source)
        for fence in fences:  # the device copies are done before anyone reads the buffers
            fence.wait()
        for key in set(self._buffers) - used:  # places gone from the state
            del self._buffers[key]
        for t in tensors:
            t.copy = t.adapter.from_numpy(t.buffer, t.record, {"map_location": "cpu"})  # same framework, on the host
            t.source = None
        return _build(shape)

    def _plan(self, value: Any, path: tuple[Any, ...], tensors: list["_Tensor"], by_id: dict[int, "_Tensor"],
              used: set[tuple[Any, ...]]) -> Any:  # fmt: skip
        """The tree with each tensor replaced by a :class:`_Tensor` (its buffer found or made); containers as lists."""
        kind = type(value)
        if kind in (dict, OrderedDict, list, tuple):
            if any(node is value for node in self._active):
                raise UnsupportedTypeError(f"{_where(path)}: the container contains itself")
            self._active.append(value)
            try:
                if kind in (dict, OrderedDict):
                    return (kind, [(k, self._plan(v, path + (k,), tensors, by_id, used)) for k, v in value.items()])
                return (kind, [self._plan(v, path + (i,), tensors, by_id, used) for i, v in enumerate(value)])
            finally:
                self._active.pop()
        adapter = adapter_for(value)
        if adapter is None:
            if value is None or kind in (bool, int, float, str):
                return value
            inner = pytree_children(value)  # FrozenDict, TrainState, optax states: as tensorfile.tree stores them
            if inner is not None:
                if any(node is value for node in self._active):
                    raise UnsupportedTypeError(f"{_where(path)}: the container contains itself")
                self._active.append(value)
                try:
                    return self._plan(inner.value if isinstance(inner, Inner) else inner, path, tensors, by_id, used)
                finally:
                    self._active.pop()
            raise UnsupportedTypeError(f"{_where(path)}: {kind.__module__}.{kind.__qualname__} is not supported")
        if id(value) in by_id:  # the same tensor twice (tied weights): one copy, seen twice, as in a sync save
            return by_id[id(value)]
        array, allocate = _source(adapter, value, _where(path))
        dtype = array.dtype.newbyteorder("=")
        key = (path, array.shape, name_of(dtype), dtype.str, allocate)  # float8 kinds share one dtype.str ('<V1')
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = allocate(array.shape, dtype)
        used.add(key)
        record = {k: v for k, v in adapter.record(value).items() if k != "device"}
        tensor = by_id[id(value)] = _Tensor(adapter, array, buffer, record)
        tensors.append(tensor)
        return tensor

    def stage(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copies of ``arrays`` (name -> host array) in this staging's buffers, one reused per name, shape and
        dtype (incremental checkpoints stage only the tensors that changed); buffers of names not given are freed.
        Large copies run on the copy threads, as :meth:`snapshot`'s do."""
        with self._lock:
            pairs = []
            used = set()
            for name, array in arrays.items():
                dtype = array.dtype.newbyteorder("=")
                key = ("incremental", name, array.shape, name_of(dtype), dtype.str)
                buffer = self._buffers.get(key)
                if buffer is None:
                    buffer = self._buffers[key] = empty_array(array.shape, dtype)
                used.add(key)
                pairs.append((buffer, array))
            large = sorted((p for p in pairs if p[0].nbytes >= PARALLEL_COPY_MIN), key=lambda p: -p[0].nbytes)
            threads = len(large) > 1 and READERS > 1 and sum(p[0].nbytes for p in large) >= PARALLEL_STAGE_MIN
            for buffer, array in pairs:
                if buffer.nbytes < PARALLEL_COPY_MIN or not threads:
                    np.copyto(buffer, array)
            if threads:
                with ThreadPoolExecutor(READERS, thread_name_prefix="tensorfile-stage") as pool:
                    list(pool.map(lambda p: np.copyto(*p), large))
            for key in set(self._buffers) - used:
                del self._buffers[key]
            return {name: buffer for name, (buffer, _) in zip(arrays, pairs)}

    def prefault(self, like: "Staging") -> None:
        """Allocate and fault in buffers of ``like``'s layout, so that a first snapshot here copies into mapped pages."""
        with like._lock:
            layout = list(like._buffers.items())
        for key, buffer in layout:
            with self._lock:
                if key in self._buffers:
                    continue
                mine = self._buffers[key] = key[-1](buffer.shape, buffer.dtype)  # pinned for device tensors
                if mine.nbytes:
                    mine.reshape(-1).view(np.uint8)[::4096] = 0  # one write per page faults it in

    def clear(self) -> None:
        """Free every buffer (snapshots already handed out keep theirs alive)."""
        with self._lock:
            self._buffers.clear()
