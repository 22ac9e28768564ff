"""The one lazy-mapping protocol of :func:`tensorfile.open`: :class:`LazyFile`, :class:`TensorInfo`, :class:`TensorSlice`.

Every file :func:`tensorfile.open` returns, a tensorfile / safetensors file
(:class:`tensorfile.TensorFile`) or another tool's (:class:`tensorfile.formats._opened.ForeignFile`),
is a ``LazyFile``: a read-only mapping of tensor names to tensors with ``info``,
``slice``, ``metadata``, ``load`` and ``close``. A subclass gives ``keys``,
``info``, ``_mapped`` (the NumPy array, mapped where it can be), ``_convert``
(to the framework asked for), ``metadata``, ``load`` and ``close``, and where it
can, ``_rows`` (a run of rows read on their own, for slices).
"""

from __future__ import annotations

import operator
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
    """Part of one tensor: ``f.slice(name)[index]``, a copy of what NumPy's ``array[index]`` selects.

    Where the file allows (tensorfile, safetensors, sharded, GGUF), an index whose first
    part is an int or a slice of step 1 (``[10:20]``, ``[3]``, ``[2:4, ::2]``) reads only
    those rows' bytes with ``pread``, whatever the tensor's size and the address space
    left; any other index selects from the tensor's memory map.

    Attributes:
        shape: the whole tensor's dims.
        dtype: its NumPy dtype name.
    """

    def __init__(self, owner: "LazyFile", name: str) -> None:
        self._owner, self._name = owner, name
        info = owner.info(name)
        self.shape, self.dtype = info.shape, info.dtype

    def __getitem__(self, index: Any) -> Any:
        """The selected part, in the file's framework (or the one asked for).

        Raises:
            IndexError: an index out of range. LimitError: more memory than the budget allows.
        """
        run = leading_rows(index, self.shape)
        if run is not None:
            rows = self._owner._rows(self._name, run[0], run[1])
            if rows is not None:
                part = rows[run[2]]
                return self._owner._convert(self._name, np.array(part) if len(run[2]) > 1 else np.asarray(part))
        view = self._owner._mapped(self._name)
        return self._owner._convert(self._name, np.array(view[index]))


def leading_rows(index: Any, shape: tuple[int, ...]) -> tuple[int, int, tuple[Any, ...]] | None:
    """``(start, stop, rest)`` when ``index`` selects rows ``start:stop`` of the leading dimension
    (an int, or a slice of step 1, first), such that ``array[index]`` is ``array[start:stop][rest]``;
    None for any other index.

    Raises:
        IndexError: an int out of range for the leading dimension (as NumPy words it).
    """
    key = index if isinstance(index, tuple) else (index,)
    if not shape or not key:
        return None
    first, rest, count = key[0], key[1:], shape[0]
    if isinstance(first, slice) and (first.step is None or first.step == 1):
        start, stop, _ = first.indices(count)
        return start, max(start, stop), (slice(None), *rest)
    if isinstance(first, (bool, np.bool_)) or not isinstance(first, (int, np.integer)):
        return None
    row = operator.index(first)
    if not -count <= row < count:
        raise IndexError(f"index {row} is out of bounds for axis 0 with size {count}")
    row %= count
    return row, row + 1, (0, *rest)


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

    def _rows(self, name: str, start: int, stop: int) -> np.ndarray | None:
        """Rows ``start:stop`` of the leading dimension of ``name``, read on their own into a fresh
        NumPy array; None where the format has no cheaper way than :meth:`_mapped`."""
        return None

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
