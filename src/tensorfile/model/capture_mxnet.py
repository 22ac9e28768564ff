"""Capture an MXNet Gluon block as a model graph: :func:`capture` (MXNet 1.9, legacy or NumPy mode).

How: the block is called once on a symbol (``block(mx.sym.var("data"))``, as ``HybridBlock.export``
traces it; a plain ``Block`` whose ``forward`` only calls hybrid blocks traces the same way), and the
symbol's JSON nodes (``Symbol.tojson()``) become nodes of the vocabulary. Symbol variables that are
parameters are named by the block's structure, as :func:`tensorfile.save_parameters` and Gluon's own
``save_parameters`` name them (``hidden.weight``, ``net.0.bias``), not by Gluon's global names
(``dense0_weight``). Node names follow the same structure (``hidden``, ``hidden.relu``). Shapes come
from ``infer_shape`` at the example inputs' shapes. Spec followed: MXNet 1.9 operator docs
(``src/operator/nn/*.cc``) and ``python/mxnet/gluon/nn/{basic,conv}_layers.py``:

===================================================  =============================================
``FullyConnected`` (``nn.Dense``)                     ``linear`` (``out_in``); ``flatten=True`` (the
                                                      default) first flattens all dims after the first
``Convolution`` 1-d / 2-d (``nn.Conv1D/2D``), NC(H)W  ``conv1d`` / ``conv2d`` (``out_in_spatial``)
``Pooling`` max / avg, ``global_pool``                ``max_pool*d`` / ``avg_pool*d`` /
                                                      ``adaptive_avg_pool2d``; ``pooling_convention``
                                                      ``full`` only where it gives ``valid``'s shape
``BatchNorm`` (inference: running statistics)         ``batch_norm``; ``fix_gamma`` drops the scale
``LayerNorm`` over the last axis                      ``layer_norm``
``Embedding``                                         ``embedding``
``Dropout`` (not ``mode="always"``)                   ``dropout``
``Activation`` relu / sigmoid / tanh, ``relu``,       ``relu`` / ``sigmoid`` / ``tanh`` / ``gelu``
``sigmoid``, ``tanh``, ``LeakyReLU`` gelu (erf)
``softmax`` (one axis, no temperature, no length)     ``softmax``
elementwise / broadcast / ``_npi_`` add sub mul div,  ``add`` / ``sub`` / ``mul`` / ``div``
their ``_scalar`` forms                               (with a ``constant`` node)
``dot``, ``batch_dot``, ``_npi_matmul``               ``matmul`` (``transpose`` first where asked)
``Flatten``, ``Reshape`` / ``_np_reshape`` /          ``flatten`` / ``reshape`` / ``permute`` /
``_npx_reshape`` (codes 0 / -2 copy, -1 infer),       ``transpose`` / ``unsqueeze`` / ``squeeze`` /
``transpose``, ``SwapAxis``, ``expand_dims``,         ``concat`` / ``mean`` / ``slice`` / ``split``
``squeeze``, ``Concat``, ``mean``, ``slice_axis``,
``SliceChannel`` / ``_split_v2`` (equal sections)
===================================================  =============================================

Anything else (``Custom`` operators, control flow ``_foreach`` / ``_while_loop`` / ``_cond``, random
samplers, ``exp``...) is refused with :class:`~tensorfile.model.graph.UnsupportedArchitectureError`
naming the node and the op.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from typing import Any, Callable, Sequence

from .graph import UnsupportedArchitectureError

__all__ = ["capture"]

_SCALAR = {"_plus_scalar": ("add", False), "_minus_scalar": ("sub", False), "_rminus_scalar": ("sub", True),
           "_mul_scalar": ("mul", False), "_div_scalar": ("div", False), "_rdiv_scalar": ("div", True),
           "_npi_add_scalar": ("add", False), "_npi_subtract_scalar": ("sub", False),
           "_npi_rsubtract_scalar": ("sub", True), "_npi_multiply_scalar": ("mul", False),
           "_npi_true_divide_scalar": ("div", False), "_npi_rtrue_divide_scalar": ("div", True)}  # fmt: skip
_BINARY = {op: kind for kind, names in {
    "add": ("elemwise_add", "broadcast_add", "broadcast_plus", "_plus", "_Plus", "_add", "_npi_add"),
    "sub": ("elemwise_sub", "broadcast_sub", "broadcast_minus", "_minus", "_Minus", "_sub", "_npi_subtract"),
    "mul": ("elemwise_mul", "broadcast_mul", "_mul", "_Mul", "_npi_multiply"),
    "div": ("elemwise_div", "broadcast_div", "_div", "_Div", "_npi_true_divide"),
}.items() for op in names}  # fmt: skip
_UNARY = {"relu": "relu", "_npx_relu": "relu", "sigmoid": "sigmoid", "_npx_sigmoid": "sigmoid", "tanh": "tanh",
          "_npi_tanh": "tanh", "identity": "identity", "_copy": "identity", "_np_copy": "identity",
          "BlockGrad": "identity", "stop_gradient": "identity"}  # fmt: skip
_CONTROL = {"_foreach", "_while_loop", "_cond"}
_AUTO = re.compile(r"_*[a-z_]+?\d+")


def _fail(where: str, what: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(f"model (MXNet Gluon): {where}: {what}")


def _lit(text: Any) -> Any:
    """An attribute of the symbol's JSON (always a string there) as a Python value: ``"(3, 3)"`` -> (3, 3),
    ``"True"`` -> True, ``"relu"`` -> "relu" (``ast.literal_eval``: evaluates literals only)."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _ints(value: Any, rank: int, default: int) -> list[int]:
    if value is None or value == ():
        return [default] * rank
    return [int(v) for v in (value if isinstance(value, (tuple, list)) else (value,) * rank)]


