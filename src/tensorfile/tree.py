"""Nested containers <-> named tensors plus a structure record.

:func:`flatten` walks a value made of dict / OrderedDict / list / tuple, plain
values (None, bool, int, float, str) and tensors of any supported framework; a
JAX pytree node that is not a plain container (Flax ``FrozenDict``, ``TrainState``,
``nnx.State``, optax states) is stored as the dict (by field name) or list of its
children, and comes back as that plain dict or list. It
returns the tensors to store, each under a unique name, and a JSON-ready record
of the structure. :func:`unflatten` rebuilds the value from that record and the
loaded tensors. Nothing here imports a framework; adapters do.

Tensor names are the dotted path of keys and indices (``"0.weight"``,
``"optimizer.state.0.exp_avg"``), so a flat ``dict[str, tensor]`` is stored
under its own keys. A clash gets a ``#N`` suffix. A lone tensor is ``"tensor"``.

Structure nodes (``docs/FORMAT.md`` has the full grammar)::

    {"type": "tensor", "name": NAME}
    {"type": "dict" | "ordered_dict", "items": [[KEY, NODE], ...]}
    {"type": "list" | "tuple", "items": [NODE, ...]}
    {"type": "none"} | {"type": "bool" | "int" | "str", "value": V}
    {"type": "float", "value": NUMBER | "nan" | "inf" | "-inf"}

A KEY is a node of type none, bool, int, float, str, or tuple of KEYs.
"""

from __future__ import annotations

import math
import reprlib
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .errors import FormatError, UnsupportedTypeError
from .format.dtypes import code_of
from .format.record import Member, SharedGroup, extent
from .frameworks import Adapter, Inner, StorageView, adapter_for, pytree_children

__all__ = ["Leaf", "Flattened", "flatten", "unflatten", "encode_plain", "decode_plain", "flat_arrays", "shared_groups", "map_leaves"]

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 3, 80, 80, 6, 6


def short(value: Any) -> str:
    """``repr(value)`` cut to a few hundred characters: a message never holds a file's megabytes."""
    return _SHORT.repr(value)

RESERVED_NAMES = frozenset(("__metadata__",))
#: Largest plain int stored, in bits (about 3,900 decimal digits: JSON readers cap integer text).
MAX_INT_BITS = 13_000


@dataclass
class Leaf:
    """A tensor to store: its name, host array, framework and facts to record."""

    name: str
    array: np.ndarray
    framework: str
    record: dict[str, Any]
    storage: StorageView | None
    #: the leaf this one is tied to (the same tensor met again under another name): written again under its own
    #: name, so every name is a tensor of the file, and loaded as that one tensor
    tied_to: str | None = None
    #: the value the leaf was made from (a framework tensor; incremental checkpoints read its version counter)
    source: Any = None


@dataclass
class Flattened:
    """What :func:`flatten` returns."""

    root: dict[str, Any]
    leaves: list[Leaf] = field(default_factory=list)


