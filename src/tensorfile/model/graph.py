"""The model graph (IR version 1): a declarative record of inputs, nodes and outputs, and its validation.

A graph is JSON (``docs/FORMAT.md``, "Model graphs"), stored in a tensorfile file's ``__metadata__``
under :data:`MODEL_KEY` beside the parameters it names::

    {"ir_version": 1, "framework": "torch",
     "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 20]}],
     "nodes": [{"name": "hidden", "op": "linear", "inputs": ["x"],
                "params": {"weight": "hidden.weight", "bias": "hidden.bias"}, "attrs": {}}, ...],
     "outputs": ["output"],
     "modules": {"": "MLP", "hidden": "Linear", "output": "Linear"}}

:func:`parse_graph` checks all of it before anything is allocated: the version, every op against the
closed vocabulary (:data:`tensorfile.model.vocabulary.OPS`), every reference (a node may use only
inputs and earlier nodes: no cycles, nothing dangling), every attribute's type and range, the
parameters' names and ranks, sizes of symbolic and fixed dims, and the node count.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import UnsupportedArchitectureError
from .vocabulary import IR_VERSION, OPS

__all__ = ["MODEL_KEY", "MAX_NODES", "Node", "Graph", "parse_graph", "dump_graph", "UnsupportedArchitectureError"]

#: The ``__metadata__`` key holding the graph's JSON.
MODEL_KEY = "tensorfile.model"
#: The most nodes a graph may have.
MAX_NODES = 100_000
#: The most symbolic dims, graph inputs and outputs.
MAX_DIMS, MAX_IO = 64, 256
#: The largest fixed dim of an input.
MAX_DIM = 1 << 31

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_./\-]{0,199}")  # no ":": it separates a node from its result index
_INDEX = re.compile(r"0|[1-9][0-9]{0,3}")
_DIM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")


@dataclass(frozen=True)
class Node:
    """One node: its ``name`` (also the name of its result), ``op``, operand references, parameter names by
    role, and attributes (defaults filled in)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    params: dict[str, str]
    attrs: dict[str, Any]
    outputs: int = 1