class _Capture:
    """The symbol's nodes, walked in order, as graph nodes."""

    def __init__(self, nodes: list[dict[str, Any]], shapes: dict[tuple[int, int], tuple[int, ...]],
                 params: dict[str, str], inputs: dict[str, str], prefixes: list[tuple[str, str]]) -> None:  # fmt: skip
        self.raw, self.shapes, self.params, self.prefixes = nodes, shapes, params, prefixes
        self.refs: dict[tuple[int, int], str] = {}
        self.nodes: list[dict[str, Any]] = []
        self.taken = set(inputs.values())
        for nid, node in enumerate(nodes):
            if node["op"] == "null" and node["name"] in inputs:
                self.refs[(nid, 0)] = inputs[node["name"]]

    def fresh(self, base: str) -> str:
        base = base.strip("._") or "node"
        if not (base[0].isalpha() or base[0] == "_"):
            base = "n_" + base
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name

    def structural(self, mx_name: str) -> str:
        """A node's name by the block structure: ``dense0_fwd`` -> ``hidden``, ``conv0_relu_fwd`` ->
        ``net.0.relu`` (the longest block prefix it starts with)."""
        for prefix, path in self.prefixes:
            if mx_name.startswith(prefix):
                rest = mx_name[len(prefix) :]
                for tail in ("_fwd", "fwd"):
                    rest = rest[: -len(tail)] if rest.endswith(tail) else rest
                if _AUTO.fullmatch(rest):  # an operator's own counter name (flatten0, _mulscalar0)
                    rest = "" if path else rest.strip("_0123456789")
                return ".".join(p for p in (path, rest) if p)
        return mx_name

    def emit(self, base: str, op: str, inputs: Sequence[str], params: dict[str, str] | None = None,
             attrs: dict[str, Any] | None = None) -> str:  # fmt: skip
        node: dict[str, Any] = {"name": self.fresh(base), "op": op, "inputs": list(inputs)}
        if params:
            node["params"] = params
        if attrs:
            node["attrs"] = attrs
        self.nodes.append(node)
        return node["name"]

    def run(self) -> None:
        for nid, node in enumerate(self.raw):
            op = node["op"]
            if op == "null":
                continue
            where = f"node {node['name']!r} ({op})"
            handler = _HANDLERS.get(op)
            if handler is None:
                if op in _CONTROL:
                    raise _fail(where, "control flow is not part of a model graph")
                raise _fail(where, f"the operator {op!r} is outside the vocabulary of model graphs")
            attrs = {k: _lit(v) for k, v in (node.get("attrs") or {}).items() if not k.startswith("__")}
            entries = [(int(e[0]), int(e[1])) for e in node["inputs"]]
            result = handler(self, _Node(nid, node["name"], op, entries, attrs, where))
            for i, ref in enumerate(result if isinstance(result, list) else [result]):
                self.refs[(nid, i)] = ref

    def value(self, entry: tuple[int, int], where: str) -> str:
        if entry in self.refs:
            return self.refs[entry]
        name = self.raw[entry[0]]["name"]
        if name in self.params:  # a parameter used as data: a constant node of it
            ref = self.emit(f"{self.params[name]}.value", "constant", [], {"value": self.params[name]})
            self.refs[entry] = ref
            return ref
        raise _fail(where, f"uses {name!r}, which is neither an input nor a parameter of the block")

    def param(self, entry: tuple[int, int], where: str) -> str:
        name = self.raw[entry[0]]["name"]
        if self.raw[entry[0]]["op"] != "null" or name not in self.params:
            raise _fail(
                where,
                f"takes its weights from {name!r}, which is computed: only parameters of the block can be weights",
            )
        return self.params[name]

    def shape(self, entry: tuple[int, int], where: str) -> tuple[int, ...]:
        if entry not in self.shapes:
            raise _fail(where, "the shape of an operand is unknown (infer_shape gave none)")
        return self.shapes[entry]


