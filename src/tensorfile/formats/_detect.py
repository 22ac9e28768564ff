"""Which reader a file needs, by content (never by suffix)."""

from __future__ import annotations

import zipfile
from typing import Any

from .gguf import MAGIC as GGUF_MAGIC
from .gguf import read_gguf
from .hdf5 import HDF5_MAGIC, read_h5, read_keras_archive
from .mxnet import MAGIC as MX_MAGIC
from .mxnet import read_mxnet
from .npy import MAGIC as NPY_MAGIC
from .npy import read_npy, read_npz
from .torch import Parameter, is_torch_legacy, is_torch_zip, read_torch

__all__ = ["read_foreign", "describe", "is_readable", "Parameter"]


def read_foreign(path: str, prefix: bytes) -> tuple[Any, str] | None:
    """Read ``path`` if it is a torch, NumPy, MXNet, Keras HDF5 or GGUF file; returns ``(value, framework it came from)``.

    Returns None for anything else (the caller tries safetensors and names the kind).
    """
    if prefix.startswith(HDF5_MAGIC):
        return read_h5(path), "numpy"
    if prefix.startswith(GGUF_MAGIC):
        return read_gguf(path)[0], "numpy"
    if prefix.startswith(MX_MAGIC):
        return read_mxnet(path), "mxnet"
    if prefix.startswith(NPY_MAGIC):
        return read_npy(path), "numpy"
    if prefix.startswith(b"PK\x03\x04"):
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, NotImplementedError, UnicodeDecodeError, ValueError, OSError, EOFError):
            return None  # the safetensors reader then says it looks like a (damaged) zip archive
        with zf:
            if is_torch_zip(zf) is not None:
                kind = "torch"
            elif zf.namelist() and all(n.endswith(".npy") for n in zf.namelist()):
                return read_npz(path, zf), "numpy"
            elif "model.weights.h5" in zf.namelist() and "config.json" in zf.namelist():
                return read_keras_archive(path, zf), "numpy"
            else:
                return None
        return read_torch(path), kind
    if is_torch_legacy(prefix):
        return read_torch(path), "torch"
    return None



def describe(path: str, prefix: bytes) -> str:
    """A short name of the file's format, by content (for ``tensorfile info``)."""
    from ..format.sniff import looks_like
    from .sharded import is_index

    if prefix.startswith(HDF5_MAGIC):
        return "HDF5 (Keras weights)"
    if prefix.startswith(GGUF_MAGIC):
        return "GGUF"
    if prefix.startswith(MX_MAGIC):
        return "MXNet NDArray file"
    if prefix.startswith(NPY_MAGIC):
        return "NumPy .npy"
    if is_index(prefix):
        return "sharded safetensors index"
    if prefix.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                if is_torch_zip(zf) is not None:
                    return "PyTorch torch.save (zip)"
                if zf.namelist() and all(n.endswith(".npy") for n in zf.namelist()):
                    return "NumPy .npz"
                if "model.weights.h5" in zf.namelist():
                    return "Keras .keras archive"
        except zipfile.BadZipFile:
            pass
        return "zip archive"
    if is_torch_legacy(prefix):
        return "PyTorch torch.save (legacy stream)"
    return looks_like(prefix) or "safetensors"


def is_readable(kind: str) -> bool:
    """True when :func:`describe`'s ``kind`` is another tool's file that tensorfile reads."""
    return kind != "safetensors" and not kind.startswith(("a ", "an ", "zip archive"))
