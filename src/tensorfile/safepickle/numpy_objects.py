"""NumPy values and plain Python values inside pickles: data only, never code.

Used for object ``.npy`` files (what ``np.save`` writes for a dict or a list) and
for NumPy arrays and scalars inside a ``torch.save`` file. Reference: numpy/numpy
``numpy/_core/src/multiarray/methods.c`` (``array_reduce`` / ``array_setstate``)
and ``descriptor.c`` (``arraydescr_reduce`` / ``arraydescr_setstate``).

The table hands out our own records (:class:`ArrayRecord`, :class:`DTypeRecord`),
never NumPy's classes or its process-wide dtype descriptors; :func:`resolve`
turns the records into arrays after the pickle has run, each shared record once.
TensorFlow's ``convert_to_tensor`` (the chapter's ``np.save`` of tf tensors
pickles a call to it on an array) is taken as the array itself.
"""

from __future__ import annotations

import codecs
from collections import Counter, OrderedDict
from typing import Any

import numpy as np

from ..errors import FormatError, UnsupportedTypeError
from ..limits import Budget
from ..tree import map_leaves
from .machine import Record, load_pickle

__all__ = ["ArrayRecord", "DTypeRecord", "numpy_table", "python_table", "resolve", "read_object_array", "check_text"]


def _dtype_from(spec: str, order: str, what: str) -> np.dtype:
    if spec.startswith("O"):
        return np.dtype(object)
    if not spec.isascii() or not spec.isalnum() or len(spec) > 16:
        raise UnsupportedTypeError(f"{what}: dtype {spec[:40]!r} is not a plain dtype")
    try:
        dtype = np.dtype(spec)
    except Exception:  # NumPy's parser raises TypeError, ValueError, SyntaxError... for what it cannot read
        raise UnsupportedTypeError(f"{what}: unknown dtype {spec!r}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind in "OV":
        raise UnsupportedTypeError(f"{what}: dtype {spec!r} is not plain data")
    if dtype.itemsize == 0:
        raise UnsupportedTypeError(f"{what}: dtype {spec!r} has items of 0 bytes")
    if order in ("<", ">") and dtype.itemsize > 1:
        return dtype.newbyteorder(order)
    return dtype


class DTypeRecord(Record):
    """``numpy.dtype(spec, align, copy)`` and its BUILD state (byte order only)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        if type(spec) is not str:
            raise FormatError(f"a dtype named by {type(spec).__name__}, not a string")
        self.spec, self.order = spec, "|"

    def setstate(self, state: Any) -> None:
        if not (type(state) is tuple and len(state) > 1 and state[1] in ("<", ">", "|", "=")):
            raise FormatError("a dtype pickle with an unexpected state")
        self.order = state[1]

    def resolved(self, what: str) -> np.dtype:
        return _dtype_from(self.spec, self.order, what)


class ArrayRecord(Record):
    """``numpy._core.multiarray._reconstruct(ndarray, ...)`` and its BUILD state."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, what: str, budget: Budget | None) -> None:
        self.what, self.budget = what, budget
        self.shape: tuple[int, ...] = ()
        self.dtype: DTypeRecord | None = None
        self.fortran = False
        self.data: Any = None

    def setstate(self, state: Any) -> None:
        if not (type(state) is tuple and len(state) == 5 and isinstance(state[2], DTypeRecord)):
            raise FormatError("an array pickle with an unexpected state")
        _, shape, dtype, fortran, data = state
        if type(shape) is not tuple or len(shape) > 64 or not all(type(d) is int and d >= 0 for d in shape):
            raise FormatError(f"array shape {str(shape)[:80]}")
        self.shape, self.dtype, self.fortran, self.data = shape, dtype, bool(fortran), data

    def value(self) -> Any:
        if self.dtype is None:
            raise FormatError(f"{self.what}: an array pickle without a state")
        dtype = self.dtype.resolved(self.what)
        count = 1
        for d in self.shape:
            count *= d
        if dtype == np.dtype(object):
            if type(self.data) is not list or len(self.data) != count:
                raise FormatError(f"{self.what}: an object array whose items do not match its shape {self.shape}")
            if not self.shape:
                return self.data[0]
            return self.data if len(self.shape) == 1 else _nested(self.data, self.shape)
        if type(self.data) not in (bytes, bytearray) or len(self.data) != count * dtype.itemsize:
            raise FormatError(f"{self.what}: array data does not match its shape {self.shape} and dtype {dtype}")
        if self.budget is not None:
            self.budget.charge(len(self.data), f"{self.what}: an array of shape {self.shape}")
        array = np.frombuffer(self.data, dtype, count)
        check_text(array.astype(dtype.newbyteorder("="), copy=False), self.what)
        array = array.reshape(self.shape[::-1]).T if self.fortran else array.reshape(self.shape)
        return np.ascontiguousarray(array).astype(dtype.newbyteorder("="), copy=False)


def check_text(array: np.ndarray, what: str) -> None:
    """Refuse a ``U`` (UCS-4 text) array holding a code point past U+10FFFF: NumPy fails on every read of it.

    Raises:
        FormatError: names ``what``.
    """
    if array.dtype.kind == "U" and array.size and int(array.view(np.uint32).max()) > 0x10FFFF:
        raise FormatError(f"{what}: text holds a code point past U+10FFFF (not Unicode)")


def _nested(items: list[Any], shape: tuple[int, ...]) -> list[Any]:
    """A flat C-order list as nested lists of ``shape`` (``ndarray.tolist`` of an object array)."""
    for d in shape[:0:-1]:
        items = [items[i : i + d] for i in range(0, len(items), d)] if d else []
    return items


def numpy_table(what: str, budget: Budget | None = None) -> dict[tuple[str, str], Any]:
    """The NumPy names an array or scalar pickle uses, as fresh functions making records."""
    ndarray = object()

    def reconstruct(cls: Any, shape: Any = None, order: Any = None) -> ArrayRecord:
        if cls is not ndarray:
            raise FormatError(f"{what}: _reconstruct of something other than numpy.ndarray")
        return ArrayRecord(what, budget)

    def scalar(dtype: Any, data: Any = b"") -> Any:
        if not isinstance(dtype, DTypeRecord) or type(data) not in (bytes, bytearray):
            raise FormatError(f"{what}: a NumPy scalar pickle with an unexpected state")
        resolved = dtype.resolved(what)
        if resolved == np.dtype(object) or len(data) != resolved.itemsize:
            raise FormatError(f"{what}: a NumPy scalar of the wrong size")
        return np.frombuffer(bytes(data), resolved, 1)[0]

    def convert_to_tensor(value: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(value, ArrayRecord):
            raise FormatError(f"{what}: convert_to_tensor of something other than an array")
        return value

    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): ndarray, ("numpy", "dtype"): DTypeRecord}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = reconstruct
        table[(module, "scalar")] = scalar
    for module in ("tensorflow.python.framework.ops", "tensorflow.python.framework.tensor_conversion"):
        table[(module, "convert_to_tensor")] = convert_to_tensor
        table[(module, "convert_to_tensor_v2")] = convert_to_tensor
    return table


