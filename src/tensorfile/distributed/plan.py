"""What each rank holds of a state dict: its structure, and per tensor the global shape, dtype and local slice.

Tensors (reference: pytorch/pytorch ``torch/distributed/tensor/_api.py``, ``DTensor.__create_chunk_list__``,
and ``torch/distributed/checkpoint/default_planner.py``, ``dedup_save_plans``):

* a ``DTensor`` (FSDP2 ``fully_shard``, tensor parallel ``distribute_tensor``) holds one slice of its global
  tensor on each rank of its mesh: ``__create_chunk_list__()`` gives its offsets and lengths. Ranks that differ
  only along mesh dims where it is ``Replicate`` hold the same slice: the one whose coordinate is 0 on every
  such dim writes it. A ``Partial`` placement (a pending reduction) is refused.
* any other tensor (torch, NumPy, any framework tensorfile stores) is replicated: every rank is taken to hold
  the same value, and one rank writes it, chosen so that each rank writes about as many bytes.

Names are the dotted paths of :mod:`tensorfile.tree` (``"model.0.weight"``,
``"optim.state.0.weight.exp_avg"``); the same tensor object met twice is stored once (the second place
names the first).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnsupportedTypeError
from ..format.dtypes import name_of
from ..frameworks import adapter_for
from ..tree import _encode_key, _key_part, encode_plain, unique_name

__all__ = ["Leaf", "Plan", "walk", "is_dtensor", "local_region"]


@dataclass
class Leaf:
    """One tensor of the state on this rank.

    Attributes:
        name: its name in the checkpoint.
        dtype: tensorfile dtype name (``"float32"``, ``"bfloat16"``).
        shape: the global shape.
        framework: its framework's name (``"torch"``).
        record: framework flags kept (``parameter``, ``requires_grad``).
        value: the data this rank holds (a DTensor's local tensor; the tensor itself otherwise).
        offsets, lengths: where ``value`` lies in the global tensor.
        replicated: not a DTensor (a writer is chosen by size).
        writes: this rank writes it.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    framework: str
    record: dict[str, bool]
    value: Any
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]
    replicated: bool
    writes: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes of the slice this rank holds."""
        n = _itemsize(self.dtype)
        for d in self.lengths:
            n *= d
        return n


@dataclass
class Plan:
    """The structure record of a state and its tensors, in the order met."""

    root: dict[str, Any]
    leaves: list[Leaf] = field(default_factory=list)

    def written(self) -> list[Leaf]:
        """The tensors this rank writes (none of zero elements)."""
        return [leaf for leaf in self.leaves if leaf.writes]


def _itemsize(dtype: str) -> int:
    from ..format.dtypes import dtype_from_name

    return dtype_from_name(dtype).itemsize


def is_dtensor(value: Any) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (nothing is imported: no DTensor exists before
    ``torch.distributed.tensor`` is)."""
    module = sys.modules.get("torch.distributed.tensor")
    if module is None or not type(value).__module__.startswith("torch"):
        return False
    dtensor = getattr(module, "DTensor", None)
    return dtensor is not None and isinstance(value, dtensor)


def local_region(value: Any, where: str) -> tuple[tuple[int, ...], tuple[int, ...], bool] | None:
    """``(offsets, lengths, writer)`` of the slice of DTensor ``value`` on this rank, ``writer`` True when this
    rank is the one of its replicas to write it; None when this rank is not in its mesh.

    Raises:
        UnsupportedTypeError: a ``Partial`` placement.
    """
    placements = tuple(value.placements)
    if any(p.is_partial() for p in placements):
        raise UnsupportedTypeError(f"{where}: a DTensor with a Partial placement {placements} (a pending "
                                   "reduction) cannot be saved; redistribute it to Shard or Replicate first")  # fmt: skip
    key = (value.device_mesh, placements, tuple(value.shape))
    found = _REGIONS.get(key, _MISSING)
    if found is _MISSING:
        found = _region(value, placements)
        if len(_REGIONS) >= _MAX_REGIONS:
            _REGIONS.clear()
        _REGIONS[key] = found
    return found  # type: ignore[return-value]


#: :func:`local_region` by mesh, placements and global shape: the same for every tensor of one layout (an FSDP2
#: state has a few layouts and thousands of tensors), and DTensor's own computation is slow.
_REGIONS: dict[Any, Any] = {}
_MAX_REGIONS = 1 << 14
_MISSING = object()


def _region(value: Any, placements: tuple[Any, ...]) -> tuple[tuple[int, ...], tuple[int, ...], bool] | None:
    coordinate = value.device_mesh.get_coordinate()
    if coordinate is None:
        return None
    chunk = value.__create_chunk_list__()[0]
    writer = all(c == 0 for c, p in zip(coordinate, placements) if not p.is_shard())
    return tuple(int(o) for o in chunk.offsets), tuple(int(n) for n in chunk.sizes), writer