class _Node:
    def __init__(self, nid: int, name: str, op: str, entries: list[tuple[int, int]], attrs: dict[str, Any], where: str):
        self.nid, self.name, self.op, self.entries, self.attrs, self.where = nid, name, op, entries, attrs, where


# -- operators --------------------------------------------------------------------------------------------------------


def _fully_connected(c: _Capture, n: _Node) -> str:
    x = c.value(n.entries[0], n.where)
    params = {"weight": c.param(n.entries[1], n.where)}
    if not n.attrs.get("no_bias", False):
        params["bias"] = c.param(n.entries[2], n.where)
    name = c.structural(n.name)
    if n.attrs.get("flatten", True) and len(c.shape(n.entries[0], n.where)) > 2:
        x = c.emit(f"{name}.flatten", "flatten", [x], attrs={"start": 1, "end": -1})
    return c.emit(name, "linear", [x], params, {"weight_layout": "out_in"})


def _convolution(c: _Capture, n: _Node) -> str:
    kernel = list(n.attrs["kernel"])
    rank = len(kernel)
    layout = n.attrs.get("layout")
    if rank not in (1, 2) or layout not in (None, "None", "NCW", "NCHW"):
        raise _fail(n.where, f"a convolution of kernel {kernel} in layout {layout}: 1-d / 2-d, channels first")
    params = {"weight": c.param(n.entries[1], n.where)}
    if not n.attrs.get("no_bias", False):
        params["bias"] = c.param(n.entries[2], n.where)
    pad = _ints(n.attrs.get("pad"), rank, 0)
    attrs = {"stride": _ints(n.attrs.get("stride"), rank, 1), "dilation": _ints(n.attrs.get("dilate"), rank, 1),
             "padding": [[p, p] for p in pad] if any(pad) else "valid", "groups": int(n.attrs.get("num_group", 1))}  # fmt: skip
    return c.emit(c.structural(n.name), f"conv{rank}d", [c.value(n.entries[0], n.where)], params, attrs)