def _describe(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def encode_plain(value: Any, where: str) -> dict[str, Any] | None:
    """Encode a plain value (None, bool, int, float, str) as a node, else None."""
    kind = type(value)
    if value is None:
        return {"type": "none"}
    if kind is bool:
        return {"type": "bool", "value": value}
    if kind is int:
        if value.bit_length() > MAX_INT_BITS:
            raise UnsupportedTypeError(f"{where}: an int of {value.bit_length()} bits is too large (at most {MAX_INT_BITS})")
        return {"type": "int", "value": value}
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UnsupportedTypeError(f"{where}: a str that is not valid Unicode ({exc.reason}) is not supported") from None
        return {"type": "str", "value": value}
    if kind is float:
        if math.isnan(value):
            return {"type": "float", "value": "nan"}
        if math.isinf(value):
            return {"type": "float", "value": "inf" if value > 0 else "-inf"}
        return {"type": "float", "value": value}
    return None


def _encode_key(key: Any, where: str) -> dict[str, Any]:
    if type(key) is tuple:
        return {"type": "tuple", "items": [_encode_key(k, where) for k in key]}
    node = encode_plain(key, f"{where}: dict key {key!r}")
    if node is None:
        raise UnsupportedTypeError(f"{where}: dict key {key!r} of type {_describe(key)} is not supported")
    return node


def _key_part(key: Any) -> str:
    return key if type(key) is str else repr(key) if type(key) is tuple else str(key)


def unique_name(parts: list[str], taken: set[str]) -> str:
    """The tensor name of the path ``parts`` (joined by ``.``; ``"tensor"`` for none), with ``#N`` added while it
    is taken or reserved (docs/FORMAT.md, "Tensor names"); added to ``taken``."""
    base = ".".join(parts) if parts else "tensor"
    name, n = base, 0
    while name in taken or name in RESERVED_NAMES:
        n += 1
        name = f"{base}#{n}"
    taken.add(name)
    return name


class _Flattener:
    def __init__(self, tie_once: bool) -> None:
        self.out = Flattened(root={})
        self.names: set[str] = set()
        self.by_id: dict[int, Leaf] = {}
        self.by_view: dict[tuple[Any, ...], Leaf] = {}
        self.active: set[int] = set()
        self.tie_once = tie_once

    def _name(self, parts: list[str]) -> str:
        return unique_name(parts, self.names)

    def _tensor(self, value: Any, adapter: Adapter, where: str, parts: list[str]) -> dict[str, Any]:
        first = self.by_id.get(id(value))
        if first is None:
            array = adapter.to_numpy(value, where)
            code_of(array.dtype, where)
            storage = adapter.storage(value)
            record = adapter.record(value)
            view_key = None
            if storage is not None:
                view_key = (storage.key, storage.offset, storage.strides, array.shape, array.dtype.str, repr(record))
                first = self.by_view.get(view_key)
            if first is None:
                leaf = Leaf(self._name(parts), array, adapter.name, record, storage, source=value)
                self.by_id[id(value)] = leaf
                if view_key is not None:
                    self.by_view[view_key] = leaf
                self.out.leaves.append(leaf)
                return {"type": "tensor", "name": leaf.name}
            self.by_id[id(value)] = first
        # the same tensor under a second name (tied weights): every name stays a tensor of the file
        if self.tie_once:
            return {"type": "tensor", "name": first.name}
        tied = Leaf(self._name(parts), first.array, first.framework, first.record, first.storage, tied_to=first.name)
        self.out.leaves.append(tied)
        return {"type": "tensor", "name": tied.name}

    def node(self, value: Any, where: str, parts: list[str]) -> dict[str, Any]:
        plain = encode_plain(value, where)
        if plain is not None:
            return plain
        kind = type(value)
        if kind in (dict, OrderedDict, list, tuple):
            if id(value) in self.active:
                raise UnsupportedTypeError(f"{where}: the container contains itself")
            self.active.add(id(value))
            try:
                if kind in (dict, OrderedDict):
                    items = [
                        [_encode_key(k, where), self.node(v, f"{where}[{k!r}]", parts + [_key_part(k)])]
                        for k, v in value.items()
                    ]
                    return {"type": "dict" if kind is dict else "ordered_dict", "items": items}
                return {
                    "type": kind.__name__,
                    "items": [self.node(v, f"{where}[{i}]", parts + [str(i)]) for i, v in enumerate(value)],
                }
            finally:
                self.active.discard(id(value))
        adapter = adapter_for(value)
        if adapter is not None:
            return self._tensor(value, adapter, where, parts)
        inner = pytree_children(value)  # Flax FrozenDict, TrainState, nnx.State, optax states: plain dicts/lists
        if inner is not None:
            if id(value) in self.active:
                raise UnsupportedTypeError(f"{where}: the container contains itself")
            self.active.add(id(value))
            try:
                return self.node(inner.value if isinstance(inner, Inner) else inner, where, parts)
            finally:
                self.active.discard(id(value))
        raise UnsupportedTypeError(
            f"{where}: {_describe(value)} is not supported; expected a tensor, dict, list, tuple, "
            "None, bool, int, float or str"
        )


def flatten(obj: Any, *, tie_once: bool = False) -> Flattened:
    """Split ``obj`` into tensors to store and a structure record.

    A tensor met again (the same object, or the same view of the same storage: tied weights) is a leaf
    of its own under its second name, ``tied_to`` the first, so that every name is a tensor a plain
    safetensors reader sees; with ``tie_once`` its node names the first leaf instead (no second leaf).

    Raises:
        UnsupportedTypeError: a value or dtype cannot be stored; the message names
            its place, e.g. ``obj['optimizer']['state'][0]['fn']``, and its type.
    """
    f = _Flattener(tie_once)
    try:
        f.out.root = f.node(obj, "obj", [])
    except RecursionError:
        raise UnsupportedTypeError("obj: containers nested too deeply to store") from None
    return f.out


def decode_plain(node: Mapping[str, Any]) -> Any:
    """Decode a plain-value or key node; raises FormatError on anything else."""
    if not isinstance(node, dict):
        raise FormatError(f"invalid node {short(node)} in the structure record")
    kind, value = node.get("type"), node.get("value")
    if kind == "none":
        return None
    if kind == "bool" and type(value) is bool:
        return value
    if kind == "int" and type(value) is int:
        return value
    if kind == "str" and type(value) is str:
        return value
    if kind == "float":
        if isinstance(value, str) and value in ("nan", "inf", "-inf"):
            return float(value)
        if type(value) is float:
            return value
        if type(value) is int:
            try:
                return float(value)
            except OverflowError:
                raise FormatError(f"float node value {value} is out of range") from None
    if kind == "tuple" and isinstance(node.get("items"), list):
        return tuple(decode_plain(k) for k in node["items"])
    raise FormatError(f"invalid node {short(node)} in the structure record")


def flat_arrays(value: Any, prefix: str = "", leaf: type | tuple[type, ...] = ()) -> dict[str, Any]:
    """NumPy arrays (and scalars) inside nested dicts / lists / tuples by dotted path; other values dropped.

    A lone array is named ``"tensor"``; a name already taken (``{"a.b": x, "a": {"b": y}}``)
    gets a ``#N`` suffix, as :func:`flatten` does, so no array is lost. Used where only
    named arrays matter (the CLI, ``open`` of other tools' files, ``load_parameters``
    from a nested file). Objects of the types ``leaf`` are named as arrays are and kept
    as they are (``open`` names tensors it has not read yet so).
    """
    out: dict[str, np.ndarray] = {}

    def put(name: str, array: np.ndarray) -> None:
        unique, n = name, 1
        while unique in out:
            unique, n = f"{name}#{n}", n + 1
        out[unique] = array

    seen: set[int] = set()  # a container reached again (shared) is listed once, under its first path
    keep: list[Any] = []

    def walk(node: Any, path: str, depth: int) -> None:
        if depth > 200:
            raise FormatError("nested more than 200 deep")
        if isinstance(node, (dict, list, tuple)):
            if id(node) in seen:
                return
            seen.add(id(node))
            keep.append(node)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}{k}.", depth + 1)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{path}{i}.", depth + 1)
        elif isinstance(node, (np.ndarray, np.generic)):
            put(path[:-1] if path else "tensor", np.asarray(node))
        elif leaf and isinstance(node, leaf):
            put(path[:-1] if path else "tensor", node)

    walk(value, prefix, 0)
    return out


