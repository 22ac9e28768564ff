"""A small pickle writer (protocol 2) for data and named globals, without importing what it names.

Reference: cpython ``Lib/pickle.py`` and ``Lib/pickletools.py`` (opcode meanings).
Python's own pickler must import a module to write one of its globals; this
writer emits ``GLOBAL module name`` from strings, so a ``torch.save`` file can be
written where torch is not installed. It writes only None, bool, int, float, str,
tuple, list, dict, ``collections.OrderedDict``, calls of named globals
(``REDUCE``), objects of named classes with their state (``NEWOBJ`` then ``BUILD``, as
``object.__reduce_ex__(2)`` pickles an instance) and persistent ids (``BINPERSID``).
Globals are memoized, and so are calls: the same :class:`Call` object written twice
loads as one object.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

__all__ = ["Global", "Call", "Object", "PersistentId", "PickleWriter"]


class Global:
    """``module.name``, written as a ``GLOBAL`` opcode."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class Call:
    """``function(*args)``: written as the global, the argument tuple, ``REDUCE``."""

    def __init__(self, function: Global, args: tuple[Any, ...]) -> None:
        self.function, self.args = function, args


class Object:
    """An instance of class ``cls`` with ``state``: written as the class, ``()``, ``NEWOBJ``, the state, ``BUILD``
    (the loader makes ``cls.__new__(cls)`` and gives it the state: ``__setstate__``, or its ``__dict__``);
    a state of None writes no ``BUILD``."""

    def __init__(self, cls: Global, state: Any) -> None:
        self.cls, self.state = cls, state


class PersistentId:
    """A value the loader resolves with its ``persistent_load`` (``BINPERSID``)."""

    def __init__(self, value: Any) -> None:
        self.value = value


_ORDERED_DICT = Global("collections", "OrderedDict")


class PickleWriter:
    """Builds one pickle in memory: ``PickleWriter().dumps(value)``."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._memo: dict[tuple[str, str], int] = {}  # global -> memo index
        self._objects: dict[int, int] = {}  # id(Call) -> memo index
        self._keep: list[Call] = []
        self._next = 0
        self._writers: dict[type, Callable[[Any], None]] = {
            type(None): lambda v: self._out.extend(b"N"),
            bool: lambda v: self._out.extend(b"\x88" if v else b"\x89"),
            int: self._int,
            float: lambda v: self._out.extend(b"G" + struct.pack(">d", v)),
            str: self._str,
            tuple: self._tuple,
            list: self._list,
            dict: self._dict,
            Global: self._global,
            Call: self._call,
            Object: self._object,
            PersistentId: self._persistent_id,
        }

    def dumps(self, value: Any) -> bytes:
        """The pickle of ``value``: ``PROTO 2``, the value, ``STOP``."""
        self._out = bytearray(b"\x80\x02")
        self._memo.clear()
        self._objects.clear()
        self._keep.clear()
        self._next = 0
        self._value(value)
        self._out.extend(b".")
        return bytes(self._out)

    def _value(self, value: Any) -> None:
        kind = type(value)
        if kind.__name__ == "OrderedDict" and isinstance(value, dict):
            self._call(Call(_ORDERED_DICT, ()))
            self._items(value)
            return
        writer = self._writers.get(kind)
        if writer is None:
            raise TypeError(f"cannot pickle {kind.__qualname__}")
        writer(value)

    def _int(self, value: int) -> None:
        if -(1 << 31) <= value < (1 << 31):
            self._out.extend(b"J" + struct.pack("<i", value))
            return
        size = ((value if value >= 0 else ~value).bit_length() + 8) // 8  # bytes of two's complement, sign included
        data = value.to_bytes(size, "little", signed=True)
        if len(data) >= 256:  # LONG4: torch's weights-only reader refuses it, and torch never writes it
            raise ValueError(f"an int of {value.bit_length()} bits (torch's safe loader reads -2**2039 to 2**2039 - 1)")
        self._out.extend(b"\x8a" + bytes([len(data)]) + data)  # LONG1

    def _str(self, value: str) -> None:
        data = value.encode("utf-8", "surrogatepass")
        self._out.extend(b"X" + struct.pack("<I", len(data)) + data)  # BINUNICODE

    def _tuple(self, value: tuple[Any, ...]) -> None:
        if not value:
            self._out.extend(b")")
            return
        self._out.extend(b"(")
        for item in value:
            self._value(item)
        self._out.extend(b"t")

    def _list(self, value: list[Any]) -> None:
        self._out.extend(b"]")
        if value:
            self._out.extend(b"(")
            for item in value:
                self._value(item)
            self._out.extend(b"e")  # APPENDS

    def _dict(self, value: dict[Any, Any]) -> None:
        self._out.extend(b"}")
        self._items(value)

    def _items(self, value: dict[Any, Any]) -> None:
        if value:
            self._out.extend(b"(")
            for key, item in value.items():
                self._value(key)
                self._value(item)
            self._out.extend(b"u")  # SETITEMS

    def _global(self, value: Global) -> None:
        key = (value.module, value.name)
        index = self._memo.get(key)
        if index is not None:
            self._get(index)
            return
        if "\n" in value.module or "\n" in value.name:
            raise ValueError(f"bad global name {value.module}.{value.name}")
        self._out.extend(b"c" + f"{value.module}\n{value.name}\n".encode("ascii"))
        self._memo[key] = self._put()

    def _call(self, value: Call) -> None:
        """``function(*args)``; the same Call object again is the same object on load (memoized)."""
        index = self._objects.get(id(value))
        if index is not None:
            self._get(index)
            return
        self._global(value.function)
        self._tuple(value.args)
        self._out.extend(b"R")
        self._objects[id(value)] = self._put()
        self._keep.append(value)  # ids stay unique while the pickle is built

    def _object(self, value: Object) -> None:
        self._global(value.cls)
        self._out.extend(b")\x81")  # EMPTY_TUPLE, NEWOBJ
        if value.state is not None:  # no state, no BUILD (as pickle writes an object without one)
            self._value(value.state)
            self._out.extend(b"b")  # BUILD

    def _put(self) -> int:
        index = self._next
        self._next += 1
        self._out.extend(b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index))
        return index

    def _get(self, index: int) -> None:
        self._out.extend(b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index))

    def _persistent_id(self, value: PersistentId) -> None:
        self._value(value.value)
        self._out.extend(b"Q")
