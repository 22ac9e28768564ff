"""The one lazy-mapping protocol of :func:`tensorfile.open`: :class:`LazyFile`, :class:`TensorInfo`, :class:`TensorSlice`.

Every file :func:`tensorfile.open` returns, a tensorfile / safetensors file
(:class:`tensorfile.TensorFile`) or another tool's (:class:`tensorfile.formats._opened.ForeignFile`),
is a ``LazyFile``: a read-only mapping of tensor names to tensors with ``info``,
``slice``, ``metadata``, ``load`` and ``close``. A subclass gives ``keys``,
``info``, ``_mapped`` (the NumPy array, mapped where it can be), ``_convert``
(to the framework asked for), ``metadata``, ``load`` and ``close``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

__all__ = ["LazyFile", "TensorInfo", "TensorSlice"]


@dataclass(frozen=True)
class TensorInfo:
    """What the header says of a tensor, read without touching its data.

    Attributes:
        name: the tensor's name in the file.
        dtype: NumPy dtype name (``"float32"``, ``"bfloat16"``, ``"complex128"``...).
        shape: dims.
        nbytes: size of its data in bytes.
        code: safetensors dtype code on disk (``"F32"``; empty where it has none).
        offset: byte offset of its data from the start of the file (None where not mapped).
        checksum: XXH3-64 hex digest, or None for files without tensorfile's record.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    code: str
    offset: int | None
    checksum: str | None


class TensorSlice:
    """Part of one tensor: ``f.slice(name)[rows]`` reads only those rows' bytes (where the file is mapped)."""

    def __init__(self, owner: "LazyFile", name: str) -> None:
        self._owner, self._name = owner, name
        info = owner.info(name)
        self.shape, self.dtype = info.shape, info.dtype

    def __getitem__(self, index: Any) -> Any:
        view = self._owner._mapped(self._name)
        return self._owner._convert(self._name, np.array(view[index]))


class LazyFile:
    """A file opened by :func:`tensorfile.open`: tensors by name, read when asked for (a context manager).

    Attributes:
        path: the file opened.
        format: its format's name in :mod:`tensorfile.formats` (``"safetensors"``, ``"torch"``, ``"sharded"``...).
    """

    path: str
    format: str

    # what a subclass gives
    def keys(self) -> list[str]:
        """Tensor names, in the file's order."""
        raise NotImplementedError

    def info(self, name: str) -> TensorInfo:
        """dtype, shape and size of ``name`` without reading its data.

        Raises:
            KeyError: no such tensor.
        """
        raise NotImplementedError

    def _mapped(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def _convert(self, name: str, array: np.ndarray) -> Any:
        raise NotImplementedError

    @property
    def metadata(self) -> dict[str, str]:
        """The file's metadata as text."""
        raise NotImplementedError

    @property
    def has_record(self) -> bool:
        """True when every tensor carries tensorfile's checksum (checked on load)."""
        return False

    def load(self) -> Any:
        """The whole file, as :func:`tensorfile.load` returns it."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the file; tensors already returned stay valid."""

    # what every LazyFile has
    def __getitem__(self, name: str) -> Any:
        """The tensor ``name`` (memory-mapped, copy-on-write, where the format allows).

        Raises:
            KeyError: no such tensor.
        """
        self.info(name)
        return self._convert(name, self._mapped(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, name: object) -> bool:
        return name in self.keys()

    def slice(self, name: str) -> TensorSlice:
        """A handle whose indexing reads only the requested part, e.g. ``f.slice("w")[10:20]``.

        Raises:
            KeyError: no such tensor.
        """
        self.info(name)
        return TensorSlice(self, name)

    def __enter__(self) -> "LazyFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
