"""Object arrays in ``.npy`` files (what ``np.save`` writes for a dict or a list): data only, never code.

The array's data is a pickle (reference: numpy/numpy ``numpy/_core/multiarray``
``ndarray.__reduce__`` / ``__setstate__``). It is read by the restricted
unpickler with a table of plain stand-ins for ``_reconstruct``, ``ndarray``,
``dtype``, ``scalar`` and ``_codecs.encode``, plus TensorFlow's
``convert_to_tensor`` (the chapter's ``np.save`` of tf tensors pickles a call to
it on an array), taken as the array itself. Any other global is refused.
"""

from __future__ import annotations

import codecs
from typing import Any

import numpy as np

from ..errors import FormatError
from .machine import restricted_loads

__all__ = ["read_object_array"]


class _DType:
    def __init__(self, spec: Any, *args: Any) -> None:
        if not isinstance(spec, str):
            raise FormatError(f"dtype {spec!r} is not a dtype string")
        self.spec, self.order = spec, "|"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = state[1]

    def resolve(self) -> np.dtype:
        if self.spec.startswith("O"):
            return np.dtype(object)
        try:
            dtype = np.dtype(self.spec)
        except TypeError:
            raise FormatError(f"unknown dtype {self.spec!r}") from None
        if dtype.hasobject or dtype.fields is not None:
            raise FormatError(f"dtype {self.spec!r} is not plain data")
        if self.order == ">":
            return dtype.newbyteorder(">")
        return dtype.newbyteorder("<") if self.order == "<" else dtype


class _Array:
    def __init__(self, *args: Any) -> None:
        self.shape: tuple[int, ...] = ()
        self.dtype: _DType | None = None
        self.data: Any = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _DType)):
            raise FormatError("an array pickle with an unexpected state")
        _, shape, dtype, _fortran, data = state
        if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
            raise FormatError(f"array shape {shape!r}")
        self.shape, self.dtype, self.data = shape, dtype, data

    def value(self) -> Any:
        if self.dtype is None:
            raise FormatError("an array pickle without a state")
        dtype = self.dtype.resolve()
        count = int(np.prod(self.shape, dtype=object)) if self.shape else 1
        if dtype == np.dtype(object):
            if not isinstance(self.data, list) or len(self.data) != count:
                raise FormatError("an object array whose items do not match its shape")
            items = [_plain(v) for v in self.data]
            if self.shape == ():
                return items[0]
            return items if len(self.shape) == 1 else np.array(items, dtype=object).reshape(self.shape).tolist()
        if not isinstance(self.data, (bytes, bytearray)) or len(self.data) != count * dtype.itemsize:
            raise FormatError("array data does not match its shape and dtype")
        return np.frombuffer(bytes(self.data), dtype, count).reshape(self.shape).astype(dtype.newbyteorder("="))


def _plain(value: Any, depth: int = 0) -> Any:
    if depth > 100:
        raise FormatError("nested too deeply")
    if isinstance(value, _Array):
        return value.value()
    if isinstance(value, dict):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, depth + 1) for v in value)
    if isinstance(value, (_DType,)):
        raise FormatError("a bare dtype where data was expected")
    return value


def _table() -> dict[tuple[str, str], Any]:
    def reconstruct(cls: Any, shape: Any = None, order: Any = None) -> _Array:
        if cls is not ndarray_marker:
            raise FormatError("_reconstruct of something other than an ndarray")
        return _Array()

    def scalar(dtype: Any, data: Any = b"") -> Any:
        if not isinstance(dtype, _DType) or not isinstance(data, (bytes, bytearray)):
            raise FormatError("a NumPy scalar pickle with an unexpected state")
        resolved = dtype.resolve()
        if len(data) != resolved.itemsize:
            raise FormatError("a NumPy scalar of the wrong size")
        return np.frombuffer(bytes(data), resolved, 1)[0]

    def encode(text: str, encoding: str = "latin1") -> bytes:
        return codecs.encode(text, "latin1")

    def convert_to_tensor(value: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(value, _Array):
            raise FormatError("convert_to_tensor of something other than an array")
        return value

    ndarray_marker = object()
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): ndarray_marker, ("numpy", "dtype"): _DType,
                                         ("_codecs", "encode"): encode}  # fmt: skip
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = reconstruct
        table[(module, "scalar")] = scalar
    for module in ("tensorflow.python.framework.ops", "tensorflow.python.framework.tensor_conversion"):
        table[(module, "convert_to_tensor")] = convert_to_tensor
        table[(module, "convert_to_tensor_v2")] = convert_to_tensor
    return table


def read_object_array(data: bytes, what: str) -> Any:
    """The value an object ``.npy`` holds: a dict or list of arrays and plain values.

    Raises:
        UnsafeFileError: the pickle names anything but the data-only globals above.
        FormatError: malformed.
    """
    value = restricted_loads(data, _table(), what=what)
    try:
        return _plain(value)
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