def _torch_dtype(value: Any) -> str:
    from ..frameworks.torch import TORCH_TO_NAME

    if value.dtype not in TORCH_TO_NAME:
        raise UnsupportedTypeError(f"torch dtype {value.dtype} is not supported")
    return TORCH_TO_NAME[value.dtype]


class _Walker:
    def __init__(self) -> None:
        self.plan = Plan(root={})
        self.names: set[str] = set()
        self.by_id: dict[int, str] = {}
        self.active: set[int] = set()

    def _name(self, parts: list[str]) -> str:
        return unique_name(parts, self.names)

    def node(self, value: Any, where: str, parts: list[str]) -> dict[str, Any]:
        plain = encode_plain(value, where)
        if plain is not None:
            return plain
        kind = type(value)
        if kind in (dict, list, tuple) or isinstance(value, dict):
            if id(value) in self.active:
                raise UnsupportedTypeError(f"{where}: the container contains itself")
            self.active.add(id(value))
            try:
                if isinstance(value, dict):
                    items = [[_encode_key(k, where), self.node(v, f"{where}[{k!r}]", parts + [_key_part(k)])]
                             for k, v in value.items()]  # fmt: skip
                    return {"type": "ordered_dict" if kind.__name__ == "OrderedDict" else "dict", "items": items}
                return {"type": kind.__name__,
                        "items": [self.node(v, f"{where}[{i}]", parts + [str(i)]) for i, v in enumerate(value)]}  # fmt: skip
            finally:
                self.active.discard(id(value))
        if id(value) in self.by_id:  # the same tensor again (tied weights): stored once
            return {"type": "tensor", "name": self.by_id[id(value)]}
        leaf = self._leaf(value, where, parts)
        if leaf is None:
            raise UnsupportedTypeError(f"{where}: {kind.__module__}.{kind.__qualname__} is not supported in a "
                                       "distributed checkpoint; expected a tensor, DTensor, dict, list, tuple, None, "
                                       "bool, int, float or str")  # fmt: skip
        self.by_id[id(value)] = leaf.name
        self.plan.leaves.append(leaf)
        return {"type": "tensor", "name": leaf.name}

    def _leaf(self, value: Any, where: str, parts: list[str]) -> Leaf | None:
        if is_dtensor(value):
            region = local_region(value, where)
            try:
                dtype = _torch_dtype(value)
            except UnsupportedTypeError as exc:
                raise UnsupportedTypeError(f"{where}: {exc}") from None
            flags = {"requires_grad": True} if value.requires_grad else {}
            shape = tuple(int(d) for d in value.shape)
            if region is None:  # not in its mesh: holds nothing, writes nothing
                return Leaf(self._name(parts), dtype, shape, "torch", flags, None, (0,) * len(shape), (0,) * len(shape),
                            False)  # fmt: skip
            offsets, lengths, writer = region
            local = value.to_local()
            return Leaf(self._name(parts), dtype, shape, "torch", flags, local, offsets, lengths, False,
                        writes=writer and all(lengths))  # fmt: skip
        adapter = adapter_for(value)
        if adapter is None:
            return None
        array = adapter.to_numpy(value, where)  # checks the dtype and layout; a view for host tensors
        record = {k: v for k, v in adapter.record(value).items() if k in ("parameter", "requires_grad")}
        shape = tuple(int(d) for d in array.shape)
        return Leaf(self._name(parts), name_of(array.dtype), shape, adapter.name, record, value, (0,) * len(shape),
                    shape, True)  # fmt: skip


def walk(state: Any) -> Plan:
    """The :class:`Plan` of ``state`` on this rank (which tensors it writes: see :func:`assign`).

    Raises:
        UnsupportedTypeError: a value that cannot be stored (names its place and type), a DTensor with a
            ``Partial`` placement, or a tensor named ``__metadata__``.
    """
    walker = _Walker()
    try:
        walker.plan.root = walker.node(state, "state_dict", [])
    except RecursionError:
        raise UnsupportedTypeError("state_dict: containers nested too deeply to store") from None
    return walker.plan


def assign(plan: Plan, rank: int, world: int) -> None:
    """Choose the writer of each replicated tensor: largest first, to the rank with the fewest bytes so far
    (ties: the lower rank). Every rank computes the same choice from the same state."""
    load = [0] * world
    replicated = sorted((leaf for leaf in plan.leaves if leaf.replicated), key=lambda leaf: (-leaf.nbytes, leaf.name))
    for leaf in replicated:
        target = min(range(world), key=lambda r: (load[r], r))
        load[target] += leaf.nbytes
        leaf.writes = target == rank and all(leaf.lengths)