def _pooling(c: _Capture, n: _Node) -> str:
    """``Pooling`` (``src/operator/nn/pooling-inl.h``): output = floor((size + 2 pad - kernel) / stride) + 1
    (``valid``), ceil for ``full``."""
    kind = n.attrs.get("pool_type", "max")
    shape = c.shape(n.entries[0], n.where)
    rank = len(shape) - 2
    layout = n.attrs.get("layout")
    last = layout in ("NWC", "NHWC")
    if kind not in ("max", "avg") or rank not in (1, 2) or layout not in (None, "None", "NCW", "NCHW", "NWC", "NHWC"):
        raise _fail(n.where, f"{kind} pooling of {rank} spatial dims in layout {layout}: max / avg, 1-d / 2-d")
    spatial = shape[1:-1] if last else shape[2:]
    x = c.value(n.entries[0], n.where)
    fmt = "channels_last" if last else "channels_first"
    name = c.structural(n.name)
    if n.attrs.get("global_pool", False):
        if kind == "avg" and rank == 2:
            return c.emit(name, "adaptive_avg_pool2d", [x], attrs={"output_size": [1, 1], "data_format": fmt})
        kernel, stride, pad = list(spatial), [1] * rank, [0] * rank
    else:
        kernel = _ints(n.attrs["kernel"], rank, 1)
        stride, pad = _ints(n.attrs.get("stride"), rank, 1), _ints(n.attrs.get("pad"), rank, 0)
    convention = n.attrs.get("pooling_convention", "valid")
    for size, k, s, p in zip(spatial, kernel, stride, pad):
        if convention == "full" and (size + 2 * p - k) % s:
            raise _fail(n.where, "pooling_convention='full' rounds the output size up here, which the vocabulary's "
                                 "pooling does not do")  # fmt: skip
    if convention not in ("valid", "full"):
        raise _fail(n.where, f"pooling_convention={convention!r} is outside the vocabulary")
    attrs: dict[str, Any] = {"kernel": kernel, "stride": stride, "padding": [[p, p] for p in pad] if any(pad) else "valid",
                             "data_format": fmt}  # fmt: skip
    if kind == "avg":
        attrs["count_include_pad"] = bool(n.attrs.get("count_include_pad", True))
    return c.emit(name, f"{kind}_pool{rank}d", [x], attrs=attrs)


def _batch_norm(c: _Capture, n: _Node) -> str:
    if n.attrs.get("output_mean_var", False):
        raise _fail(n.where, "a BatchNorm that outputs its batch mean and variance is not an inference graph")
    params = {"mean": c.param(n.entries[3], n.where), "var": c.param(n.entries[4], n.where),
              "offset": c.param(n.entries[2], n.where)}  # fmt: skip
    if not n.attrs.get("fix_gamma", True):
        params["scale"] = c.param(n.entries[1], n.where)
    attrs = {"eps": float(n.attrs.get("eps", 1e-3)), "axis": int(n.attrs.get("axis", 1))}
    return c.emit(c.structural(n.name), "batch_norm", [c.value(n.entries[0], n.where)], params, attrs)


def _layer_norm(c: _Capture, n: _Node) -> str:
    axis = int(n.attrs.get("axis", -1))
    if axis not in (-1, len(c.shape(n.entries[0], n.where)) - 1) or n.attrs.get("output_mean_var", False):
        raise _fail(n.where, f"a LayerNorm over axis {axis}: the last axis only")
    params = {"scale": c.param(n.entries[1], n.where), "offset": c.param(n.entries[2], n.where)}
    attrs = {"eps": float(n.attrs.get("eps", 1e-5)), "axes": 1}
    return c.emit(c.structural(n.name), "layer_norm", [c.value(n.entries[0], n.where)], params, attrs)


def _embedding(c: _Capture, n: _Node) -> str:
    params = {"weight": c.param(n.entries[1], n.where)}
    return c.emit(c.structural(n.name), "embedding", [c.value(n.entries[0], n.where)], params)