@dataclass(frozen=True)
class Graph:
    """A validated graph: ``inputs`` (name, dtype, shape with ints and symbolic dim names), ``nodes`` in an
    order where each uses only inputs and earlier nodes, ``outputs`` (value references), ``modules``
    (module path -> class name, for names that stay structural) and the framework it was captured from."""

    inputs: tuple[tuple[str, str, tuple[int | str, ...]], ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    modules: dict[str, str]
    framework: str

    def params(self) -> set[str]:
        """Every tensor name the nodes use."""
        return {name for node in self.nodes for name in node.params.values()}


def _fail(path: str, where: str, what: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(f"{path}: model graph: {where}: {what}")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_graph(text: str, tensors: Mapping[str, tuple[int, ...]], path: str) -> Graph:
    """Parse and validate a graph.

    Args:
        text: the JSON of the ``tensorfile.model`` metadata entry.
        tensors: the file's tensors, name -> shape, that nodes may name as parameters.
        path: the file, for messages.

    Raises:
        UnsupportedArchitectureError (a FormatError): anything malformed: an unknown version or op (never
            looked up anywhere but the vocabulary), a reference to a value not defined before (a cycle or a
            dangling input), a bad attribute, a parameter missing or of the wrong rank, more than
            :data:`MAX_NODES` nodes, a bad dim.
    """
    if len(text) > 64 * MAX_NODES * 8:
        raise _fail(path, "the graph", f"{len(text)} characters is more than a graph of {MAX_NODES} nodes needs")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _fail(path, "the graph", f"not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise _fail(path, "the graph", "must be a JSON object")
    version = doc.get("ir_version")
    if type(version) is not int or not 1 <= version <= IR_VERSION:
        raise _fail(path, "ir_version", f"expected 1..{IR_VERSION}, found {_short(version)} (a newer tensorfile wrote it?)")
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list):
        raise _fail(path, "nodes", "must be a list")
    if len(raw_nodes) > MAX_NODES:
        raise _fail(path, "nodes", f"{len(raw_nodes)} nodes is more than the {MAX_NODES} allowed")
    inputs = _inputs(doc.get("inputs"), path)
    values: dict[str, int] = {name: 1 for name, _, _ in inputs}  # value name -> number of results
    nodes = []
    for i, raw in enumerate(raw_nodes):
        node = _node(raw, i, values, tensors, path)
        values[node.name] = node.outputs
        nodes.append(node)
    outputs = doc.get("outputs")
    if not isinstance(outputs, list) or not 1 <= len(outputs) <= MAX_IO:
        raise _fail(path, "outputs", f"must list 1 to {MAX_IO} values")
    for ref in outputs:
        _check_ref(ref, values, path, "outputs")
    modules = doc.get("modules", {})
    if not isinstance(modules, dict) or len(modules) > MAX_NODES or not all(
        isinstance(k, str) and len(k) <= 200 and isinstance(v, str) and len(v) <= 200 for k, v in modules.items()
    ):
        raise _fail(path, "modules", "must map module paths to class names (strings of at most 200 characters)")
    framework = doc.get("framework", "")
    if not isinstance(framework, str) or len(framework) > 32:
        raise _fail(path, "framework", f"must be a short string, found {_short(framework)}")
    return Graph(tuple(inputs), tuple(nodes), tuple(outputs), dict(modules), framework)


def _inputs(raw: Any, path: str) -> list[tuple[str, str, tuple[int | str, ...]]]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_IO:
        raise _fail(path, "inputs", f"must list 1 to {MAX_IO} inputs")
    out, dims, names = [], set(), set()
    for item in raw:
        if not isinstance(item, dict):
            raise _fail(path, "inputs", f"each input must be an object, found {_short(item)}")
        name, dtype, shape = item.get("name"), item.get("dtype"), item.get("shape")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in names:
            raise _fail(path, "inputs", f"bad or repeated input name {_short(name)}")
        if dtype not in _DTYPES:
            raise _fail(path, f"input {name!r}", f"dtype must be one of {', '.join(_DTYPES)}, found {_short(dtype)}")
        if not isinstance(shape, list) or len(shape) > 8:
            raise _fail(path, f"input {name!r}", f"shape must be a list of at most 8 dims, found {_short(shape)}")
        for d in shape:
            if isinstance(d, str) and _DIM.fullmatch(d):
                dims.add(d)
            elif type(d) is not int or not 0 <= d < MAX_DIM:
                raise _fail(path, f"input {name!r}", f"a dim must be an int in [0, 2**31) or a symbolic name, found {_short(d)}")
        if len(dims) > MAX_DIMS:
            raise _fail(path, "inputs", f"more than {MAX_DIMS} symbolic dims")
        names.add(name)
        out.append((name, dtype, tuple(shape)))
    return out


def _check_ref(ref: Any, values: Mapping[str, int], path: str, where: str) -> None:
    if not isinstance(ref, str) or len(ref) > 220:
        raise _fail(path, where, f"a value reference must be a string, found {_short(ref)}")
    if ref in values:
        if values[ref] != 1:
            raise _fail(path, where, f"{ref!r} has {values[ref]} results: name one as '{ref}:0'")
        return
    base, _, index = ref.rpartition(":")
    if base in values and _INDEX.fullmatch(index) and int(index) < values[base] and values[base] != 1:
        return  # NAME:i, i in ASCII digits without leading zeros: the one spelling every build looks up
    raise _fail(path, where, f"uses {ref!r}, which is not an input or an earlier node (a cycle or a dangling input)")


def _node(raw: Any, i: int, values: Mapping[str, int], tensors: Mapping[str, tuple[int, ...]], path: str) -> Node:
    if not isinstance(raw, dict):
        raise _fail(path, f"node {i}", f"must be an object, found {_short(raw)}")
    name, op = raw.get("name"), raw.get("op")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in values:
        raise _fail(path, f"node {i}", f"bad or repeated name {_short(name)}")
    where = f"node {name!r}"
    spec = OPS.get(op) if isinstance(op, str) else None
    if spec is None:
        raise _fail(path, where, f"op {_short(op)} is not in the vocabulary of IR version {IR_VERSION}")
    where = f"node {name!r} ({op})"
    extra = set(raw) - {"name", "op", "inputs", "params", "attrs"}
    if extra:
        raise _fail(path, where, f"unknown fields {sorted(extra)[:5]}")
    refs = raw.get("inputs", [])
    if not isinstance(refs, list) or not spec.inputs[0] <= len(refs) <= spec.inputs[1]:
        raise _fail(path, where, f"takes {spec.inputs[0]} to {spec.inputs[1]} inputs, found {_short(refs)}")
    for ref in refs:
        _check_ref(ref, values, path, where)
    params = raw.get("params", {})
    if not isinstance(params, dict) or set(params) - set(spec.params):
        raise _fail(path, where, f"parameter roles must be among {sorted(spec.params)}, found {_short(params)}")
    for role, required in spec.params.items():
        if role not in params:
            if required:
                raise _fail(path, where, f"needs parameter {role!r}")
            continue
        tensor = params[role]
        if not isinstance(tensor, str) or tensor not in tensors:
            raise _fail(path, where, f"parameter {role!r} names {_short(tensor)}, which the file does not hold")
        rank = spec.param_ranks.get(role)
        if rank is not None and len(tensors[tensor]) != rank:
            raise _fail(path, where, f"parameter {role!r} ({tensor!r}) must have {rank} dims, found shape {list(tensors[tensor])}")
    attrs = raw.get("attrs", {})
    if not isinstance(attrs, dict) or set(attrs) - set(spec.attrs):
        raise _fail(path, where, f"attributes must be among {sorted(spec.attrs)}, found {_short(attrs)}")
    filled = {}
    for key, attr in spec.attrs.items():
        if key not in attrs:
            if attr.required:
                raise _fail(path, where, f"needs attribute {key!r}")
            filled[key] = attr.default
        elif not attr.check(attrs[key]):
            raise _fail(path, where, f"attribute {key!r} is out of range or of the wrong type: {_short(attrs[key])}")
        else:
            filled[key] = attrs[key]
    outputs = spec.outputs if spec.outputs is not None else len(filled["sizes"])
    if not 1 <= outputs <= 1024:
        raise _fail(path, where, f"must give 1 to 1024 results, found {outputs}")
    _check_shapes(op, {r: tensors[t] for r, t in params.items()}, filled, path, where)
    return Node(name, op, tuple(refs), dict(params), filled, outputs)


def _check_shapes(op: str, shapes: Mapping[str, tuple[int, ...]], attrs: Mapping[str, Any], path: str, where: str) -> None:
    """Parameter shapes that must agree with each other or with the attributes."""
    weight = shapes.get("weight")
    if op == "linear" and "bias" in shapes:
        out = weight[0] if attrs["weight_layout"] == "out_in" else weight[1]  # type: ignore[index]
        if shapes["bias"] != (out,):
            raise _fail(path, where, f"bias of shape {list(shapes['bias'])} does not fit weight {list(weight)}")  # type: ignore[arg-type]
    if op in ("conv1d", "conv2d"):
        out = weight[0] if attrs["kernel_layout"] == "out_in_spatial" else weight[-1]  # type: ignore[index]
        if "bias" in shapes and shapes["bias"] != (out,):
            raise _fail(path, where, f"bias of shape {list(shapes['bias'])} does not fit weight {list(weight)}")  # type: ignore[arg-type]
        if out % attrs["groups"]:
            raise _fail(path, where, f"{out} output channels do not divide into {attrs['groups']} groups")
    if op.startswith(("max_pool", "avg_pool")) and isinstance(attrs["padding"], list):
        if any(side > k // 2 for pair, k in zip(attrs["padding"], attrs["kernel"]) for side in pair):
            raise _fail(path, where, f"padding {attrs['padding']} is more than half of kernel {attrs['kernel']}")
    if op in ("conv1d", "conv2d") and isinstance(attrs["padding"], list):
        spatial = weight[2:] if attrs["kernel_layout"] == "out_in_spatial" else weight[:-2]  # type: ignore[index]
        extents = [(k - 1) * d for k, d in zip(spatial, attrs["dilation"])]
        if any(side > e for pair, e in zip(attrs["padding"], extents) for side in pair):
            raise _fail(path, where, f"padding {attrs['padding']} is more than the kernel covers ({extents})")
    if op == "batch_norm" and len({s for s in shapes.values()}) > 1:
        raise _fail(path, where, f"scale, offset, mean and var must have one shape, found {dict(shapes)}")
    if op == "multi_head_attention":
        w, heads = shapes["in_proj_weight"], attrs["num_heads"]
        if w[0] != 3 * w[1] or w[1] % heads or shapes["out_proj_weight"] != (w[1], w[1]):
            raise _fail(path, where, f"in_proj_weight {list(w)} / out_proj_weight {list(shapes['out_proj_weight'])} "
                                     f"do not fit {heads} heads")  # fmt: skip


def dump_graph(graph: Mapping[str, Any]) -> str:
    """The graph's JSON as stored (compact; ``graph`` as :func:`parse_graph` reads it)."""
    return json.dumps({"ir_version": IR_VERSION, **graph}, separators=(",", ":"), allow_nan=False)


def value_names(nodes: Sequence[Node]) -> list[str]:
    """Every value a node defines, in order (``split`` nodes give ``name:0``, ``name:1``...)."""
    return [n.name if n.outputs == 1 else f"{n.name}:{i}" for n in nodes for i in range(n.outputs)]
