"""A jaxpr as nodes of a model graph: the translator behind :mod:`.capture_jax`.

The model is traced twice, at batch sizes 2 and 3 (concrete shapes, so that ``jnp`` indexing stays
``slice`` and every shape is known), and the two jaxprs are walked in lockstep: a dim that differs
between them derives from the batch size (:class:`Batch`), every other size, literal and parameter of
an equation must be equal in both, or the model's computation depends on the batch size and is
refused. Equations of ``jit``, ``custom_jvp_call`` and ``custom_vjp_call`` are inlined, except the
``jit`` equations :mod:`.capture_jax` makes of layer calls (their name starts with :data:`TAG`), which
it translates itself (``on_call``).

Primitives (spec: ``jax/_src/lax/lax.py``) map to ops of the vocabulary: ``add sub mul div`` (scalar
operands become ``constant`` nodes), ``max(x, 0)`` -> ``relu``, ``logistic`` -> ``sigmoid``, ``tanh``,
``square`` / ``integer_pow 2`` -> ``mul``, ``neg``, ``reshape`` (a batch-derived size as ``"$k"`` when
it is the operand's dim k, else ``-1``), ``broadcast_in_dim`` (NumPy broadcasting of the next
elementwise op), ``squeeze``, ``transpose``, ``concatenate``, ``split``, ``slice``, ``dot_general``
(``linear`` on a parameter, else ``matmul``), ``reduce_sum`` then ``div`` by the count -> ``mean``,
``reduce_window_max`` / ``reduce_window_sum`` then ``div`` (``nnx.max_pool`` / ``nnx.avg_pool``) ->
``max_pool`` / ``avg_pool``. Anything else is refused with
:class:`~tensorfile.model.graph.UnsupportedArchitectureError` naming the equation, its primitive and
the user's source line: data-dependent control flow (``cond``, ``while``, ``scan``), randomness,
Python callbacks and custom kernels, and every primitive outside the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .graph import UnsupportedArchitectureError

__all__ = ["TAG", "Batch", "Value", "Param", "Const", "Other", "Translator", "fail"]

#: The name prefix of the ``jit`` equations that stand for a layer call.
TAG = "tensorfile_call_"
_CONTROL = {"cond", "while", "scan", "switch"}
_EFFECTS = {"debug_callback", "debug_print", "pure_callback", "io_callback", "pallas_call", "custom_call", "random_bits",
            "random_seed", "random_wrap", "random_unwrap", "random_fold_in", "random_split", "threefry2x32"}  # fmt: skip
_INLINE = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
           "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
           "remat": "jaxpr", "checkpoint": "jaxpr"}  # fmt: skip


def fail(where: str, what: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(f"model (Flax NNX): {where}: {what}")


@dataclass(frozen=True)
class Batch:
    """A size that derives from the batch size: ``first`` in the first trace, ``second`` in the second."""

    first: int
    second: int

    def __str__(self) -> str:
        return f"batch-derived ({self.first} / {self.second})"


@dataclass(frozen=True)
class Value:
    """A value of the graph (an input or a node's result) and its shape (ints and :class:`Batch` dims)."""

    ref: str
    shape: tuple[Any, ...]


@dataclass(frozen=True)
class Param:
    """A tensor of the file (a Param or BatchStat of the module's state)."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Const:
    """A scalar constant of the trace (a literal)."""

    value: float | int
    dtype: str


@dataclass(frozen=True)
class Scaled:
    """``value * factor``, kept lazy: a ``reduce_sum`` is a ``mean`` times the count, which the ``div`` by
    that count (``jnp.mean``, ``avg_pool``) takes back."""

    value: Value
    factor: int


@dataclass(frozen=True)
class Other:
    """A state variable that is not a parameter (an RNG key or count)."""

    name: str


def merge_shape(first: Sequence[int], second: Sequence[int]) -> tuple[Any, ...]:
    """One shape of two traces: the dims that differ as :class:`Batch`."""
    return tuple(int(a) if a == b else Batch(int(a), int(b)) for a, b in zip(first, second))


def _same(first: Any, second: Any) -> bool:
    try:
        return bool(first == second)
    except Exception:  # arrays and other objects without a plain ==
        return first is second


def _merge(first: Any, second: Any, where: str) -> Any:
    """One equation parameter of two traces: equal, or sizes that differ as :class:`Batch`."""
    if _same(first, second):
        return first
    if isinstance(first, (tuple, list)) and isinstance(second, (tuple, list)) and len(first) == len(second):
        return tuple(_merge(a, b, where) for a, b in zip(first, second))
    if isinstance(first, (int, np.integer)) and isinstance(second, (int, np.integer)) and not isinstance(first, bool):
        return Batch(int(first), int(second))
    raise fail(where, f"differs with the batch size ({str(first)[:60]} / {str(second)[:60]}): the computation "
                      "depends on the batch size")  # fmt: skip


def _where(eqn: Any) -> str:
    try:
        from jax._src import source_info_util

        return source_info_util.summarize(eqn.source_info)
    except Exception:  # pragma: no cover - a jax without it
        return "?"


class Translator:
    """Walks two jaxprs of one model in lockstep, keeping for each variable (of the first) what it is in the
    graph (:class:`Value`, :class:`Param`, :class:`Const`, :class:`Scaled`, :class:`Other`), and appends
    nodes (dicts of ``docs/FORMAT.md``, "Model graphs") to :attr:`nodes`.

    Args:
        on_call: ``(translator, tag, operands, shape, where) -> Value`` for the ``jit`` equations named
            :data:`TAG`... (layer calls).
        taken: names nodes may not take (the graph's inputs).
    """

    def __init__(self, on_call: Callable[..., Value], taken: set[str]) -> None:
        self.on_call = on_call
        self.nodes: list[dict[str, Any]] = []
        self.taken, self.inputs = set(taken), set(taken)
        self.materialized: dict[Any, Value] = {}

    def fresh(self, base: str) -> str:
        """A node name not taken yet: ``base``, else ``base_1``..."""
        base = base.replace(":", "_") or "model"
        if not (base[0].isalpha() or base[0] == "_"):
            base = "n_" + base
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name

    def emit(self, base: str, op: str, inputs: Sequence[Value], shape: tuple[Any, ...], params: dict[str, str] | None = None,
             attrs: dict[str, Any] | None = None) -> Value:  # fmt: skip
        """Append a node; its result."""
        node: dict[str, Any] = {"name": self.fresh(base), "op": op, "inputs": [v.ref for v in inputs]}
        if params:
            node["params"] = params
        if attrs:
            node["attrs"] = attrs
        self.nodes.append(node)
        return Value(node["name"], tuple(shape))

    def value(self, item: Any, where: str) -> Value:
        """``item`` as a graph value: parameters and scalars become ``constant`` nodes (once each)."""
        if isinstance(item, Value):
            return item
        if isinstance(item, Scaled):
            factor = self.value(Const(float(item.factor), "float32"), where)
            return self.emit("mul", "mul", [item.value, factor], item.value.shape)
        if isinstance(item, Other):
            raise fail(where, f"uses the state variable {item.name!r}, which is not a parameter (an RNG key or "
                              "count: randomness is not part of a model graph)")  # fmt: skip
        key = ("param", item.name) if isinstance(item, Param) else ("const", item.value, item.dtype)
        if key not in self.materialized:
            if isinstance(item, Param):
                self.materialized[key] = self.emit(
                    f"{item.name}.value", "constant", [], item.shape, {"value": item.name}
                )
            else:
                attrs = {"value": item.value, "dtype": item.dtype}
                self.materialized[key] = self.emit("const", "constant", [], (), attrs=attrs)
        return self.materialized[key]

    def output(self, item: Any) -> str:
        """A graph output's reference (an ``identity`` node where it would name an input)."""
        value = self.value(item, "an output")
        return self.emit("output", "identity", [value], value.shape).ref if value.ref in self.inputs else value.ref

    def check(self, closed: Any) -> None:
        """Refuse control flow, callbacks, randomness and custom kernels anywhere in the trace (before any
        other refusal, which would hide them)."""
        for i, eqn in enumerate(closed.jaxpr.eqns):
            name = eqn.primitive.name
            where = f"equation {i} ({name}) at {_where(eqn)}"
            if name in _CONTROL:
                raise fail(where, "data-dependent control flow is not part of a model graph")
            if name in _EFFECTS:
                raise fail(where, "a Python callback, randomness or custom kernel is not part of a model graph")
            if name in _INLINE and not str(eqn.params.get("name", "")).startswith(TAG):
                self.check(_closed(eqn.params[_INLINE[name]]))

    def run(self, first: Any, second: Any, env: dict[Any, Any]) -> list[Any]:
        """Translate the closed jaxprs ``first`` and ``second`` (the same computation at two batch sizes);
        ``env`` maps the first's input variables to what they are. The outputs, as items."""
        from jax.extend.core import Literal

        j1, j2 = first.jaxpr, second.jaxpr
        if len(j1.eqns) != len(j2.eqns) or len(j1.constvars) != len(j2.constvars):
            raise fail("the trace", "has another structure at another batch size: the computation depends on it")
        for var, c1, c2 in zip(j1.constvars, first.consts, second.consts):
            if np.shape(c1) != np.shape(c2) or not np.array_equal(np.asarray(c1), np.asarray(c2)):
                raise fail("the trace", "a constant array that depends on the batch size")
            env[var] = self.constant(c1, "a constant of the trace")
        for i, (e1, e2) in enumerate(zip(j1.eqns, j2.eqns)):
            name = e1.primitive.name
            where = f"equation {i} ({name}) at {_where(e1)}"
            if e2.primitive.name != name or len(e1.invars) != len(e2.invars) or len(e1.outvars) != len(e2.outvars):
                raise fail(where, "the trace has another structure at another batch size")
            ins = []
            for v1, v2 in zip(e1.invars, e2.invars):
                if isinstance(v1, Literal):
                    if not np.array_equal(np.asarray(v1.val), np.asarray(v2.val)):
                        raise fail(where, f"the constant {str(v1.val)[:40]} depends on the batch size")
                    ins.append(self.constant(v1.val, where))
                else:
                    ins.append(env[v1])
            outs = self.equation(e1, e2, name, ins, where)
            for var, out in zip(e1.outvars, outs):
                env[var] = out
        return [self.constant(v.val, "an output") if isinstance(v, Literal) else env[v] for v in j1.outvars]

    def constant(self, value: Any, where: str) -> Const:
        array = np.asarray(value)
        if array.size != 1 or array.dtype.kind not in "fiub":
            raise fail(where, f"a constant array of shape {list(array.shape)} and dtype {array.dtype} is not part of "
                              "the vocabulary (only scalars are; keep arrays as nnx.Param or nnx.BatchStat)")  # fmt: skip
        scalar = array.reshape(()).item()
        if array.dtype.kind == "f":
            return Const(float(scalar), "float64" if array.dtype == np.float64 else "float32")
        return Const(int(scalar), "int64" if array.dtype.itemsize == 8 else "int32")

    def equation(self, e1: Any, e2: Any, name: str, ins: list[Any], where: str) -> list[Any]:
        shapes = [merge_shape(a.aval.shape, b.aval.shape) for a, b in zip(e1.outvars, e2.outvars)]
        if name in ("jit", "pjit") and str(e1.params.get("name", "")).startswith(TAG):
            return [self.on_call(self, e1.params["name"], ins, shapes[0], where)]
        if name in _INLINE:
            inner1, inner2 = e1.params[_INLINE[name]], e2.params[_INLINE[name]]
            closed1, closed2 = (_closed(inner1), _closed(inner2))
            env = dict(zip(closed1.jaxpr.invars, ins[len(ins) - len(closed1.jaxpr.invars) :]))
            return self.run(closed1, closed2, env)
        if name in _CONTROL:
            raise fail(where, "data-dependent control flow is not part of a model graph")
        if name in _EFFECTS:
            raise fail(where, "a Python callback, randomness or custom kernel is not part of a model graph")
        if name == "convert_element_type" and e1.invars[0].aval.dtype == np.dtype(e1.params["new_dtype"]):
            return ins  # a weak type made strong, or no change
        handler = _HANDLERS.get(name)
        if handler is None:
            raise fail(where, f"the primitive {name!r} is outside the vocabulary of model graphs")
        params = {k: _merge(v, e2.params[k], f"{where}: parameter {k!r}") for k, v in e1.params.items()}
        result = handler(self, ins, params, shapes, where)
        return result if isinstance(result, list) else [result]


def _closed(inner: Any) -> Any:
    """A sub-jaxpr as a closed jaxpr (``jaxpr`` and ``consts``)."""
    if hasattr(inner, "consts"):
        return inner
    from jax.extend.core import ClosedJaxpr

    return ClosedJaxpr(inner, ())


# -- primitives -------------------------------------------------------------------------------------------------------

_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div"}
_UNARY = {"tanh": "tanh", "logistic": "sigmoid"}


def _binary(op: str) -> Callable[..., Any]:
    def handle(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
        a, b = ins
        if op == "div" and isinstance(a, Scaled) and isinstance(b, Const) and b.value == a.factor:
            return a.value  # sum / count: the mean itself
        if isinstance(a, Const) and isinstance(b, Const):
            raise fail(where, "arithmetic on two constants")
        return t.emit(op, op, [t.value(a, where), t.value(b, where)], shapes[0])

    return handle


def _unary(op: str) -> Callable[..., Any]:
    return lambda t, ins, params, shapes, where: t.emit(op, op, [t.value(ins[0], where)], shapes[0])


def _max(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    consts = [v for v in ins if isinstance(v, Const)]
    others = [v for v in ins if not isinstance(v, Const)]
    if len(consts) == 1 and consts[0].value == 0 and len(others) == 1:
        return t.emit("relu", "relu", [t.value(others[0], where)], shapes[0])
    raise fail(where, "max of two values (other than max(x, 0), a relu) is outside the vocabulary")


def _square(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    if "y" in params and params["y"] != 2:
        raise fail(where, f"x ** {params['y']} is outside the vocabulary (only x ** 2, as x * x)")
    x = t.value(ins[0], where)
    return t.emit("mul", "mul", [x, x], shapes[0])


def _neg(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    return t.emit("neg", "mul", [t.value(ins[0], where), t.value(Const(-1.0, "float32"), where)], shapes[0])


def _alias(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    return ins[0]


def _convert(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    new = np.dtype(params["new_dtype"])
    if isinstance(ins[0], Const):
        return Const(float(ins[0].value) if new.kind == "f" else int(ins[0].value), new.name)
    raise fail(where, f"a conversion to {new.name} is outside the vocabulary")


def _shape_spec(operand: Sequence[Any], target: Sequence[Any], where: str) -> list[Any]:
    """A reshape's target sizes as the vocabulary writes them: ints, ``"$k"`` for a symbolic dim equal to the
    operand's dim k, and ``-1`` for one other symbolic size."""
    spec: list[Any] = []
    for d in target:
        if isinstance(d, (int, np.integer)):
            spec.append(int(d))
            continue
        same = [k for k, s in enumerate(operand) if not isinstance(s, (int, np.integer)) and s == d and k < 10]
        spec.append(f"${same[0]}" if same else -1)
    if spec.count(-1) > 1:
        raise fail(where, f"a reshape to {list(map(str, target))} has more than one size derived from the batch")
    return spec


def _keep_scaled(handler: Callable[..., Any]) -> Callable[..., Any]:
    """A shape op applied to the value of a :class:`Scaled` (``jnp.mean(..., keepdims=True)`` reshapes the sum
    before it divides)."""

    def handle(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
        if isinstance(ins[0], Scaled):
            return Scaled(handler(t, [ins[0].value], params, shapes, where), ins[0].factor)
        return handler(t, ins, params, shapes, where)

    return handle


def _reshape(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    if params.get("dimensions") is not None:
        raise fail(where, "a reshape with a transposition (dimensions) is outside the vocabulary")
    x = t.value(ins[0], where)
    if tuple(x.shape) == tuple(shapes[0]):
        return x
    return t.emit("reshape", "reshape", [x], shapes[0], attrs={"shape": _shape_spec(x.shape, shapes[0], where)})


def _broadcast(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    """``broadcast_in_dim``: new axes as size-1 dims (``reshape``); sizes 1 -> n are left to the NumPy
    broadcasting of the elementwise op that uses the result (what ``jnp`` broadcasting traced into)."""
    if isinstance(ins[0], Const):
        return ins[0]
    x = t.value(ins[0], where)
    target, dims = shapes[0], params["broadcast_dimensions"]
    kept = [1] * len(target)
    for src, dst in enumerate(dims):
        kept[dst] = x.shape[src]
    if list(kept[len(target) - len(x.shape) :]) == list(x.shape) and all(
        k == 1 for k in kept[: len(target) - len(x.shape)]
    ):
        return x  # NumPy broadcasting adds the leading axes itself
    return t.emit("reshape", "reshape", [x], tuple(kept), attrs={"shape": _shape_spec(x.shape, kept, where)})


def _squeeze(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    x = t.value(ins[0], where)
    for axis in sorted(params["dimensions"], reverse=True):
        shape = x.shape[:axis] + x.shape[axis + 1 :]
        x = t.emit("squeeze", "squeeze", [x], shape, attrs={"axis": int(axis)})
    return x


def _transpose(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    return t.emit("permute", "permute", [t.value(ins[0], where)], shapes[0],
                  attrs={"dims": [int(d) for d in params["permutation"]]})  # fmt: skip


def _concatenate(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    return t.emit(
        "concat", "concat", [t.value(v, where) for v in ins], shapes[0], attrs={"axis": int(params["dimension"])}
    )


def _split(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    sizes = [int(s) for s in params["sizes"]]
    value = t.emit("split", "split", [t.value(ins[0], where)], (), attrs={"axis": int(params["axis"]), "sizes": sizes})
    return [Value(f"{value.ref}:{i}", shape) for i, shape in enumerate(shapes)]


def _slice(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    x = t.value(ins[0], where)
    strides = params.get("strides") or (1,) * len(x.shape)
    for axis, (start, stop, step) in enumerate(zip(params["start_indices"], params["limit_indices"], strides)):
        if start == 0 and stop == x.shape[axis] and step == 1:
            continue
        if not all(isinstance(v, (int, np.integer)) for v in (start, stop, step)):
            raise fail(where, "a slice with bounds derived from the batch size")
        shape = x.shape[:axis] + (shapes[0][axis],) + x.shape[axis + 1 :]
        x = t.emit(
            "slice",
            "slice",
            [x],
            shape,
            attrs={"axis": axis, "start": int(start), "stop": int(stop), "step": int(step)},
        )
    return x


def _dot_general(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    a, b = ins
    if isinstance(a, (Param, Const)):
        raise fail(where, "a product with a parameter on the left is outside the vocabulary (write x @ w)")
    x = t.value(a, where)
    rank_a = len(x.shape)
    brank = len(b.shape) if isinstance(b, (Param, Value)) else 0
    if tuple(lc) != (rank_a - 1,):
        raise fail(where, f"a dot_general contracting lhs dims {tuple(lc)} is outside the vocabulary (the last only)")
    if isinstance(b, Param) and brank == 2 and not lb and not rb and tuple(rc) in ((0,), (1,)):
        layout = "in_out" if tuple(rc) == (0,) else "out_in"
        return t.emit("linear", "linear", [x], shapes[0], {"weight": b.name}, {"weight_layout": layout})
    y = t.value(b, where)
    batch = tuple(range(len(lb)))
    if tuple(lb) != batch or tuple(rb) != batch or (brank != 2 and rank_a != brank):
        raise fail(where, f"a dot_general with batch dims {tuple(lb)}/{tuple(rb)} is outside the vocabulary")
    if tuple(rc) == (brank - 1,) and brank >= 2:
        tshape = y.shape[:-2] + (y.shape[-1], y.shape[-2])
        y = t.emit("transpose", "transpose", [y], tshape, attrs={"dim0": -1, "dim1": -2})
    elif tuple(rc) != (max(brank - 2, 0),):
        raise fail(where, f"a dot_general contracting rhs dims {tuple(rc)} is outside the vocabulary")
    return t.emit("matmul", "matmul", [x, y], shapes[0])


def _count(shape: Sequence[Any], axes: Sequence[int], where: str) -> int:
    sizes = [shape[a] for a in axes]
    if not all(isinstance(s, (int, np.integer)) for s in sizes):
        raise fail(where, "a sum over the batch dim")
    return int(math.prod(sizes))


def _reduce_sum(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
    x = t.value(ins[0], where)
    axes = [int(a) for a in params["axes"]]
    mean = t.emit("mean", "mean", [x], shapes[0], attrs={"axes": axes, "keepdims": False})
    return Scaled(mean, _count(x.shape, axes, where))


def _window(kind: str) -> Callable[..., Any]:
    """``reduce_window_max`` / ``reduce_window_sum`` over the spatial dims of channels-last or channels-first
    data (``flax.linen.pooling.pool``, what ``nnx.max_pool`` / ``nnx.avg_pool`` call)."""

    def handle(t: Translator, ins: list[Any], params: Any, shapes: list[Any], where: str) -> Any:
        x = t.value(ins[0], where)
        window, strides = list(params["window_dimensions"]), list(params["window_strides"])
        pads = [list(map(int, p)) for p in params["padding"]]
        rank = len(window) - 2
        dilated = any(d != 1 for d in list(params["base_dilation"]) + list(params["window_dilation"]))
        last = window[-1] == 1 and strides[-1] == 1 and pads[-1] == [0, 0]
        spatial = list(range(1, rank + 1)) if last else list(range(2, rank + 2))
        others = [a for a in range(len(window)) if a not in spatial]
        if rank not in (1, 2) or dilated or any(window[a] != 1 or strides[a] != 1 or pads[a] != [0, 0] for a in others):
            raise fail(
                where, f"a pooling window {window} (strides {strides}) is not a 1-d / 2-d pooling of batched data"
            )
        padding = [pads[a] for a in spatial]
        attrs: dict[str, Any] = {"kernel": [window[a] for a in spatial], "stride": [strides[a] for a in spatial],
                                 "padding": padding if any(p != [0, 0] for p in padding) else "valid",
                                 "data_format": "channels_last" if last else "channels_first"}  # fmt: skip
        if kind == "max":
            return t.emit("max_pool", f"max_pool{rank}d", [x], shapes[0], attrs=attrs)
        attrs["count_include_pad"] = True
        pooled = t.emit("avg_pool", f"avg_pool{rank}d", [x], shapes[0], attrs=attrs)
        return Scaled(pooled, int(math.prod(attrs["kernel"])))

    return handle


_HANDLERS: dict[str, Callable[..., Any]] = {
    **{prim: _binary(op) for prim, op in _BINARY.items()},
    **{prim: _unary(op) for prim, op in _UNARY.items()},
    "max": _max,
    "square": _square,
    "integer_pow": _square,
    "neg": _neg,
    "copy": _alias,
    "copy_p": _alias,
    "stop_gradient": _alias,
    "optimization_barrier": _alias,
    "convert_element_type": _convert,
    "reshape": _keep_scaled(_reshape),
    "broadcast_in_dim": _keep_scaled(_broadcast),
    "squeeze": _squeeze,
    "transpose": _transpose,
    "concatenate": _concatenate,
    "split": _split,
    "slice": _slice,
    "dot_general": _dot_general,
    "reduce_sum": _reduce_sum,
    "reduce_window_max": _window("max"),
    "reduce_window_sum": _window("sum"),
}