def _dropout(c: _Capture, n: _Node) -> str:
    if n.attrs.get("mode", "training") == "always":
        raise _fail(n.where, "a Dropout with mode='always' draws random numbers at inference")
    return c.emit(c.structural(n.name), "dropout", [c.value(n.entries[0], n.where)])


def _activation(c: _Capture, n: _Node) -> str:
    act = n.attrs.get("act_type", "relu")
    op = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}.get(act) if n.op == "Activation" else None
    if n.op == "LeakyReLU" and act == "gelu":
        return c.emit(c.structural(n.name), "gelu", [c.value(n.entries[0], n.where)], attrs={"approximate": "none"})
    if op is None:
        raise _fail(n.where, f"the activation {act!r} is outside the vocabulary (relu, sigmoid, tanh, gelu)")
    return c.emit(c.structural(n.name), op, [c.value(n.entries[0], n.where)])


def _unary(c: _Capture, n: _Node) -> str:
    return c.emit(c.structural(n.name), _UNARY[n.op], [c.value(n.entries[0], n.where)])


def _softmax(c: _Capture, n: _Node) -> str:
    if n.attrs.get("temperature") not in (None, 1, 1.0) or n.attrs.get("use_length", False) or len(n.entries) > 1:
        raise _fail(n.where, "a softmax with a temperature or lengths is outside the vocabulary")
    return c.emit(
        c.structural(n.name), "softmax", [c.value(n.entries[0], n.where)], attrs={"axis": int(n.attrs.get("axis", -1))}
    )


def _binary(c: _Capture, n: _Node) -> str:
    ins = [c.value(e, n.where) for e in n.entries]
    return c.emit(c.structural(n.name), _BINARY[n.op], ins)


def _scalar(c: _Capture, n: _Node) -> str:
    op, reverse = _SCALAR[n.op]
    value = float(n.attrs.get("scalar", 0))
    const = c.emit(f"{c.structural(n.name)}.scalar", "constant", [], attrs={"value": value, "dtype": "float32"})
    x = c.value(n.entries[0], n.where)
    return c.emit(c.structural(n.name), op, [const, x] if reverse else [x, const])


def _matmul(c: _Capture, n: _Node) -> str:
    a, b = (c.value(e, n.where) for e in n.entries)
    ranks = [len(c.shape(e, n.where)) for e in n.entries]
    if n.op == "dot" and max(ranks) > 2:
        raise _fail(n.where, "dot of arrays of more than 2 dims (a tensordot) is outside the vocabulary")
    name = c.structural(n.name)
    if n.attrs.get("transpose_a", False):
        a = c.emit(f"{name}.transpose_a", "transpose", [a], attrs={"dim0": -1, "dim1": -2})
    if n.attrs.get("transpose_b", False):
        b = c.emit(f"{name}.transpose_b", "transpose", [b], attrs={"dim0": -1, "dim1": -2})
    return c.emit(name, "matmul", [a, b])


def _flatten(c: _Capture, n: _Node) -> str:
    return c.emit(c.structural(n.name), "flatten", [c.value(n.entries[0], n.where)], attrs={"start": 1, "end": -1})


def _reshape(c: _Capture, n: _Node) -> str:
    """``Reshape`` codes 0 (copy), -1 (infer); ``_npx_reshape`` -2 (copy), -1; ``_np_reshape`` NumPy sizes."""
    target = n.attrs.get("shape", n.attrs.get("newshape"))
    target = [target] if isinstance(target, int) else list(target or ())
    copy = {"Reshape": 0, "reshape": 0, "_npx_reshape": -2}.get(n.op)
    spec: list[Any] = []
    for i, d in enumerate(target):
        if copy is not None and d == copy:
            spec.append(f"${i}")
        elif d >= -1 and d != copy:
            spec.append(int(d))
        else:
            raise _fail(n.where, f"the reshape code {d} in {target} is outside the vocabulary (use -1, sizes, copies)")
    if n.attrs.get("reverse", False) or len(spec) > 8 or any(isinstance(s, str) and int(s[1:]) > 9 for s in spec):
        raise _fail(n.where, f"a reshape to {target} (reverse) is outside the vocabulary")
    return c.emit(c.structural(n.name), "reshape", [c.value(n.entries[0], n.where)], attrs={"shape": spec})


