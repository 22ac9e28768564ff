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

Every malformed pickle raises :class:`FormatError`; a global outside the table
:class:`UnsafeFileError`; both name ``what`` and the byte offset of the opcode.
"""

from __future__ import annotations

import codecs
import io
import reprlib
import struct
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections import Counter, OrderedDict
from typing import Any, Callable, Mapping

from ..errors import FormatError, TensorFileError, UnsafeFileError
from ..limits import DEFAULT_LIMITS, Budget

__all__ = ["Record", "load_pickle", "restricted_loads", "MAX_INT_BYTES"]

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


class _Mark:
    """The MARK object on the stack."""


_MARK = _Mark()
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
        ops = _OPS
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


def _refuse(name: str) -> Callable[[_Machine], None]:
    def op(m: _Machine) -> None:
        raise UnsafeFileError(f"{m.what}: byte {m.pos - 1}: opcode {name} is refused (it can run code or needs out-of-band data)")

    return op


def _stop(m: _Machine) -> None:
    value = m.pop()
    if m.stack or m.marks:
        raise FormatError(f"{m.what}: byte {m.pos}: STOP with {len(m.stack)} more items on the stack")
    raise _Stop(value)


def _int_line(m: _Machine) -> None:
    text = m.readline()
    if text == b"00":
        m.stack.append(False)
    elif text == b"01":
        m.stack.append(True)
    else:
        m.stack.append(_parse_int(m, text))


def _parse_int(m: _Machine, text: bytes) -> int:
    text = text[:-1] if text.endswith(b"L") else text
    if len(text) > 2 * MAX_INT_BYTES:
        raise FormatError(f"{m.what}: byte {m.pos}: an integer of {len(text)} digits")
    try:
        return int(text.decode("ascii"), 10)
    except (ValueError, UnicodeDecodeError):
        raise FormatError(f"{m.what}: byte {m.pos}: {text[:40]!r} is not an integer") from None


def _long(m: _Machine, fmt: str) -> None:
    n = m.length(fmt)
    if n > MAX_INT_BYTES:
        raise FormatError(f"{m.what}: byte {m.pos}: an integer of {n} bytes (at most {MAX_INT_BYTES})")
    m.stack.append(int.from_bytes(m.read(n), "little", signed=True))


def _float_line(m: _Machine) -> None:
    text = m.readline()
    try:
        m.stack.append(float(text.decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        raise FormatError(f"{m.what}: byte {m.pos}: {text[:40]!r} is not a float") from None


def _string_line(m: _Machine) -> None:
    text = m.readline().rstrip()
    if len(text) < 2 or text[0] != text[-1] or text[:1] not in (b"'", b'"'):
        raise FormatError(f"{m.what}: byte {m.pos}: STRING argument is not quoted")
    m.budget.charge(len(text), f"{m.what}: a string in the pickle")
    try:
        m.stack.append(codecs.escape_decode(text[1:-1])[0].decode("latin1"))
    except ValueError:
        raise FormatError(f"{m.what}: byte {m.pos}: a malformed STRING") from None


def _unicode_line(m: _Machine) -> None:
    text = m.readline()
    m.budget.charge(len(text), f"{m.what}: a string in the pickle")
    try:
        m.stack.append(text.decode("raw-unicode-escape"))
    except UnicodeDecodeError:
        raise FormatError(f"{m.what}: byte {m.pos}: a malformed UNICODE") from None


def _text(fmt: str) -> Callable[[_Machine], None]:
    def op(m: _Machine) -> None:
        raw = m.data(m.length(fmt))
        try:
            m.stack.append(raw.decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            raise FormatError(f"{m.what}: byte {m.pos}: a string that is not UTF-8") from None

    return op


def _old_string(fmt: str) -> Callable[[_Machine], None]:
    def op(m: _Machine) -> None:  # Python 2 str: text, as pickle's encoding="latin1" reads it
        m.stack.append(m.data(m.length(fmt)).decode("latin1"))

    return op


def _bytes(fmt: str, kind: type = bytes) -> Callable[[_Machine], None]:
    def op(m: _Machine) -> None:
        m.stack.append(kind(m.data(m.length(fmt))))

    return op


def _frame(m: _Machine) -> None:
    m.length("<Q")  # a hint of the frame's size: checked, nothing allocated


def _persid_line(m: _Machine) -> None:
    text = m.readline()
    try:
        _persistent(m, text.decode("ascii"))
    except UnicodeDecodeError:
        raise FormatError(f"{m.what}: byte {m.pos}: a persistent id that is not ASCII") from None


def _binpersid(m: _Machine) -> None:
    _persistent(m, m.pop())


def _persistent(m: _Machine, pid: Any) -> None:
    if m.persistent_load is None:
        raise UnsafeFileError(f"{m.what}: byte {m.pos}: an unexpected persistent id {_short_repr.repr(pid)}")
    m.stack.append(m.persistent_load(pid))


def _global_line(m: _Machine) -> None:
    module, name = m.readline(), m.readline()
    try:
        m.stack.append(m.find(module.decode("utf-8"), name.decode("utf-8")))
    except UnicodeDecodeError:
        raise FormatError(f"{m.what}: byte {m.pos}: a global's name is not UTF-8") from None


def _stack_global(m: _Machine) -> None:
    name, module = m.pop(), m.pop()
    if type(module) is not str or type(name) is not str:
        raise FormatError(f"{m.what}: byte {m.pos}: STACK_GLOBAL of names that are not strings")
    m.stack.append(m.find(module, name))


def _reduce(m: _Machine) -> None:
    args = m.pop()
    func = m.pop()
    m.stack.append(m.call(func, args))


def _newobj(m: _Machine) -> None:
    args = m.pop()
    cls = m.pop()
    m.stack.append(m.call(cls, args))


def _newobj_ex(m: _Machine) -> None:
    kwargs, args, cls = m.pop(), m.pop(), m.pop()
    if type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
        raise FormatError(f"{m.what}: byte {m.pos}: NEWOBJ_EX keyword arguments are not a dict of str")
    m.stack.append(m.call(cls, args, kwargs))


def _build(m: _Machine) -> None:
    state = m.pop()
    m.build(m.top(), state)


def _setitems(m: _Machine, items: list[Any]) -> None:
    target = m.top()
    if type(target) not in _DICTS:
        raise UnsafeFileError(f"{m.what}: byte {m.pos}: SETITEM on {type(target).__name__}, not a dict the file built")
    if len(items) % 2:
        raise FormatError(f"{m.what}: byte {m.pos}: SETITEMS with an odd number of items")
    for i in range(0, len(items), 2):
        target[items[i]] = items[i + 1]


def _appends(m: _Machine, items: list[Any]) -> None:
    target = m.top()
    if type(target) is not list:
        raise UnsafeFileError(f"{m.what}: byte {m.pos}: APPEND to {type(target).__name__}, not a list the file built")
    target.extend(items)


def _additems(m: _Machine) -> None:
    items = m.pop_mark()
    target = m.top()
    if type(target) is not set:
        raise UnsafeFileError(f"{m.what}: byte {m.pos}: ADDITEMS to {type(target).__name__}, not a set the file built")
    target.update(items)


def _dict_from(m: _Machine, items: list[Any]) -> dict[Any, Any]:
    if len(items) % 2:
        raise FormatError(f"{m.what}: byte {m.pos}: DICT with an odd number of items")
    return {items[i]: items[i + 1] for i in range(0, len(items), 2)}


def _get(m: _Machine, index: int) -> None:
    try:
        m.stack.append(m.memo[index])
    except KeyError:
        raise FormatError(f"{m.what}: byte {m.pos}: memo entry {index} was never stored") from None


def _put(m: _Machine, index: int) -> None:
    if index < 0:
        raise FormatError(f"{m.what}: byte {m.pos}: a negative memo index")
    m.memo[index] = m.top()


def _u(fmt: str) -> Callable[[_Machine], int]:
    size = struct.calcsize(fmt)
    return lambda m: struct.unpack(fmt, m.read(size))[0]


_u1, _u2, _u4, _i4 = _u("<B"), _u("<H"), _u("<I"), _u("<i")


def _proto(m: _Machine) -> None:
    version = _u1(m)
    if version > 5:
        raise FormatError(f"{m.what}: pickle protocol {version} is not read (at most 5)")


def _pop(m: _Machine) -> None:
    if m.marks and len(m.stack) == m.marks[-1]:
        m.marks.pop()  # POP of a MARK, as pickle does
    else:
        m.pop()


def _mark(m: _Machine) -> None:
    m.marks.append(len(m.stack))
    if len(m.marks) > 10 * m.max_depth:
        raise FormatError(f"{m.what}: byte {m.pos}: MARKs nested more than {10 * m.max_depth} deep")


def _tuple_n(n: int) -> Callable[[_Machine], None]:
    def op(m: _Machine) -> None:
        if len(m.stack) - (m.marks[-1] if m.marks else 0) < n:
            raise FormatError(f"{m.what}: byte {m.pos}: the stack holds fewer than {n} items")
        items = m.stack[-n:] if n else []
        del m.stack[len(m.stack) - n :]
        m.stack.append(m.tuple(items))

    return op


def _hashing(op: Callable[[_Machine], None]) -> Callable[[_Machine], None]:
    """``op`` with the errors of hashing or comparing a file's values (a list as a key) as FormatError."""

    def wrapped(m: _Machine) -> None:
        try:
            op(m)
        except TypeError as exc:
            raise FormatError(f"{m.what}: byte {m.pos}: {exc}") from None

    return wrapped


