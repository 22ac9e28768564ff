"""The opcodes of the pickle machine (:mod:`.machine`): one function each, and the table :data:`OPS`.

Reference: CPython ``Lib/pickletools.py`` (the opcodes of protocols 0 to 5, their arguments and stack effects).
Each function reads its argument through the machine (which checks every length against the bytes left and
charges strings to the budget) and changes the machine's stack. Opcodes that could run code or need data from
outside the pickle (``INST``, ``OBJ``, ``EXT*``, out-of-band buffers) raise :class:`UnsafeFileError`.
"""

from __future__ import annotations

import codecs
import struct
from typing import TYPE_CHECKING, Any, Callable

from ..errors import FormatError, UnsafeFileError
from .machine import _DICTS, MAX_INT_BYTES, _short_repr, _Stop

if TYPE_CHECKING:
    from .machine import _Machine

__all__ = ["OPS"]


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


OPS: dict[int, Callable[[_Machine], None]] = {
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
