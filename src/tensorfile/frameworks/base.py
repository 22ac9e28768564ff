"""The adapter interface every framework module implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

__all__ = ["Adapter", "StorageView", "fill_storage"]


def fill_storage(
    nbytes: int, members: Sequence[tuple[np.ndarray, int, Sequence[int], Mapping[str, Any]]]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rebuild a shared storage: a zeroed byte buffer with each member's data at its place.

    Returns the buffer (``uint8``, ``nbytes`` long) and a NumPy view per member.
    Views may overlap one another or themselves (stride 0); NumPy assignment
    handles both. Offsets and strides must already be checked to lie inside.

    Raises:
        ValueError: overlapping members disagree on the bytes they share (the
            file contradicts itself); no view would then hold its stored value.
    """
    buffer = np.zeros(nbytes, np.uint8)
    views = []
    for data, offset, strides, _ in members:
        item = data.dtype.itemsize
        view = np.ndarray(data.shape, data.dtype, buffer=buffer, offset=offset, strides=[s * item for s in strides])
        view[...] = data
        views.append(view)
    for view, (data, *_rest) in zip(views, members):
        if np.ascontiguousarray(view).tobytes() != np.ascontiguousarray(data).tobytes():
            raise ValueError("tensors of one shared storage disagree on the bytes they share")
    return buffer, views


@dataclass(frozen=True)
class StorageView:
    """Where a tensor lies in the memory it shares with others.

    Attributes:
        key: identifies the underlying storage (equal keys = same memory).
        nbytes: size of that storage in bytes.
        offset: byte offset of the tensor's first element in the storage.
        strides: strides in elements (may be negative for NumPy views).
    """

    key: Hashable
    nbytes: int
    offset: int
    strides: tuple[int, ...]


class Adapter:
    """Converts one framework's tensors to and from host NumPy arrays."""

    name: str = ""

    def is_tensor(self, value: Any) -> bool:
        """True when ``value`` is a tensor this adapter stores."""
        raise NotImplementedError

    def to_numpy(self, value: Any, where: str) -> np.ndarray:
        """A host NumPy array with ``value``'s dtype, shape and data (zero-copy when possible).

        Raises:
            UnsupportedTypeError: the tensor cannot be stored (names ``where``).
        """
        raise NotImplementedError

    def record(self, value: Any) -> dict[str, Any]:
        """Extra facts to keep about ``value`` (e.g. ``parameter``, ``device``)."""
        return {}

    def storage(self, value: Any) -> StorageView | None:
        """Where ``value`` lies in shared memory, or None if it owns no shareable storage."""
        return None

    def device_source(self, value: Any, where: str) -> Any | None:
        """For a tensor on an accelerator that this adapter copies to the host itself (asynchronously, into
        pinned memory: :class:`tensorfile.frameworks.torch_device.DeviceSource`), that copier; else None, and
        :meth:`to_numpy` gives the host copy.

        Raises:
            UnsupportedTypeError: as :meth:`to_numpy`.
        """
        return None

    def from_numpy(self, array: np.ndarray, record: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        """A framework tensor holding ``array`` (may share its memory)."""
        raise NotImplementedError

    def views(
        self,
        nbytes: int,
        members: Sequence[tuple[np.ndarray, int, Sequence[int], Mapping[str, Any]]],
        options: Mapping[str, Any],
    ) -> list[Any] | None:
        """Rebuild tensors that share one storage of ``nbytes`` bytes.

        ``members`` holds ``(data, byte_offset, strides_in_elements, record)`` per
        tensor. Returns the tensors in order, or None when this framework cannot
        express the views (each tensor is then loaded on its own).
        """
        return None