def _transpose(c: _Capture, n: _Node) -> str:
    rank = len(c.shape(n.entries[0], n.where))
    axes = n.attrs.get("axes")
    dims = list(range(rank))[::-1] if axes in (None, (), []) else [int(a) % rank for a in axes]
    return c.emit(c.structural(n.name), "permute", [c.value(n.entries[0], n.where)], attrs={"dims": dims})


def _swap(c: _Capture, n: _Node) -> str:
    attrs = {"dim0": int(n.attrs.get("dim1", 0)), "dim1": int(n.attrs.get("dim2", 0))}
    return c.emit(c.structural(n.name), "transpose", [c.value(n.entries[0], n.where)], attrs=attrs)


def _expand_dims(c: _Capture, n: _Node) -> str:
    return c.emit(
        c.structural(n.name), "unsqueeze", [c.value(n.entries[0], n.where)], attrs={"axis": int(n.attrs["axis"])}
    )


def _squeeze(c: _Capture, n: _Node) -> str:
    shape = c.shape(n.entries[0], n.where)
    axis = n.attrs.get("axis")
    axes = [i for i, d in enumerate(shape) if d == 1] if axis is None else _ints(axis, 1, 0)
    x = c.value(n.entries[0], n.where)
    for a in sorted((a % len(shape) for a in axes), reverse=True):
        x = c.emit(c.structural(n.name), "squeeze", [x], attrs={"axis": a})
    return x


def _concat(c: _Capture, n: _Node) -> str:
    axis = int(n.attrs.get("dim", n.attrs.get("axis", 1)))
    return c.emit(c.structural(n.name), "concat", [c.value(e, n.where) for e in n.entries], attrs={"axis": axis})


def _mean(c: _Capture, n: _Node) -> str:
    shape = c.shape(n.entries[0], n.where)
    axis = n.attrs.get("axis")
    axes = list(range(len(shape))) if axis in (None, ()) else _ints(axis, 1, 0)
    if n.attrs.get("exclude", False):
        axes = [a for a in range(len(shape)) if a not in {x % len(shape) for x in axes}]
    attrs = {"axes": [int(a) for a in axes], "keepdims": bool(n.attrs.get("keepdims", False))}
    return c.emit(c.structural(n.name), "mean", [c.value(n.entries[0], n.where)], attrs=attrs)


def _slice_axis(c: _Capture, n: _Node) -> str:
    attrs = {"axis": int(n.attrs["axis"]), "start": int(n.attrs.get("begin", 0)), "stop": n.attrs.get("end"), "step": 1}
    attrs["stop"] = None if attrs["stop"] in (None, "None") else int(attrs["stop"])
    return c.emit(c.structural(n.name), "slice", [c.value(n.entries[0], n.where)], attrs=attrs)


