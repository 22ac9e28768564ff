"""Keras weight files through ``h5py``: Keras 3 ``.weights.h5`` and ``.keras``, Keras 2 ``.h5``.

Reference: keras-team/keras ``keras/src/saving/saving_lib.py``. Every dataset
becomes one entry of a flat dict keyed by its full HDF5 path exactly as in the
file (for a ``.keras`` archive, the paths inside its ``model.weights.h5``);
datasets Keras marked ``dtype="bfloat16"`` come back as bfloat16. Sizes are
bounded before anything is read.
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import Any

import numpy as np

from ..errors import FormatError
from ..format.dtypes import dtype_from_name
from .npy import check_expansion, zip_errors

__all__ = ["HDF5_MAGIC", "read_h5", "read_keras_archive", "MAX_DATASETS_BYTES"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: The most bytes all datasets together may hold, beyond 16x the file's size.
MAX_DATASETS_BYTES = 1 << 30


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise ImportError(f"reading HDF5 (Keras) files needs h5py: pip install h5py ({exc})") from exc
    return h5py


def _datasets(handle: Any, what: str, file_size: int) -> dict[str, np.ndarray]:
    h5py = _h5py()
    found: list[tuple[str, Any]] = []
    handle.visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
    total = sum(int(np.prod(d.shape, dtype=object) or 0) * d.dtype.itemsize for _, d in found if d.shape is not None)
    if total > 16 * file_size + MAX_DATASETS_BYTES:
        raise FormatError(f"{what}: datasets claim {total} bytes in a {file_size}-byte file")
    out: dict[str, np.ndarray] = {}
    for name, dataset in found:
        if dataset.dtype.kind not in "biufc":
            continue  # strings and references are metadata, not weights
        array = np.asarray(dataset[()])
        if dataset.attrs.get("dtype") in ("bfloat16", b"bfloat16"):
            array = array.astype(np.uint16).view(dtype_from_name("bfloat16")) if array.dtype.itemsize == 2 else array.astype(dtype_from_name("bfloat16"))
        out[name] = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("=")))
    return out


def read_h5(path: str) -> dict[str, np.ndarray]:
    """Every numeric dataset of an HDF5 file, keyed by its full path.

    Raises:
        FormatError: the file is not valid HDF5, or claims more data than it can hold.
    """
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as handle:
            return _datasets(handle, path, os.path.getsize(path))
    except OSError as exc:
        raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from None


def read_keras_archive(path: str, zf: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """The weights inside a ``.keras`` archive (its ``model.weights.h5``)."""
    h5py = _h5py()
    info = zf.getinfo("model.weights.h5")
    if info.file_size > 16 * os.path.getsize(path) + MAX_DATASETS_BYTES:
        raise FormatError(f"{path}: model.weights.h5 claims {info.file_size} bytes")
    check_expansion(path, zf)
    with zip_errors(f"{path}: model.weights.h5"):
        data = zf.read(info)
    try:
        with h5py.File(io.BytesIO(data), "r") as handle:
            return _datasets(handle, f"{path}: model.weights.h5", len(data))
    except OSError as exc:
        raise FormatError(f"{path}: model.weights.h5 is not readable HDF5 ({exc})") from None
