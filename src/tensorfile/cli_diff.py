"""``tensorfile diff``'s comparison: two opened files, tensor by tensor, each pair read, compared and dropped.

Memory stays about the two largest tensors (plus :func:`.cli_values.compare`'s
pieces), whatever the files' sizes: each file is a :class:`tensorfile.lazyfile.LazyFile`
whose ``f[name]`` reads (or maps) one tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .cli_values import changed_values, compare

__all__ = ["Diff", "diff_files"]


@dataclass
class Diff:
    """What differs between two files.

    Attributes:
        only_a, only_b: names (tensors and other values) in one file only, sorted.
        changed: ``(name, a, b)`` for values that differ, then tensors whose dtype or shape differ
            (``"float32 [2, 3]"``).
        compared: one dict per tensor compared: ``name``, ``max_abs``, ``max_rel`` (float),
            ``same`` (within the tolerances).
        values: how many values other than tensors both files hold.
    """

    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    changed: list[tuple[str, str, str]] = field(default_factory=list)
    compared: list[dict[str, Any]] = field(default_factory=list)
    values: int = 0

    @property
    def different(self) -> bool:
        return bool(self.only_a or self.only_b or self.changed or not all(c["same"] for c in self.compared))


def _kind(dtype: Any, shape: Any) -> str:
    return f"{np.dtype(dtype).name if not isinstance(dtype, str) else dtype} {list(shape)}"


def diff_files(fa: Any, fb: Any, values_a: dict[str, Any], values_b: dict[str, Any], atol: float, rtol: float,
               progress: Callable[[int], None] | None = None) -> Diff:  # fmt: skip
    """Compare opened files ``fa`` and ``fb`` (their values other than tensors given apart).

    Tensors in both are read one pair at a time, in name order; a pair whose dtype or
    shape differs (by ``info``) is not read. ``progress(nbytes)`` is called after each pair.

    Raises:
        TensorFileError: a tensor cannot be read (a damaged file, a checksum that fails).
    """
    left, right = set(fa.keys()), set(fb.keys())
    out = Diff()
    out.only_a = sorted((left | set(values_a)) - right - set(values_b))
    out.only_b = sorted((right | set(values_b)) - left - set(values_a))
    out.changed = changed_values(values_a, values_b, left, right)
    out.values = len(set(values_a) & set(values_b))
    for name in sorted(left & right):
        ia, ib = fa.info(name), fb.info(name)
        if tuple(ia.shape) != tuple(ib.shape) or ia.dtype != ib.dtype:
            out.changed.append((name, _kind(ia.dtype, ia.shape), _kind(ib.dtype, ib.shape)))
        else:
            x, y = np.asarray(fa[name]), np.asarray(fb[name])
            if x.shape != y.shape or x.dtype.newbyteorder("=") != y.dtype.newbyteorder("="):
                out.changed.append((name, _kind(x.dtype, x.shape), _kind(y.dtype, y.shape)))
            else:
                max_abs, max_rel, same = compare(x, y, atol, rtol)
                out.compared.append({"name": name, "max_abs": max_abs, "max_rel": max_rel, "same": same})
            del x, y
        if progress is not None:
            progress(ia.nbytes + ib.nbytes)
    return out