def _split(c: _Capture, n: _Node) -> list[str]:
    shape = c.shape(n.entries[0], n.where)
    axis = int(n.attrs.get("axis", 1))
    parts = int(n.attrs.get("num_outputs", n.attrs.get("sections", 0)) or 0)
    if parts < 1 or shape[axis] % parts or n.attrs.get("indices") not in (None, (), [], "[]"):
        raise _fail(n.where, "a split at given indices or into unequal parts is outside the vocabulary")
    name = c.emit(c.structural(n.name), "split", [c.value(n.entries[0], n.where)],
                  attrs={"axis": axis, "sizes": [shape[axis] // parts] * parts})  # fmt: skip
    refs = [f"{name}:{i}" for i in range(parts)]
    if n.attrs.get("squeeze_axis", False):
        refs = [c.emit(f"{name}.squeeze", "squeeze", [r], attrs={"axis": axis}) for r in refs]
    return refs


_HANDLERS: dict[str, Callable[[_Capture, _Node], Any]] = {
    "FullyConnected": _fully_connected,
    "Convolution": _convolution,
    "Pooling": _pooling,
    "BatchNorm": _batch_norm,
    "LayerNorm": _layer_norm,
    "Embedding": _embedding,
    "Dropout": _dropout,
    "Activation": _activation,
    "LeakyReLU": _activation,
    "softmax": _softmax,
    **{op: _unary for op in _UNARY},
    **{op: _binary for op in _BINARY},
    **{op: _scalar for op in _SCALAR},
    "dot": _matmul,
    "batch_dot": _matmul,
    "_npi_matmul": _matmul,
    "Flatten": _flatten,
    "flatten": _flatten,
    "Reshape": _reshape,
    "reshape": _reshape,
    "_np_reshape": _reshape,
    "_npx_reshape": _reshape,
    "transpose": _transpose,
    "_np_transpose": _transpose,
    "SwapAxis": _swap,
    "swapaxes": _swap,
    "expand_dims": _expand_dims,
    "squeeze": _squeeze,
    "_np_squeeze": _squeeze,
    "Concat": _concat,
    "concat": _concat,
    "_npi_concatenate": _concat,
    "mean": _mean,
    "_npi_mean": _mean,
    "slice_axis": _slice_axis,
    "SliceChannel": _split,
    "split": _split,
    "_split_v2": _split,
}


# -- the block --------------------------------------------------------------------------------------------------------


def _walk(block: Any, path: str, out: dict[str, Any]) -> None:
    out[path] = block
    for key, child in block._children.items():
        _walk(child, f"{path}.{key}" if path else str(key), out)


def _input_names(block: Any, count: int) -> list[str]:
    """The names of ``hybrid_forward``'s (after ``F``) or ``forward``'s arguments, else ``data``, ``data1``..."""
    from mxnet.gluon import HybridBlock

    fn = type(block).hybrid_forward if isinstance(block, HybridBlock) and type(block).forward is HybridBlock.forward \
        else type(block).forward  # fmt: skip
    try:
        names = [p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]  # fmt: skip
    except (TypeError, ValueError):
        names = []
    names = names[2:] if fn.__name__ == "hybrid_forward" else names[1:]
    if len(names) >= count and all(n.isidentifier() for n in names[:count]):
        return names[:count]
    return ["data"] + [f"data{i}" for i in range(1, count)] if count else []


def _shapes(
    symbol: Any, doc: dict[str, Any], feed: dict[str, tuple[int, ...]]
) -> dict[tuple[int, int], tuple[int, ...]]:
    """(node index, output index) -> shape, from ``infer_shape`` of the symbol's internals at ``feed``'s shapes."""
    internals = symbol.get_internals()
    wanted = set(internals.list_arguments()) | set(internals.list_auxiliary_states())
    try:
        _, out_shapes, _ = internals.infer_shape(**{k: v for k, v in feed.items() if k in wanted})
    except Exception as exc:
        raise _fail("the symbol", f"infer_shape failed: {(str(exc).splitlines() or [''])[0][:120]}") from None
    by_output = dict(zip(internals.list_outputs(), out_shapes or []))
    rows = doc.get("node_row_ptr")
    shapes = {}
    for nid, node in enumerate(doc["nodes"]):
        for i in range(rows[nid + 1] - rows[nid] if rows else 1):
            for key in (node["name"], f"{node['name']}_output", f"{node['name']}_output{i}"):
                if by_output.get(key) is not None:
                    shapes[(nid, i)] = tuple(by_output[key])
                    break
    return shapes


def capture(block: Any, example_inputs: Sequence[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Capture a Gluon block's inference computation as a graph.

    Args:
        block: an initialized ``HybridBlock`` (hybridized or not), or a ``Block`` whose ``forward`` only
            calls hybrid blocks and symbol operators, taking the example inputs positionally.
        example_inputs: ``mx.nd`` / ``mx.np`` / NumPy arrays like the inputs, batch first; their dtypes and
            shapes become the graph's inputs (the first dim ``batch``, symbolic). They run through the block
            once where parameters are still deferred (their shapes unknown).

    Returns:
        ``(graph, tensors)``: the graph as a dict, and the block's parameters by structural name
        (``hidden.weight``), the block's own arrays (bit for bit).

    Raises:
        UnsupportedArchitectureError: an operator outside the vocabulary (or used in a way it cannot
            express), a block that cannot be called on a symbol (Python control flow on values), a
            parameter without a value; the message names the node and the operator.
    """
    import mxnet as mx
    import numpy as np

    from ..parameters.models import model_params

    np_mode = bool(mx.util.is_np_array())
    arrays = [x if hasattr(x, "asnumpy") else (mx.np.array(x, dtype=x.dtype) if np_mode else mx.nd.array(x, dtype=x.dtype))
              for x in (np.asarray(v) if not hasattr(v, "asnumpy") else v for v in example_inputs)]  # fmt: skip
    structural = block._collect_params_with_prefix()
    if any(p._data is None for p in structural.values()):
        try:
            with mx.autograd.predict_mode():
                block(*arrays)
        except mx.base.MXNetError as exc:
            raise _fail(
                type(block).__name__, f"cannot run on the example inputs: {str(exc).splitlines()[0][:120]}"
            ) from None
    tensors = model_params(block).tensors
    missing = sorted(set(structural) - set(tensors))
    if missing:
        raise _fail(type(block).__name__, f"parameters without a value (call initialize()): {missing[:5]}")
    names = _input_names(block, len(arrays))
    variables = [mx.sym.var(f"tensorfile_input_{i}") for i in range(len(arrays))]
    try:
        out = block(*[v.as_np_ndarray() for v in variables] if np_mode else variables)
    except Exception as exc:
        raise _fail(f"{type(block).__name__}", "cannot be called on a symbol (Python control flow or NDArray-only code "
                    f"in forward?): {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}") from None  # fmt: skip
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    symbol = mx.sym.Group([o.as_nd_ndarray() if np_mode else o for o in outs]) if len(outs) > 1 else \
        (outs[0].as_nd_ndarray() if np_mode else outs[0])  # fmt: skip
    doc = json.loads(symbol.tojson())
    by_global = {p.name: name for name, p in structural.items()}
    feed = {f"tensorfile_input_{i}": tuple(x.shape) for i, x in enumerate(arrays)}
    feed.update({p.name: tuple(p.shape) for p in structural.values()})
    shapes = _shapes(symbol, doc, feed)
    blocks: dict[str, Any] = {}
    _walk(block, "", blocks)
    prefixes = sorted(
        ((b.prefix, path) for path, b in blocks.items() if getattr(b, "prefix", "")), key=lambda kv: -len(kv[0])
    )
    capture_ = _Capture(
        doc["nodes"], shapes, by_global, {f"tensorfile_input_{i}": n for i, n in enumerate(names)}, prefixes
    )
    capture_.run()
    outputs = []
    for head in doc["heads"]:
        ref = capture_.value((int(head[0]), int(head[1])), "an output")
        outputs.append(ref if ref not in names else capture_.emit("output", "identity", [ref]))
    graph_inputs = [{"name": n, "dtype": np.dtype(x.dtype).name, "shape": ["batch", *map(int, x.shape[1:])]}
                    for n, x in zip(names, arrays)]  # fmt: skip
    modules = {path: type(b).__name__ for path, b in blocks.items()}
    graph = {
        "framework": "mxnet",
        "inputs": graph_inputs,
        "nodes": capture_.nodes,
        "outputs": outputs,
        "modules": modules,
    }
    return graph, dict(tensors)
