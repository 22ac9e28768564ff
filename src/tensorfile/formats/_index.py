"""Other tools' files listed from their headers: an :class:`Index` of :class:`Entry` objects, data read per tensor.

A format whose headers give each tensor's dtype and shape before its data (torch
zip, ``.npy``, ``.npz``, MXNet, HDF5, ``.keras``) has an ``index`` function
(``Format.index``): ``index(path, budget) -> Index``. It runs every check its full
reader runs on the file's structure (zip rules, the pickle's table, sizes against
the bytes present, HDF5 links, filters and external storage), charging ``budget``
for what it allocates (the central directory, the pickle's objects, small values),
and puts an :class:`Entry` where the full reader would put each array.
:func:`tensorfile.open` then names the entries as it names arrays
(:func:`tensorfile.tree.flat_arrays`), and ``f[name]`` calls ``entry.read``, which
charges the bytes it allocates to the budget it is given before it allocates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..limits import Budget

__all__ = ["Entry", "Index"]


@dataclass(eq=False)
class Entry:
    """A tensor described by its file's headers, not read yet.

    Attributes:
        dtype: the dtype ``read`` returns (native byte order).
        shape: its dims.
        read: ``read(budget, what) -> np.ndarray``: reads the tensor, charging ``budget``
            first; ``what`` names the tensor in messages (``"tensor 'w'"``).
    """

    dtype: np.dtype
    shape: tuple[int, ...]
    read: Callable[[Budget, str], np.ndarray] = field(repr=False)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data (items x item size)."""
        count = 1
        for d in self.shape:
            count *= d
        return count * self.dtype.itemsize


@dataclass(eq=False)
class Index:
    """What ``Format.index`` returns.

    Attributes:
        value: the file's value as the full reader returns it (containers, plain values,
            arrays it held in its headers), with an :class:`Entry` in place of each array
            not read yet.
        close: releases what the entries read from (the open file).
    """

    value: Any
    close: Callable[[], None] = lambda: None
