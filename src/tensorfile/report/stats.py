"""Per-tensor statistics, computed in one streaming pass (:func:`tensor_stats`).

Mean and standard deviation are over the finite values, summed in float64 and combined piece by piece
(Chan et al.'s pairwise update; a float32 piece's deviations from its mean are squared in float32), so a
tensor is never held whole; NaN, +inf, -inf and zeros are counted exactly over every value read. A
histogram is drawn from an even sample of at most :data:`SAMPLE_VALUES` values taken along the way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ..lazyfile import LazyFile
from .bins import LOW_PRECISION, Histogram, as_values, histogram
from .read import pieces

__all__ = ["SAMPLE_VALUES", "TensorStats", "tensor_stats", "stats_of_array", "file_stats"]

#: Most values a histogram is drawn from.
SAMPLE_VALUES = 1 << 18
#: float32 values beyond this are summed as float64 (the square of a deviation would pass float32's max).
_FLOAT32_SQUARE = 1e18
#: float64 values are scaled to at most 2**this (their squared deviations, summed, stay finite).
_FLOAT64_EXPONENT = 400


@dataclass
class TensorStats:
    """What a report shows of one tensor.

    Attributes:
        name, dtype, shape, nbytes: as :meth:`tensorfile.LazyFile.info` gives them (nbytes in bytes).
        total: number of values in the tensor; ``count``: how many were read (fewer when ``sampled``).
        nan, posinf, neginf, zeros: counts over the values read.
        finite: how many values read are finite (numbers, for integer and bool tensors all of them).
        mean, std, min, max: over the finite values read (None when there are none). Complex
            tensors: of the magnitude.
        hist: the histogram of (a sample of) the finite values.
        verified: True when the tensor's checksum was checked, None where the file records none.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    total: int = 0
    count: int = 0
    sampled: bool = False
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    zeros: int = 0
    finite: int = 0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    hist: Histogram | None = None
    verified: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bad(self) -> int:
        """NaN and infinite values read."""
        return self.nan + self.posinf + self.neginf

    @property
    def zero_fraction(self) -> float | None:
        return self.zeros / self.count if self.count else None


class _Accumulator:
    """Running counts, extremes, mean and M2 over pieces, plus an even sample of the values."""

    def __init__(self, total: int) -> None:
        self.stride = max(1, math.ceil(total / SAMPLE_VALUES))
        self.offset = 0  # the next sampled value's place in the values seen so far
        self.n = self.nan = self.posinf = self.neginf = self.zeros = self.finite = 0
        self.mean = self.m2 = 0.0
        self.shift = 0  # float64 values are summed as value * 2**-shift (see _in_range)
        self.lo: float | None = None
        self.hi: float | None = None
        self.sample: list[np.ndarray] = []

    def add(self, piece: np.ndarray) -> None:
        values = as_values(piece)
        size = values.size
        if size == 0:
            return
        self.n += size
        first = (-self.offset) % self.stride
        self.sample.append(values[first :: self.stride].copy())
        self.offset += size
        if values.dtype.kind == "f":
            finite = np.isfinite(values)
            if not finite.all():
                self.nan += int(np.count_nonzero(np.isnan(values)))
                self.posinf += int(np.count_nonzero(values == np.inf))
                self.neginf += int(np.count_nonzero(values == -np.inf))
                values = values[finite]
        self.zeros += int(np.count_nonzero(values == 0))
        count = values.size
        if count == 0:
            return
        lo, hi = values.min(), values.max()
        self.lo = lo.item() if self.lo is None else min(self.lo, lo.item())
        self.hi = hi.item() if self.hi is None else max(self.hi, hi.item())
        values = self._in_range(values, max(abs(float(lo)), abs(float(hi))))
        mean = float(values.sum(dtype=np.float64)) / count
        if values.dtype.kind == "f":  # deviations in the values' own precision, their squares summed in float64
            deviation = values - values.dtype.type(mean)
            m2 = float(np.square(deviation, out=deviation).sum(dtype=np.float64))
        else:
            m2 = float(np.square(values.astype(np.float64) - mean).sum())
        total = self.finite + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.finite * count / total
        self.finite = total

    def _in_range(self, values: np.ndarray, largest: float) -> np.ndarray:
        """``values`` in a form whose sums and squared deviations cannot overflow: float32 values beyond
        :data:`_FLOAT32_SQUARE` as float64; float64 values (and all values after them) scaled by
        ``2**-self.shift``, a power of two chosen so that the largest is at most ``2**_FLOAT64_EXPONENT``
        (exact: only the exponent changes; the running mean and M2 are rescaled to match)."""
        if values.dtype == np.float32 and largest > _FLOAT32_SQUARE:
            values = values.astype(np.float64)
        if values.dtype != np.float64:
            return values
        shift = max(0, math.frexp(largest)[1] - _FLOAT64_EXPONENT)
        if shift > self.shift:
            self.mean = math.ldexp(self.mean, self.shift - shift)
            self.m2 = math.ldexp(self.m2, 2 * (self.shift - shift))
            self.shift = shift
        return np.ldexp(values, -self.shift) if self.shift else values

    def into(self, stats: TensorStats) -> TensorStats:
        stats.count, stats.nan, stats.posinf, stats.neginf = self.n, self.nan, self.posinf, self.neginf
        stats.zeros, stats.finite = self.zeros, self.finite
        if self.finite:
            stats.mean = math.ldexp(self.mean, self.shift)
            stats.std = math.ldexp(math.sqrt(self.m2 / self.finite), self.shift)
            stats.min, stats.max = self.lo, self.hi
            sample = np.concatenate(self.sample) if self.sample else np.zeros(0)
            stats.hist = histogram(sample, stats.dtype, float(self.lo), float(self.hi))  # type: ignore[arg-type]
        return stats