def unflatten(root: Any, tensor: Callable[[Any], Any]) -> Any:
    """Rebuild a value from its structure record.

    Args:
        root: the structure node from the file.
        tensor: returns the loaded tensor stored under a name (the same object
            for the same name, so tied tensors stay tied); raises FormatError
            for a name that is not a string or not in the file.

    Raises:
        FormatError: the record is malformed.
    """

    def build(node: Any) -> Any:
        if not isinstance(node, dict):
            raise FormatError(f"invalid node {short(node)} in the structure record")
        kind = node.get("type")
        if kind == "tensor":
            return tensor(node.get("name"))
        if kind in ("list", "tuple") and isinstance(node.get("items"), list):
            items = [build(n) for n in node["items"]]
            return items if kind == "list" else tuple(items)
        if kind in ("dict", "ordered_dict") and isinstance(node.get("items"), list):
            out: dict[Any, Any] = {} if kind == "dict" else OrderedDict()
            for pair in node["items"]:
                if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], dict):
                    raise FormatError(f"invalid dict item {short(pair)} in the structure record")
                key = decode_plain(pair[0])
                if key in out:
                    raise FormatError(f"dict key {key!r} appears twice in the structure record")
                out[key] = build(pair[1])
            return out
        return decode_plain(node)

    try:
        return build(root)
    except RecursionError:
        raise FormatError("the structure record is nested too deeply") from None


