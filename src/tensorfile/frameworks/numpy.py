"""NumPy adapter: ``np.ndarray`` and NumPy scalars (``np.generic``)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import UnsupportedTypeError
from .base import Adapter, StorageView, fill_storage

__all__ = ["ADAPTER"]


def _root(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


class NumpyAdapter(Adapter):
    name = "numpy"

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, (np.ndarray, np.generic))

    def to_numpy(self, value: Any, where: str) -> np.ndarray:
        if isinstance(value, np.ma.MaskedArray) or (
            isinstance(value, np.ndarray) and type(value) not in (np.ndarray, np.memmap)
        ):
            raise UnsupportedTypeError(f"{where}: {type(value).__module__}.{type(value).__qualname__} is not supported")
        return np.asarray(value)

    def record(self, value: Any) -> dict[str, Any]:
        return {"scalar": True} if isinstance(value, np.generic) else {}

    def storage(self, value: Any) -> StorageView | None:
        if not isinstance(value, np.ndarray) or value.size == 0:
            return None
        if value.dtype.byteorder == ">" or (value.dtype.byteorder == "=" and not np.little_endian):
            return None  # stored byte-swapped: the stored bytes are not the storage's
        root = _root(value)
        if not (root.flags.c_contiguous or root.flags.f_contiguous):
            return None
        item = value.dtype.itemsize
        if any(s % item for s in value.strides):
            return None
        start = root.__array_interface__["data"][0]
        offset = value.__array_interface__["data"][0] - start
        if offset % item:
            return None  # an unaligned view (e.g. bytes reinterpreted at an odd offset): stored on its own
        return StorageView(("numpy", start, root.nbytes), root.nbytes, offset, tuple(s // item for s in value.strides))

    def from_numpy(self, array: np.ndarray, record: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        return array[()] if record.get("scalar") else array

    def views(
        self,
        nbytes: int,
        members: Sequence[tuple[np.ndarray, int, Sequence[int], Mapping[str, Any]]],
        options: Mapping[str, Any],
    ) -> list[Any] | None:
        return fill_storage(nbytes, members)[1]


ADAPTER = NumpyAdapter()
