"""MXNet adapter: legacy ``mx.nd.NDArray`` and ``mxnet.numpy.ndarray`` (MXNet 1.9.1).

A tensor comes back as the kind it was saved as (``mx_np`` in the record marks
the NumPy-style array); a file from another framework loads as
``mxnet.numpy.ndarray``, which also holds 0-d and zero-size arrays. dtypes MXNet
lacks (uint16/32/64, int16, complex, bfloat16, float8) raise
:class:`UnsupportedTypeError`.
"""

from __future__ import annotations

from typing import Any, Mapping

import mxnet as mx
import numpy as np

from ..errors import UnsupportedTypeError
from .base import Adapter

__all__ = ["ADAPTER"]

_SUPPORTED = {"float16", "float32", "float64", "uint8", "int8", "int32", "int64", "bool"}


class MXNetAdapter(Adapter):
    name = "mxnet"

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, mx.nd.NDArray)

    def to_numpy(self, value: Any, where: str) -> np.ndarray:
        if getattr(value, "stype", "default") != "default":
            value = value.tostype("default")
        return np.asarray(value.asnumpy())

    def record(self, value: Any) -> dict[str, Any]:
        return {"mx_np": True} if isinstance(value, mx.np.ndarray) else {}

    def from_numpy(self, array: np.ndarray, record: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        if array.dtype.name not in _SUPPORTED:
            raise UnsupportedTypeError(f"MXNet has no dtype {array.dtype.name}; load with another framework")
        ctx = options.get("device") or mx.cpu()
        legacy = not record.get("mx_np") and record.get("framework") == "mxnet" and array.ndim and array.size
        if legacy and array.dtype.name != "bool":
            return mx.nd.array(array, ctx=ctx, dtype=array.dtype)
        return mx.np.array(array, ctx=ctx, dtype=array.dtype)


ADAPTER = MXNetAdapter()