def _numeric(dtype: str) -> bool:
    if dtype in LOW_PRECISION:
        return True
    try:
        return np.dtype(dtype).kind in "biufc"
    except TypeError:
        return False


def stats_of_array(name: str, array: np.ndarray) -> TensorStats:
    """:class:`TensorStats` of an array in memory (all of it)."""
    acc = _Accumulator(array.size)
    acc.add(array)
    stats = TensorStats(name, array.dtype.name, tuple(array.shape), array.nbytes, total=array.size)
    return acc.into(stats)


def tensor_stats(f: LazyFile, name: str, sample_above: int | None = None,
                 progress: Callable[[int], None] | None = None) -> TensorStats:  # fmt: skip
    """:class:`TensorStats` of tensor ``name`` of the opened file ``f``, read piece by piece.

    Args:
        sample_above: a tensor of more bytes than this is sampled (:func:`.read.pieces`).
        progress: called with the bytes of each piece read.

    Raises:
        TensorFileError: the tensor cannot be read, or its checksum fails (IntegrityError).
    """
    info = f.info(name)
    stats = TensorStats(name, info.dtype, tuple(int(d) for d in info.shape), info.nbytes)
    if not _numeric(info.dtype):
        stats.notes.append(f"dtype {info.dtype}: no statistics")
        if progress is not None:
            progress(info.nbytes)
        return stats
    part = pieces(f, name, sample_above)
    stats.total, stats.sampled = part.total, part.sampled
    acc, done = _Accumulator(part.read), 0
    for piece in part.chunks:
        acc.add(piece)
        if progress is not None:
            progress(min(piece.nbytes, info.nbytes - done))
            done += piece.nbytes
    if progress is not None and done < info.nbytes:  # sampled: the rest counts as done
        progress(info.nbytes - done)
    stats.verified = part.verified
    if part.sampled:
        stats.notes.append(f"sampled: {part.read:,} of {part.total:,} values read")
    if info.dtype.startswith("complex"):
        stats.notes.append("complex: statistics of the magnitude")
    return acc.into(stats)


def file_stats(f: LazyFile, names: list[str], sample_above: int | None,
               progress: Callable[[int], None] | None = None) -> Iterator[TensorStats]:  # fmt: skip
    """:func:`tensor_stats` of each of ``names``, one tensor at a time (nothing of one is kept)."""
    for name in names:
        yield tensor_stats(f, name, sample_above, progress)