class _Namespace(Record):
    """``argparse.Namespace``: its attributes come back as a dict."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, *args: Any) -> None:
        self.attributes: dict[str, Any] = {}

    def setstate(self, state: Any) -> None:
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise FormatError("an argparse.Namespace with a state that is not a dict of str")
        self.attributes = state

    def value(self) -> dict[str, Any]:
        return self.attributes


def python_table(what: str) -> dict[tuple[str, str], Any]:
    """Plain Python values a pickle may build: sets, slices, complex, OrderedDict, Counter, Namespace (as a dict)."""

    def encode(text: Any, encoding: Any = "latin1") -> bytes:
        if type(text) is not str or encoding not in ("latin1", "latin-1"):
            raise FormatError(f"{what}: _codecs.encode of {type(text).__name__} with {str(encoding)[:20]!r}")
        return codecs.encode(text, "latin1")

    def ordered_dict(items: Any = ()) -> OrderedDict:
        return OrderedDict(_pairs(items, what))

    def counter(items: Any = ()) -> Counter:
        return Counter(dict(_pairs(items, what)))

    def complex_(real: Any = 0.0, imag: Any = 0.0) -> complex:
        if not all(type(v) in (int, float) for v in (real, imag)):
            raise FormatError(f"{what}: complex of {type(real).__name__}, {type(imag).__name__}")
        return complex(real, imag)

    def slice_(*args: Any) -> slice:
        if not 1 <= len(args) <= 3 or not all(a is None or type(a) is int for a in args):
            raise FormatError(f"{what}: a slice of {[type(a).__name__ for a in args][:4]}; only ints and None")
        return slice(*args)

    def namespace(*args: Any, **kwargs: Any) -> _Namespace:
        return _Namespace()

    def reconstructor(cls: Any, base: Any = None, state: Any = None) -> _Namespace:
        if cls is not namespace:
            raise FormatError(f"{what}: copyreg._reconstructor of an unknown class")
        return _Namespace()

    def collection(kind: type) -> Any:
        def make(items: Any = ()) -> Any:
            if type(items) not in (list, tuple, set, frozenset):
                raise FormatError(f"{what}: {kind.__name__} of {type(items).__name__}")
            return kind(items)

        return make

    def binary(kind: type) -> Any:
        def make(data: Any = b"", encoding: Any = None) -> Any:
            if type(data) is str and encoding in ("latin1", "latin-1"):  # protocol < 3 pickles bytearrays so
                return kind(codecs.encode(data, "latin1"))
            if type(data) not in (bytes, bytearray) or encoding is not None:
                raise FormatError(f"{what}: {kind.__name__} of {type(data).__name__}")
            return kind(data)

        return make

    return {
        ("_codecs", "encode"): encode,
        ("builtins", "bytes"): binary(bytes),
        ("builtins", "bytearray"): binary(bytearray),
        ("collections", "OrderedDict"): ordered_dict,
        ("collections", "Counter"): counter,
        ("builtins", "set"): collection(set),
        ("builtins", "frozenset"): collection(frozenset),
        ("builtins", "slice"): slice_,
        ("builtins", "complex"): complex_,
        ("argparse", "Namespace"): namespace,
        ("copyreg", "_reconstructor"): reconstructor,
    }


def _pairs(items: Any, what: str) -> list[tuple[Any, Any]]:
    if type(items) in (dict, OrderedDict, Counter):
        return list(items.items())
    if type(items) in (list, tuple) and all(type(p) in (list, tuple) and len(p) == 2 for p in items):
        return [tuple(p) for p in items]  # type: ignore[misc]
    raise FormatError(f"{what}: a mapping built from {type(items).__name__}")


def resolve(value: Any, what: str, max_depth: int, convert: Any = None) -> Any:
    """``value`` with every record made into its value (arrays, dicts), each shared record once.

    ``convert(record)`` handles records of the caller's own (torch tensors) and returns
    NotImplemented for others, which use ``record.value()``. An object array's items
    are resolved in turn (with what is left of ``max_depth``).
    """
    cache: dict[int, Any] = {}

    def done(record: Any, depth: int) -> Any:
        if id(record) in cache:
            return cache[id(record)]
        out = convert(record) if convert is not None else NotImplemented
        if out is NotImplemented:
            if not isinstance(record, (ArrayRecord, _Namespace)):
                raise FormatError(f"{what}: a bare {type(record).__name__} where data was expected")
            out = record.value()
            if isinstance(out, (list, dict)):
                out = walk(out, depth // 4)  # an object array inside one: a new walk, kept shallow
        cache[id(record)] = out
        return out

    def walk(node: Any, depth: int) -> Any:
        if depth <= 0:
            raise FormatError(f"{what}: containers nested more than {max_depth} deep")
        return map_leaves(node, lambda n: isinstance(n, Record), lambda r: done(r, depth), max_depth=depth, what=what)

    return walk(value, max_depth)


def read_object_array(data: bytes, what: str, budget: Budget | None = None) -> Any:
    """The value an object ``.npy`` holds: a dict or list of arrays and plain values.

    Raises:
        UnsafeFileError: the pickle names anything but the data-only globals above.
        FormatError: malformed (LimitError: over the budget).
    """
    table = {**python_table(what), **numpy_table(what, budget)}
    value = load_pickle(data, table, what=what, budget=budget)
    depth = budget.limits.max_depth if budget is not None else 200
    return resolve(value, what, depth)