def _frozenset(m: _Machine) -> None:
    m.stack.append(frozenset(m.pop_mark()))


_OPS: dict[int, Callable[[_Machine], None]] = {
    ord("("): _mark,
    ord("."): _stop,
    ord("0"): _pop,
    ord("1"): lambda m: m.pop_mark() and None,
    ord("2"): lambda m: m.stack.append(m.top()),
    ord("F"): _float_line,
    ord("I"): _int_line,
    ord("J"): lambda m: m.stack.append(_i4(m)),
    ord("K"): lambda m: m.stack.append(_u1(m)),
    ord("L"): lambda m: m.stack.append(_parse_int(m, m.readline())),
    ord("M"): lambda m: m.stack.append(_u2(m)),
    ord("N"): lambda m: m.stack.append(None),
    ord("P"): _persid_line,
    ord("Q"): _binpersid,
    ord("R"): _reduce,
    ord("S"): _string_line,
    ord("T"): _old_string("<i"),
    ord("U"): _old_string("<B"),
    ord("V"): _unicode_line,
    ord("X"): _text("<I"),
    ord("a"): _hashing(lambda m: _appends(m, [m.pop()])),
    ord("b"): _build,
    ord("c"): _global_line,
    ord("d"): _hashing(lambda m: m.stack.append(_dict_from(m, m.pop_mark()))),
    ord("}"): lambda m: m.stack.append({}),
    ord("e"): lambda m: _appends(m, m.pop_mark()),
    ord("g"): lambda m: _get(m, _parse_int(m, m.readline())),
    ord("h"): lambda m: _get(m, _u1(m)),
    ord("i"): _refuse("INST"),
    ord("j"): lambda m: _get(m, _u4(m)),
    ord("l"): lambda m: m.stack.append(m.pop_mark()),
    ord("]"): lambda m: m.stack.append([]),
    ord("o"): _refuse("OBJ"),
    ord("p"): lambda m: _put(m, _parse_int(m, m.readline())),
    ord("q"): lambda m: _put(m, _u1(m)),
    ord("r"): lambda m: _put(m, _u4(m)),
    ord("s"): _hashing(lambda m: _setitems(m, [m.pop(), m.pop()][::-1])),
    ord("t"): _hashing(lambda m: m.stack.append(m.tuple(m.pop_mark()))),
    ord(")"): lambda m: m.stack.append(()),
    ord("u"): _hashing(lambda m: _setitems(m, m.pop_mark())),
    ord("G"): lambda m: m.stack.append(struct.unpack(">d", m.read(8))[0]),
    0x80: _proto,
    0x81: _newobj,
    0x82: _refuse("EXT1"),
    0x83: _refuse("EXT2"),
    0x84: _refuse("EXT4"),
    0x85: _hashing(_tuple_n(1)),
    0x86: _hashing(_tuple_n(2)),
    0x87: _hashing(_tuple_n(3)),
    0x88: lambda m: m.stack.append(True),
    0x89: lambda m: m.stack.append(False),
    0x8A: lambda m: _long(m, "<B"),
    0x8B: lambda m: _long(m, "<i"),
    0x8C: _text("<B"),
    0x8D: _text("<Q"),
    0x8E: _bytes("<Q"),
    0x8F: lambda m: m.stack.append(set()),
    0x90: _hashing(_additems),
    0x91: _hashing(_frozenset),
    0x92: _newobj_ex,
    0x93: _stack_global,
    0x94: lambda m: _put(m, len(m.memo)),
    0x95: _frame,
    0x96: _bytes("<Q", bytearray),
    0x97: _refuse("NEXT_BUFFER"),
    0x98: _refuse("READONLY_BUFFER"),
    ord("B"): _bytes("<I"),
    ord("C"): _bytes("<B"),
}


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


def restricted_loads(data: Any, table: Mapping[tuple[str, str], Any], **kwargs: Any) -> Any:
    """:func:`load_pickle` under its former name (``what``, ``persistent_load``, ``budget`` as keywords)."""
    return load_pickle(data, table, **kwargs)
