"""The one pickle machine: a small interpreter of the pickle opcodes that torch and NumPy files use.

Reference: the opcode set is CPython's ``Lib/pickletools.py`` (protocols 0-5); the
idea of an interpreter with an allow-list is pytorch/pytorch
``torch/_weights_only_unpickler.py``. This is our own code, not ``pickle.Unpickler``:

* Globals resolve only through the table the caller gives, ``(module, name) ->
  value``; nothing is ever imported. Protocol 2 names (``__builtin__``,
  ``copy_reg``) are mapped to Python 3 names first, as ``pickle`` maps them.
* ``REDUCE``, ``NEWOBJ`` and ``NEWOBJ_EX`` call only callables that came from the
  table. ``BUILD`` calls ``setstate`` only on the reader's own records
  (:class:`Record`), drops an attribute dict on a dict the file built, and
  refuses anything else: a file can never touch an object it did not create.
* The memo is a dict (an index of 2**30 costs one entry); every length is
  checked against the bytes left before anything is allocated, strings and
  bytes are charged to the file's :class:`tensorfile.limits.Budget`; tuples
  nest at most ``Limits.max_depth`` deep (hashing deeper ones recurses in C).
* ``EXT*``, ``INST``, ``OBJ`` and out-of-band buffers are refused.

The opcodes themselves are :mod:`.opcodes`; this module is the machine they run on.

Every malformed pickle raises :class:`FormatError`; a global outside the table
:class:`UnsafeFileError`; both name ``what`` and the byte offset of the opcode.
"""

from __future__ import annotations

import io
import reprlib
import struct
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections import Counter, OrderedDict
from typing import Any, Callable, Mapping

from ..errors import FormatError, TensorFileError, UnsafeFileError
from ..limits import DEFAULT_LIMITS, Budget

__all__ = ["Record", "load_pickle", "MAX_INT_BYTES", "MAX_LINE"]

#: Largest integer read from LONG1 / LONG4 / LONG (bytes); real files hold machine-sized ints.
MAX_INT_BYTES = 1024
#: Longest protocol-0 text line (an int, a float, a global's name, a memo index).
MAX_LINE = 1 << 16
_short_repr = reprlib.Repr()
_short_repr.maxlevel, _short_repr.maxstring, _short_repr.maxother = 3, 60, 60


class Record:
    """Base of the reader's own objects that a pickle may ``BUILD`` (e.g. a lazy tensor, an array record)."""

    def setstate(self, state: Any) -> None:
        """Take the state ``BUILD`` gives; subclasses check it (raise FormatError)."""
        raise FormatError(f"{type(self).__name__} takes no state")


