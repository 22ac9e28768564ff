"""How much a file may make tensorfile do: :class:`Limits`, and the :class:`Budget` every reader charges.

A file from anyone is safe to open only if what it *claims* cannot make the reader
allocate, recurse or loop without bound. Every reader takes one ``Limits`` and
makes one ``Budget`` per file from it; each allocation a file causes (tensor data,
views wider than their storage, densified sparse arrays, HDF5 chunks and fill
values, inflated zip members, strings in a pickle) is charged to the budget
*before* it happens, and a charge over the budget raises :class:`LimitError`
naming the file, what was being read, and the limit to raise.

The defaults let any honest file load (a file's data never needs more than one
copy of itself, plus views of it) and refuse a few hundred bytes that ask for
gigabytes. ``docs/SECURITY.md`` lists each limit and what it guards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import LimitError

__all__ = ["Limits", "Budget", "DEFAULT_LIMITS", "array_nbytes", "out_of_memory"]


@dataclass(frozen=True)
class Limits:
    """Bounds on what one file may make tensorfile allocate or walk through.

    Attributes:
        max_bytes: the most bytes (of arrays, strings and buffers) reading one
            file may allocate, in total. ``None`` (the default) means
            ``bytes_per_file_byte * file size + slack_bytes``.
        bytes_per_file_byte: with ``max_bytes=None``, bytes allowed per byte of
            the file (default 4: one copy of the data, views of it, and a copy
            where a framework needs its own).
        slack_bytes: with ``max_bytes=None``, bytes allowed on top (default 64 MiB:
            small compressed files and the structures around the data).
        max_header_bytes: the largest header, index, pickle or metadata block
            read into memory (default 256 MiB).
        max_tensors: the most tensors (arrays, datasets, records) one file may
            hold (default 2**20).
        max_depth: the deepest nesting of containers (default 200).
        max_expansion: the largest ratio of inflated to compressed size for a
            compressed zip member (default 200; deflate of real tensors gives
            far less, a zip bomb far more).

    Example:
        >>> tensorfile.load("big.pt", limits=tensorfile.Limits(max_bytes=64 << 30))
    """

    max_bytes: int | None = None
    bytes_per_file_byte: float = 4.0
    slack_bytes: int = 64 << 20
    max_header_bytes: int = 256 << 20
    max_tensors: int = 1 << 20
    max_depth: int = 200
    max_expansion: int = 200

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.name == "max_bytes":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"Limits.{field.name} must be a non-negative number, not {value!r}")

    def allowed(self, file_size: int) -> int:
        """The total bytes a file of ``file_size`` bytes may make a reader allocate."""
        if self.max_bytes is not None:
            return int(self.max_bytes)
        return int(self.bytes_per_file_byte * max(file_size, 0)) + int(self.slack_bytes)

    def budget(self, path: str, file_size: int) -> "Budget":
        """A fresh :class:`Budget` for reading the file ``path`` of ``file_size`` bytes."""
        return Budget(self, path, self.allowed(file_size))


DEFAULT_LIMITS = Limits()


class Budget:
    """What is left of one file's :class:`Limits` while it is read (not thread-safe: one reader each).

    Attributes:
        limits: the limits it was made from.
        path: the file, named in errors.
        allowed: the total bytes the file may make us allocate.
        used: bytes charged so far.
    """

    def __init__(self, limits: Limits, path: str, allowed: int) -> None:
        self.limits, self.path, self.allowed, self.used = limits, path, allowed, 0
        self._tensors = 0

    def charge(self, nbytes: int, what: str) -> None:
        """Account for ``nbytes`` about to be allocated for ``what`` (e.g. ``"tensor 'w'"``).

        Raises:
            LimitError: the file would make us allocate more than ``allowed`` bytes in all.
        """
        if nbytes < 0:
            raise LimitError(f"{self._where(what)}: a negative size ({nbytes} bytes)")
        if self.used + nbytes > self.allowed:
            raise LimitError(
                f"{self._where(what)} needs {nbytes} bytes, and {self.used} are already allocated: more than the "
                f"{self.allowed} bytes this file may use ({self._rule()}); if the file is trusted, raise it with "
                "limits=tensorfile.Limits(max_bytes=...) or the CLI's --max-bytes"
            )
        self.used += nbytes

    def count_tensor(self, what: str) -> None:
        """Account for one more tensor (or dataset, or record).

        Raises:
            LimitError: more than ``limits.max_tensors``.
        """
        self._tensors += 1
        if self._tensors > self.limits.max_tensors:
            raise LimitError(f"{self._where(what)}: more than {self.limits.max_tensors} tensors (Limits.max_tensors)")

    def check_header(self, nbytes: int, what: str) -> None:
        """Refuse a header, index or pickle of ``nbytes`` bytes over ``limits.max_header_bytes``.

        Raises:
            LimitError: too large.
        """
        if nbytes > self.limits.max_header_bytes:
            raise LimitError(
                f"{self._where(what)} of {nbytes} bytes is larger than {self.limits.max_header_bytes} "
                "(Limits.max_header_bytes)"
            )

    def check_expansion(self, compressed: int, inflated: int, what: str) -> None:
        """Refuse a compressed member claiming more than ``limits.max_expansion`` times its size (plus 1 MiB).

        Raises:
            LimitError: a likely zip bomb.
        """
        if inflated > self.limits.max_expansion * compressed + (1 << 20):
            raise LimitError(
                f"{self._where(what)}: {compressed} compressed bytes claim to inflate to {inflated}: more than "
                f"{self.limits.max_expansion}x, refused as a zip bomb; if the file is trusted, raise it with "
                "limits=tensorfile.Limits(max_expansion=..., max_bytes=...) or the CLI's --max-expansion and --max-bytes"
            )

    def _where(self, what: str) -> str:
        """``what``, after the file's name unless it names the file already."""
        return what if what.startswith(self.path) else f"{self.path}: {what}"

    def _rule(self) -> str:
        if self.limits.max_bytes is not None:
            return "Limits.max_bytes"
        return f"{self.limits.bytes_per_file_byte:g}x the file's size + {self.limits.slack_bytes} (Limits defaults)"


def array_nbytes(shape: tuple[int, ...], itemsize: int, what: str) -> int:
    """Bytes of an array of ``shape`` and ``itemsize``, computed without overflow.

    Raises:
        LimitError: NumPy could not make it, even empty (its dims, zeros counted as
            ones, span 2**63 bytes or more); names ``what``.
    """
    count, span = 1, itemsize
    for d in shape:
        count *= d
        span *= d or 1
    if span >= 1 << 63:
        raise LimitError(f"{what}: shape {shape} of {itemsize}-byte items is too large for any array")
    return count * itemsize


def out_of_memory(path: str, exc: MemoryError) -> LimitError:
    """The error for a file whose allocations fit :class:`Limits` but not the machine (``MemoryError``)."""
    return LimitError(f"{path}: the memory this file asks for cannot be had ({exc or 'MemoryError'}); "
                      "tensorfile.Limits(max_bytes=...) bounds what a file may ask for")  # fmt: skip
