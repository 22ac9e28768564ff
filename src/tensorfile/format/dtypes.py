"""dtype codes on disk (safetensors) and dtypes in the API (NumPy names).

On disk every tensor carries a safetensors dtype code (huggingface/safetensors,
``safetensors/src/tensor.rs``, enum ``Dtype``). In the API a dtype is a NumPy
dtype; bfloat16 and the float8 formats come from ``ml_dtypes``.

``complex128`` has no safetensors code: it is stored as ``F64`` with a trailing
axis of length 2 (real, imaginary) and recorded as complex128 in tensorfile's
metadata (see ``docs/FORMAT.md``).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..errors import UnsupportedTypeError
from .codes import CODES, STORED_AS

__all__ = [
    "CODE_TO_DTYPE",
    "DTYPE_TO_CODE",
    "STORED_AS",
    "code_of",
    "name_of",
    "dtype_of_code",
    "dtype_from_name",
    "byte_view",
]


def _numpy_dtype(name: str) -> np.dtype:
    """The little-endian NumPy dtype called ``name`` in :data:`.codes.CODES` (bfloat16, float8: ``ml_dtypes``)."""
    if name.startswith(("bfloat", "float8")):
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name).newbyteorder("<")


#: safetensors code -> NumPy dtype (little-endian where it matters), from the one table :data:`.codes.CODES`.
CODE_TO_DTYPE: dict[str, np.dtype] = {code: _numpy_dtype(name) for code, (name, _) in CODES.items()}

#: NumPy dtype name -> safetensors code, for dtypes stored as themselves.
DTYPE_TO_CODE: dict[str, str] = {dt.name: code for code, dt in CODE_TO_DTYPE.items()}

_BY_NAME: dict[str, np.dtype] = {dt.name: dt for dt in CODE_TO_DTYPE.values()}
_BY_NAME["complex128"] = np.dtype("<c16")

# Caches keyed by dtype (a few dozen at most: the supported dtypes in each byte order).
_NAMES: dict[np.dtype, str] = {}
_CODES: dict[np.dtype, str] = {}


def byte_view(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array as a flat ``uint8`` memoryview (no copy)."""
    return memoryview(array.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def dtype_of_code(code: str) -> np.dtype:
    """Return the NumPy dtype of a safetensors dtype ``code``.

    Raises:
        KeyError: ``code`` is not a code tensorfile reads.
    """
    return CODE_TO_DTYPE[code]


def dtype_from_name(name: str) -> np.dtype:
    """Return the little-endian NumPy dtype called ``name`` (e.g. ``"bfloat16"``).

    Raises:
        UnsupportedTypeError: ``name`` is not a dtype tensorfile stores.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnsupportedTypeError(
            f"dtype {name!r} is not supported; expected one of {sorted(_BY_NAME)}"
        ) from None


def name_of(dtype: np.dtype) -> str:
    """``dtype.name`` (``"float32"``, ``"bfloat16"``...), cached: NumPy computes it anew on each access."""
    try:
        return _NAMES[dtype]
    except KeyError:
        name = _NAMES[dtype] = dtype.name if dtype.fields is None and dtype.subdtype is None else str(dtype)
        return name


def code_of(dtype: np.dtype, where: str = "obj") -> str:
    """Return the safetensors code a tensor of ``dtype`` is stored under.

    Byte order is ignored (data is always written little-endian); complex128
    maps to ``F64`` (see :data:`STORED_AS`).

    Raises:
        UnsupportedTypeError: the dtype cannot be stored; the message names
            ``where`` (the place in the container) and the dtype found.
    """
    code = _CODES.get(dtype)
    if code is not None:
        return code
    name = name_of(dtype)
    if name in DTYPE_TO_CODE:
        code = DTYPE_TO_CODE[name]
    elif name in STORED_AS:
        code = STORED_AS[name][0]
    else:
        raise UnsupportedTypeError(f"{where}: dtype {dtype} is not supported; expected one of {sorted(_BY_NAME)}")
    _CODES[dtype] = code
    return code
