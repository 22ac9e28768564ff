"""Histogram bins that suit a tensor's dtype, and the values a histogram is drawn from.

* floats of 32 bits or more: :data:`BINS` equal bins over the finite range;
* bfloat16, float16 and float8: the dtype holds few distinct values, so equal bins would catch
  2 or 3 of them each in turn (a comb): when the values seen are at most :data:`BINS` distinct ones
  each gets its own bar, else the bin edges are rounded to values the dtype holds;
* integers and bools: one bar per value when the range is narrow, else bins of equal whole widths.

NaN, +inf and -inf are never binned: :class:`Histogram` counts them apart, and the charts show them
as bars of their own, in red.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BINS", "Histogram", "as_values", "histogram", "LOW_PRECISION"]

#: Most bars in a histogram.
BINS = 40
#: Float dtypes of at most 16 bits: few distinct values, binned on the values they hold.
LOW_PRECISION = ("bfloat16", "float16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                 "float8_e8m0fnu")  # fmt: skip


@dataclass(frozen=True)
class Histogram:
    """Counts of finite values in bins.

    Attributes:
        edges: ``len(counts) + 1`` increasing bin edges (float64); a bar per distinct value when
            ``exact`` (then ``edges[i]`` is the value and ``edges[-1]`` follows the last).
        counts: values per bin (int64), of the sample the histogram was made from.
        exact: one bin per distinct value.
    """

    edges: np.ndarray
    counts: np.ndarray
    exact: bool = False


def as_values(array: np.ndarray) -> np.ndarray:
    """``array``'s values, flattened, as NumPy computes with them: float32 and float64 as they are, float16,
    bfloat16 and float8 as float32 (which holds each of their values exactly), bool as 0/1 and integers as
    int64 (uint64 as float64), complex as its magnitude (float64)."""
    flat = array.reshape(-1)
    kind = flat.dtype.kind
    if kind == "b":
        return flat.view(np.uint8).astype(np.int64)
    if kind in "iu":
        return flat.astype(np.int64) if flat.dtype.itemsize < 8 or kind == "i" else flat.astype(np.float64)
    if kind == "c":
        return np.abs(flat).astype(np.float64)
    if flat.dtype in (np.float32, np.float64):
        return flat
    return flat.astype(np.float32)


def histogram(values: np.ndarray, dtype: str, lo: float, hi: float) -> Histogram:
    """The histogram of finite ``values`` (from :func:`as_values`) of a tensor of dtype ``dtype`` whose
    finite values lie in ``[lo, hi]``."""
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return Histogram(np.array([lo, hi], dtype=np.float64), np.zeros(1, dtype=np.int64))
    discrete = dtype in LOW_PRECISION or dtype == "bool" or np.dtype(values.dtype).kind in "iu"
    if discrete:
        distinct, counts = np.unique(values, return_counts=True)
        if distinct.size <= BINS:
            step = float(np.min(np.diff(distinct.astype(np.float64)))) if distinct.size > 1 else 1.0
            edges = np.append(distinct.astype(np.float64), float(distinct[-1]) + step)
            return Histogram(edges, counts.astype(np.int64), exact=True)
    if hi <= lo:
        return Histogram(np.array([lo, lo + 1.0]), np.array([values.size], dtype=np.int64))
    edges = np.linspace(lo / 2, hi / 2, BINS + 1) * 2  # halves: hi - lo may pass float64's max (1e308 - -1e308)
    if dtype in LOW_PRECISION:
        import ml_dtypes  # noqa: F401 - registers bfloat16 and float8 with NumPy

        edges = np.unique(edges.astype(np.dtype(dtype)).astype(np.float64))
        edges[0], edges[-1] = min(edges[0], lo), max(edges[-1], hi)
    elif np.dtype(values.dtype).kind in "iu":  # bins of equal whole widths: no bin holds one more value than the next
        width = -(-(int(hi) - int(lo) + 1) // BINS)
        edges = np.arange(int(lo), int(hi) + width + 1, width, dtype=np.float64)
    counts, edges = np.histogram(values, bins=edges)
    return Histogram(edges, counts.astype(np.int64))
