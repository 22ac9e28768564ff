"""How much tensors changed between two files (or two steps of a checkpoint folder), one pair at a time.

The relative change of a tensor from ``a`` to ``b`` is ``||b - a|| / ||a||`` (L2 norms over every value, in
float64): 0.01 means it moved by 1% of its size. It is ``inf`` when ``a`` is all zeros and ``b`` is not,
and NaN when either holds NaN or inf. Both tensors are read in the same runs of rows
(:func:`.read.pieces`), so memory stays a few pieces whatever the files' sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..lazyfile import LazyFile
from .bins import as_values
from .read import pieces

__all__ = ["Change", "FileDiff", "relative_change", "diff_opened"]


@dataclass(frozen=True)
class Change:
    """One tensor in both files with the same shape and dtype.

    Attributes:
        name: the tensor's name.
        relative: ``||b - a|| / ||a||`` (see the module); ``max_abs``: the largest ``|b - a|``.
        sampled: only a sample of both was compared (tensors above the size limit).
    """

    name: str
    relative: float
    max_abs: float
    sampled: bool = False


@dataclass
class FileDiff:
    """What differs between files ``a`` and ``b``.

    Attributes:
        added: tensor names only in ``b``; ``removed``: only in ``a`` (sorted).
        retyped: ``(name, "float32 [2, 3]", "float16 [2, 3]")`` for tensors whose shape or dtype changed.
        changes: a :class:`Change` per tensor in both with the same shape and dtype, in name order.
    """

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: list[tuple[str, str, str]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    def most(self, count: int) -> list[Change]:
        """The ``count`` tensors that changed most (NaN first: a tensor gone bad matters most)."""
        key = lambda c: (not math.isnan(c.relative), -c.relative if not math.isnan(c.relative) else 0.0)  # noqa: E731
        return sorted(self.changes, key=key)[:count]


def _numeric(dtype: str) -> bool:
    from .stats import _numeric as numeric

    return numeric(dtype)


def relative_change(fa: LazyFile, name_a: str, fb: LazyFile, name_b: str, sample_above: int | None = None,
                    progress: Callable[[int], None] | None = None) -> Change:  # fmt: skip
    """The :class:`Change` of a tensor from file ``fa`` (named ``name_a``) to ``fb`` (``name_b``); both
    have the same shape and dtype.

    Raises:
        TensorFileError: a tensor cannot be read (a damaged file, a checksum that fails).
    """
    pa, pb = pieces(fa, name_a, sample_above), pieces(fb, name_b, sample_above)
    diff2 = base2 = 0.0
    max_abs = 0.0
    bad = False
    for x, y in zip(pa.chunks, pb.chunks):
        u, v = as_values(x).astype(np.float64, copy=False), as_values(y).astype(np.float64, copy=False)
        if not (np.isfinite(u).all() and np.isfinite(v).all()):
            bad = True
        else:
            d = v - u
            diff2 += float(np.dot(d, d))
            base2 += float(np.dot(u, u))
            if d.size:
                max_abs = max(max_abs, float(np.abs(d).max()))
        if progress is not None:
            progress(x.nbytes + y.nbytes)
    if bad:
        return Change(name_b, math.nan, math.nan, pa.sampled)
    if base2 == 0.0:
        relative = 0.0 if diff2 == 0.0 else math.inf
    else:
        relative = math.sqrt(diff2 / base2)
    return Change(name_b, relative, max_abs, pa.sampled)


def _kind(f: LazyFile, name: str) -> str:
    info = f.info(name)
    return f"{info.dtype} {list(info.shape)}"


def diff_opened(fa: LazyFile, fb: LazyFile, sample_above: int | None = None,
                progress: Callable[[int], None] | None = None) -> FileDiff:  # fmt: skip
    """Compare every tensor of the opened files ``fa`` and ``fb`` by name.

    Raises:
        TensorFileError: a tensor cannot be read.
    """
    left, right = set(fa.keys()), set(fb.keys())
    out = FileDiff(added=sorted(right - left), removed=sorted(left - right))
    for name in sorted(left & right):
        ka, kb = _kind(fa, name), _kind(fb, name)
        if ka != kb:
            out.retyped.append((name, ka, kb))
        elif _numeric(fa.info(name).dtype):
            out.changes.append(relative_change(fa, name, fb, name, sample_above, progress))
    return out