class _Stop(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


_DICTS = (dict, OrderedDict, Counter)


class _Machine:
    def __init__(self, f: Any, size: int, table: Mapping[tuple[str, str], Any],
                 persistent_load: Callable[[Any], Any] | None, what: str, budget: Budget) -> None:  # fmt: skip
        self.f, self.left, self.table, self.what, self.budget = f, size, table, what, budget
        self.persistent_load = persistent_load
        self.callables = {id(v) for v in table.values() if callable(v)}
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.depth: dict[int, int] = {}  # id of a tuple -> its nesting depth
        self.max_depth = budget.limits.max_depth
        self.pos = 0

    # reading -------------------------------------------------------------
    def read(self, n: int) -> bytes:
        if n > self.left:
            raise FormatError(f"{self.what}: byte {self.pos}: truncated: {n} bytes announced, {self.left} left in the pickle")
        data = self.f.read(n)
        if len(data) != n:
            raise FormatError(f"{self.what}: byte {self.pos}: truncated")
        self.left -= n
        self.pos += n
        return data

    def readline(self) -> bytes:
        line = self.f.readline(min(MAX_LINE, self.left))
        self.left -= len(line)
        self.pos += len(line)
        if not line.endswith(b"\n"):
            raise FormatError(f"{self.what}: byte {self.pos}: a text argument longer than {MAX_LINE} bytes or truncated")
        return line[:-1]

    def length(self, fmt: str) -> int:
        (n,) = struct.unpack(fmt, self.read(struct.calcsize(fmt)))
        if n < 0:
            raise FormatError(f"{self.what}: byte {self.pos}: a negative length {n}")
        if n > self.left:
            raise FormatError(f"{self.what}: byte {self.pos}: a length of {n} bytes, {self.left} left in the pickle")
        return n

    def data(self, n: int) -> bytes:
        self.budget.charge(n, f"{self.what}: a string in the pickle")
        return self.read(n)

    # stack -----------------------------------------------------------------
    def pop(self) -> Any:
        if not self.stack or (self.marks and len(self.stack) <= self.marks[-1]):
            raise FormatError(f"{self.what}: byte {self.pos}: the stack is empty")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack or (self.marks and len(self.stack) <= self.marks[-1]):
            raise FormatError(f"{self.what}: byte {self.pos}: the stack is empty")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise FormatError(f"{self.what}: byte {self.pos}: no MARK")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def tuple(self, items: Any) -> tuple[Any, ...]:
        depth = 1 + max((self.depth.get(id(x), 1) for x in items if type(x) is tuple), default=0)
        if depth > self.max_depth:
            raise FormatError(f"{self.what}: byte {self.pos}: tuples nested more than {self.max_depth} deep")
        t = tuple(items)
        self.depth[id(t)] = depth  # every tuple's own entry: an id reused by a new tuple is overwritten
        return t

    # objects ---------------------------------------------------------------
    def find(self, module: str, name: str) -> Any:
        if (module, name) in NAME_MAPPING:
            module, name = NAME_MAPPING[(module, name)]
        elif module in IMPORT_MAPPING:
            module = IMPORT_MAPPING[module]
        try:
            return self.table[(module, name)]
        except (KeyError, TypeError):
            raise UnsafeFileError(
                f"{self.what}: refuses the global {module}.{name}: it is not a known-safe name (nothing was imported or run)"
            ) from None

    def call(self, func: Any, args: Any, kwargs: Mapping[str, Any] | None = None) -> Any:
        if id(func) not in self.callables or not callable(func):
            raise UnsafeFileError(f"{self.what}: byte {self.pos}: calls {_short_repr.repr(func)}, which is not a known-safe callable")
        if type(args) is not tuple:
            raise FormatError(f"{self.what}: byte {self.pos}: call arguments are not a tuple")
        try:
            return func(*args, **(kwargs or {}))
        except TypeError as exc:  # the file called one of the table's functions with arguments it does not take
            raise FormatError(f"{self.what}: byte {self.pos}: {exc}") from None

    def build(self, obj: Any, state: Any) -> None:
        if isinstance(obj, Record):
            obj.setstate(state)
        elif type(obj) in _DICTS and (state is None or type(state) in _DICTS):
            pass  # an attribute dict for a dict the file built (torch's state_dict._metadata): dropped
        else:
            raise UnsafeFileError(
                f"{self.what}: byte {self.pos}: BUILD on {type(obj).__name__}: only the reader's own records take a state"
            )

    def run(self) -> Any:
        from .opcodes import OPS as ops  # the opcodes' module uses this one's names
        read = self.f.read
        while True:
            if self.left <= 0:
                raise FormatError(f"{self.what}: the pickle ends without STOP (truncated)")
            code = read(1)
            if not code:
                raise FormatError(f"{self.what}: the pickle ends without STOP (truncated)")
            self.left -= 1
            self.pos += 1
            op = ops.get(code[0])
            if op is None:
                raise FormatError(f"{self.what}: byte {self.pos - 1}: opcode {code!r} is not read (unknown or refused)")
            try:
                op(self)
            except _Stop as stop:
                return stop.value


def load_pickle(
    source: bytes | bytearray | memoryview | Any,
    table: Mapping[tuple[str, str], Any],
    *,
    what: str = "pickle",
    persistent_load: Callable[[Any], Any] | None = None,
    budget: Budget | None = None,
    size: int | None = None,
) -> Any:
    """Run one pickle from ``source`` (bytes, or a binary file positioned at it) and return its value.

    A file is left just after the pickle's STOP (a legacy torch.save stream holds
    several pickles in a row).

    Args:
        source: the pickle's bytes, or a binary file.
        table: ``(module, name) -> value`` the pickle may name; callables in it are
            the only things REDUCE / NEWOBJ may call. Build it afresh per file.
        what: names the data in messages (``"x.pt: data.pkl"``).
        persistent_load: handles persistent ids (torch storages); None refuses them.
        budget: charged for every string and bytes object (default: the
            default :class:`~tensorfile.Limits` for a pickle of this size).
        size: with a file, the bytes left in it (default: up to its end).

    Raises:
        UnsafeFileError: a global outside ``table``, a call of anything else,
            BUILD on an object the reader did not make, refused opcodes.
        FormatError: malformed, truncated, over a limit (:class:`~tensorfile.errors.LimitError`).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        f: Any = io.BytesIO(source)
        size = len(source)
    else:
        f = source
        if size is None:
            here = f.tell()
            size = f.seek(0, io.SEEK_END) - here
            f.seek(here)
    if budget is None:
        budget = DEFAULT_LIMITS.budget(what, size)
    machine = _Machine(f, size, table, persistent_load, what, budget)
    try:
        return machine.run()
    except TensorFileError:
        raise
    except (ValueError, OverflowError, struct.error, RecursionError, MemoryError) as exc:
        raise FormatError(f"{what}: byte {machine.pos}: not a valid pickle of tensors ({type(exc).__name__})") from None