def shared_groups(leaves: list[Leaf]) -> list[SharedGroup]:
    """Leaves that are views of one storage, grouped: the span they cover (bytes) and each one's place in it."""
    by_storage: dict[Any, list[Leaf]] = defaultdict(list)
    for leaf in leaves:
        if leaf.storage is not None and leaf.tied_to is None:
            by_storage[leaf.storage.key].append(leaf)
    groups = []
    for members in by_storage.values():
        if len(members) < 2:
            continue
        spans = [
            extent(leaf.storage.offset, leaf.array.shape, leaf.storage.strides, leaf.array.dtype.itemsize)  # type: ignore[union-attr]
            for leaf in members
        ]
        # Start the span at a multiple of the largest item size (all are powers of two), so
        # that every member's offset stays a multiple of its own item size.
        item = max(leaf.array.dtype.itemsize for leaf in members)
        base = min(low for low, _ in spans) // item * item
        top = max(high for _, high in spans)
        groups.append(
            SharedGroup(
                top - base,
                tuple(Member(m.name, m.storage.offset - base, m.storage.strides) for m in members),  # type: ignore[union-attr]
            )
        )
    return groups


def map_leaves(value: Any, is_leaf: Callable[[Any], bool], convert: Callable[[Any], Any], *, max_depth: int,
               what: str) -> Any:  # fmt: skip
    """Rebuild dict / OrderedDict / list / tuple nesting with ``convert(leaf)`` for each leaf.

    Memoized by identity: an object reached twice (shared, as a pickle memoizes it)
    is converted once and shared again, so a structure with 2**60 paths costs 60
    steps; a dict or list that holds itself keeps holding itself. Other values pass
    through.

    Raises:
        FormatError: containers nested more than ``max_depth`` deep (names ``what``).
    """
    done: dict[int, Any] = {}
    keep: list[Any] = []  # originals stay alive, so their ids stay unique

    def walk(node: Any, depth: int) -> Any:
        key = id(node)
        if key in done:
            return done[key]
        if is_leaf(node):
            keep.append(node)
            done[key] = convert(node)
            return done[key]
        if type(node) not in (dict, OrderedDict, list, tuple):
            return node
        if depth > max_depth:
            raise FormatError(f"{what}: containers nested more than {max_depth} deep")
        keep.append(node)
        if isinstance(node, dict):
            out: Any = type(node)()
            done[key] = out
            for k, v in node.items():
                out[k] = walk(v, depth + 1)
            return out
        if isinstance(node, list):
            out = []
            done[key] = out
            out.extend(walk(v, depth + 1) for v in node)
            return out
        built = tuple(walk(v, depth + 1) for v in node)  # a tuple cannot hold itself
        done[key] = built
        return built

    return walk(value, 0)
