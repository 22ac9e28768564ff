"""The layout of an incremental save, kept so that the next save of the same structure skips the flatten.

:func:`tensorfile.tree.flatten` of a fine-tuning state (136 tensors) costs several milliseconds of Python per save,
more than the copy of what changed. An incremental manager therefore keeps, after each save that flattened
the state, a :class:`Layout`: a skeleton of the state (each container's type and keys, each plain value with its
structure node, each tensor's place) and, per tensor place, its leaf (name, host view) and its identity: torch
``data_ptr``, ``storage_offset``, shape, strides, dtype, device, ``requires_grad``, neg and conj bits, and its
exact type. The next save walks the new state along the skeleton (:meth:`Layout.match`) and reuses the leaves,
names, structure record and manifest entries when

* every container has the same type, the same keys (same values *and* types) in the same order, or the same
  length; every tensor place holds a tensor of the same type (``torch.Tensor`` or ``Parameter``); and
* every tensor has the same identity as at the previous save. The previous host view keeps the previous storage
  alive, so an equal ``data_ptr`` with equal offset, shape, strides and dtype is the same memory: the cached view
  reads the tensor's current bytes, and tensors tied by a shared view are tied as before.

A plain value that changed (an epoch counter, a learning rate) gets a new structure node; only the containers
above it are rebuilt. Anything else (a parameter replaced by a new tensor, one resized through ``.data``,
optimizer state appearing, a param group added, a key added, a container holding itself) makes the match fail,
and the save flattens the state as a first save does. The layout only replaces the flatten: which tensors are
copied is still decided by their version counters, and the tensors not copied are still verified by checksum
in the background (:mod:`.incremental`).

Only CPU torch tensors with storage (not empty), in dict / OrderedDict / list / tuple containers with str or int
keys, take part; a state holding anything else (other frameworks, JAX pytrees, empty tensors) is flattened at
every save.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from ..tree import Leaf, encode_plain

__all__ = ["Layout", "identity"]

_TENSOR, _PLAIN, _CONTAINER = 0, 1, 2
_KEYS = (str, int)


def identity(value: Any) -> tuple[Any, ...]:
    """What must stay equal for a torch tensor's previous host view to still be its bytes (everything of
    :func:`.incremental.counter` but the version counter and the type)."""
    return (value.data_ptr(), value.storage_offset(), value.shape, value.stride(), value.dtype, value.device,
            value.requires_grad, value.is_neg(), value.is_conj())  # fmt: skip


class _Miss(Exception):
    """The state does not have the cached structure."""


class Layout:
    """The cached layout of one flattened state (see the module docs). Build with :meth:`build`."""

    def __init__(self, skeleton: list[Any], places: list[Any], identities: list[tuple[Any, ...]],
                 leaves: list[Leaf], first: list[int], entries: dict[str, Any]) -> None:  # fmt: skip
        self.skeleton = skeleton
        self.places = places  # per tensor place, in walk order: its skeleton node
        self.identities = identities  # per tensor place: identity() at the save that built the layout
        self.leaves = leaves  # the flatten's leaves, in its order
        self.first = first  # per leaf: the index of the first tensor place that names it (its source)
        self.entries = entries  # the manifest entries of the leaves (read-only)

    @classmethod
    def build(cls, state: Any, root: dict[str, Any], leaves: list[Leaf], entries: dict[str, Any]) -> "Layout | None":
        """The layout of ``state``, just flattened to ``root`` and ``leaves``; None when it has something the
        layout does not cover (see the module docs)."""
        by_name = {leaf.name: leaf for leaf in leaves}
        places: list[Any] = []
        names: list[str] = []

        def walk(value: Any, node: dict[str, Any]) -> list[Any]:
            kind = type(value)
            if kind in (dict, OrderedDict):
                keys = list(value)
                if any(type(k) not in _KEYS for k in keys):
                    raise _Miss
                items = node["items"]
                return [_CONTAINER, kind, keys, [type(k) for k in keys],
                        [walk(v, item[1]) for v, item in zip(value.values(), items)], node]  # fmt: skip
            if kind in (list, tuple):
                return [_CONTAINER, kind, len(value), None, [walk(v, n) for v, n in zip(value, node["items"])], node]
            if node.get("type") == "tensor":
                leaf = by_name.get(node["name"])
                if (leaf is None or leaf.framework != "torch" or leaf.storage is None or kind.__name__ not in (
                        "Tensor", "Parameter") or value.device.type != "cpu"):  # fmt: skip
                    raise _Miss
                place = [_TENSOR, kind, node]
                places.append(place)
                names.append(leaf.name)
                return place
            if value is None or kind in (bool, int, float, str):
                return [_PLAIN, kind, value, node]
            raise _Miss

        try:
            skeleton = walk(state, root)
            identities = [identity(v) for v in _values(state, skeleton)]
        except (_Miss, AttributeError, RuntimeError, TypeError):
            return None
        first_of: dict[str, int] = {}
        for i, name in enumerate(names):
            first_of.setdefault(name, i)
        if set(first_of) != set(by_name):
            return None
        return cls(skeleton, places, identities, leaves, [first_of[leaf.name] for leaf in leaves], entries)

    def match(self, state: Any) -> tuple[dict[str, Any], list[Any]] | None:
        """``(root, tensors)``: the structure record of ``state`` and its tensors per place, when ``state`` has
        this layout's structure and every tensor its identity; else None. Updates the skeleton's plain values."""
        tensors: list[Any] = []
        try:
            root = _walk(state, self.skeleton, tensors)
            if len(tensors) != len(self.places) or [identity(t) for t in tensors] != self.identities:
                return None
        except (_Miss, AttributeError, RuntimeError, TypeError):
            return None
        return root, tensors


def _values(state: Any, skeleton: list[Any]) -> list[Any]:
    out: list[Any] = []
    _walk(state, skeleton, out)
    return out


def _same_plain(value: Any, cached: Any) -> bool:
    if value is cached:
        return True
    if value != cached:
        return False
    return type(value) is not float or math.copysign(1.0, value) == math.copysign(1.0, cached)


def _walk(value: Any, s: list[Any], tensors: list[Any]) -> dict[str, Any]:
    """The structure node of ``value`` on skeleton node ``s`` (raises :class:`_Miss`); its tensors appended."""
    tag, kind = s[0], s[1]
    if type(value) is not kind:
        if tag != _PLAIN or not (value is None or type(value) in (bool, int, float, str)):
            raise _Miss
    if tag == _TENSOR:
        tensors.append(value)
        return s[2]
    if tag == _PLAIN:
        if type(value) is kind and _same_plain(value, s[2]):
            return s[3]
        try:
            node = encode_plain(value, "obj")
        except Exception:  # too large an int, a str that is not Unicode: the flatten says where
            raise _Miss from None
        s[1], s[2], s[3] = type(value), value, node
        return node
    old = s[5]
    items = old["items"]
    if kind is dict or kind is OrderedDict:
        keys = list(value)
        if keys != s[2] or [type(k) for k in keys] != s[3]:
            raise _Miss
        nodes = [_walk(v, c, tensors) for v, c in zip(value.values(), s[4])]
        if any(n is not item[1] for n, item in zip(nodes, items)):
            s[5] = {"type": old["type"], "items": [[item[0], n] for item, n in zip(items, nodes)]}
        return s[5]
    if len(value) != s[2]:
        raise _Miss
    nodes = [_walk(v, c, tensors) for v, c in zip(value, s[4])]
    if any(n is not item for n, item in zip(nodes, items)):
        s[5] = {"type": old["type"], "items": nodes}
    return s[5]
