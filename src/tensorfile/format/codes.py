"""The safetensors dtype codes as plain data: each code's item size and NumPy dtype name, without NumPy.

Reference: huggingface/safetensors ``safetensors/src/tensor.rs``, enum ``Dtype``
(``Dtype::size``). The header is validated with this table alone (:mod:`.header`),
so ``tensorfile ls`` reads a header without importing NumPy; :mod:`.dtypes` builds
the NumPy dtypes from the same names (bfloat16 and float8 from ``ml_dtypes``).
"""

from __future__ import annotations

__all__ = ["CODES", "STORED_AS", "itemsize_of", "name_of_code"]

#: safetensors code -> (NumPy dtype name, item size in bytes), in the reference's order.
CODES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 1),
    "U8": ("uint8", 1),
    "I8": ("int8", 1),
    "U16": ("uint16", 2),
    "I16": ("int16", 2),
    "U32": ("uint32", 4),
    "I32": ("int32", 4),
    "U64": ("uint64", 8),
    "I64": ("int64", 8),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "F32": ("float32", 4),
    "F64": ("float64", 8),
    "C64": ("complex64", 8),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 1),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 1),
    "F8_E8M0": ("float8_e8m0fnu", 1),
}

#: dtypes with no safetensors code: name -> (code stored, trailing axis added). complex128 is stored as
#: ``F64`` with a trailing axis of 2 (real, imaginary) and recorded in tensorfile's record (``docs/FORMAT.md``).
STORED_AS: dict[str, tuple[str, int]] = {"complex128": ("F64", 2)}


def itemsize_of(code: str) -> int:
    """Bytes of one element of a tensor stored under ``code`` (``"F32"`` -> 4).

    Raises:
        KeyError: ``code`` is not a code tensorfile reads.
    """
    return CODES[code][1]


def name_of_code(code: str) -> str:
    """The NumPy dtype name of ``code`` (``"BF16"`` -> ``"bfloat16"``), as ``dtype.name`` gives it.

    Raises:
        KeyError: ``code`` is not a code tensorfile reads.
    """
    return CODES[code][0]
