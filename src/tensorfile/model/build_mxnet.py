"""``load_model(path, "mxnet")``: the graph as a Gluon ``HybridBlock`` of MXNet operators (MXNet 1.9).

:class:`GraphBlock` holds the file's tensors as Gluon ``Parameter``\\ s registered under the file's
names (``hidden.weight``: what ``block.collect_params()`` keys and :func:`tensorfile.save_parameters`
write), and evaluates the graph in ``hybrid_forward`` with legacy operators (``F.FullyConnected``,
``F.Convolution``, ``F.Pooling``, ``F.BatchNorm`` with ``use_global_stats``, ``F.LayerNorm``...), as
:mod:`.reference` specifies each op (``docs/FORMAT.md``, "Model graphs"). It runs imperatively and
hybridized, in legacy and in NumPy mode (``npx.set_np()``: ``mx.np`` arrays in and out, converted
with ``as_nd_ndarray`` / ``as_np_ndarray`` around the legacy operators).

Layouts the MXNet operators lack are moved: channels-last data is transposed to channels-first
around convolutions and pooling, ``spatial_in_out`` (HWIO) kernels to ``OIHW``, ``in_out`` linear
weights to ``out_in``; asymmetric padding goes through ``F.pad`` first. The rank of every value is
known from the graph (:func:`ranks`), which picks ``dot`` or ``linalg.gemm2`` and the reshape codes.
A few shape-dependent forms need concrete shapes and work only imperatively (not hybridized):
``"same"`` padding with strides, and a reshape that takes dim k of the operand at another position.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .graph import Graph, UnsupportedArchitectureError
from .reference import same_padding

__all__ = ["build", "ranks"]

Attrs = Mapping[str, Any]


def _fail(node: str, what: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(f"model (MXNet build): node {node}: {what}")


def ranks(graph: Graph, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """The rank of every value of ``graph`` (inputs, node results), from the inputs' ranks and the
    parameters' ``shapes``."""
    out = {name: len(shape) for name, _, shape in graph.inputs}
    for node in graph.nodes:
        r = [out[ref] for ref in node.inputs]
        a = node.attrs
        if node.op == "constant":
            rank = len(shapes[node.params["value"]]) if "value" in node.params else 0
        elif node.op == "embedding":
            rank = r[0] + 1
        elif node.op in ("add", "sub", "mul", "div"):
            rank = max(r)
        elif node.op == "matmul":
            rank = max(r) if min(r) >= 2 else max(r) - 1
        elif node.op == "mean":
            rank = r[0] if a["keepdims"] else r[0] - len(set(x % max(r[0], 1) for x in a["axes"]))
        elif node.op == "reshape":
            rank = len(a["shape"])
        elif node.op == "flatten":
            rank = r[0] - (a["end"] % r[0] - a["start"] % r[0]) if r[0] else 1
        elif node.op == "squeeze":
            rank = r[0] - 1
        elif node.op == "unsqueeze":
            rank = r[0] + 1
        else:
            rank = r[0]
        if node.outputs == 1:
            out[node.name] = rank
        else:
            out.update({f"{node.name}:{i}": rank for i in range(node.outputs)})
    return out


class _Context:
    """What an op function may need besides its operands: ``F`` (``mx.nd`` or ``mx.sym``), the ranks of its
    operands, the parameters' shapes, and the node's name for messages."""

    def __init__(self, F: Any, ranks: list[int], shapes: Mapping[str, tuple[int, ...]], node: str) -> None:
        self.F, self.ranks, self.shapes, self.node = F, ranks, shapes, node

    @property
    def symbolic(self) -> bool:
        return self.F.__name__.endswith("symbol")

    def concrete(self, x: Any, what: str) -> tuple[int, ...]:
        if self.symbolic:
            raise _fail(self.node, f"{what} needs concrete shapes: run this block without hybridize()")
        return tuple(x.shape)


def _first(c: _Context, x: Any, last: bool, rank: int) -> Any:
    return c.F.transpose(x, axes=(0, rank + 1) + tuple(range(1, rank + 1))) if last else x


def _back(c: _Context, y: Any, last: bool, rank: int) -> Any:
    return c.F.transpose(y, axes=(0,) + tuple(range(2, rank + 2)) + (1,)) if last else y


def _pad(c: _Context, x: Any, pads: list[list[int]], value: float) -> Any:
    """``F.pad`` of the spatial dims of channels-first ``x`` (1-d data goes through a 4-d view)."""
    F = c.F
    if len(pads) == 1:
        y = F.pad(
            F.expand_dims(x, axis=2), mode="constant", constant_value=value, pad_width=(0, 0, 0, 0, 0, 0, *pads[0])
        )
        return F.reshape(y, shape=(0, 0, -1))
    flat = tuple(p for pair in pads for p in pair)
    return F.pad(x, mode="constant", constant_value=value, pad_width=(0, 0, 0, 0) + flat)


def _paddings(c: _Context, x: Any, padding: Any, kernel: Sequence[int], stride: Sequence[int],
              dilation: Sequence[int]) -> list[list[int]]:  # fmt: skip
    """Explicit ``[low, high]`` padding of each spatial dim (channels-first ``x``)."""
    if padding == "valid":
        return [[0, 0] for _ in kernel]
    if padding == "same":
        if all(s == 1 for s in stride):  # stride 1: the total is the dilated kernel's extent - 1, whatever the size
            return [[((k - 1) * d) // 2, (k - 1) * d - ((k - 1) * d) // 2] for k, d in zip(kernel, dilation)]
        spatial = c.concrete(x, "'same' padding with strides")[2:]
        return [same_padding(s, k, st, d) for s, k, st, d in zip(spatial, kernel, stride, dilation)]
    return [list(p) for p in padding]


def _linear(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    w = params["weight"]
    shape = c.shapes["weight"]
    if attrs["weight_layout"] == "in_out":
        w, out = c.F.transpose(w), shape[1]
    else:
        out = shape[0]
    bias = params.get("bias")
    return c.F.FullyConnected(ops[0], w, bias, num_hidden=out, no_bias=bias is None, flatten=False)


def _conv(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    F = c.F
    rank = len(c.shapes["weight"]) - 2
    last = attrs["data_format"] == "channels_last"
    w = params["weight"]
    wshape = c.shapes["weight"]
    if attrs["kernel_layout"] == "spatial_in_out":  # (k..., in, out) -> (out, in, k...)
        w = F.transpose(w, axes=(rank + 1, rank) + tuple(range(rank)))
        kernel, out = wshape[:rank], wshape[-1]
    else:
        kernel, out = wshape[2:], wshape[0]
    x = _first(c, ops[0], last, rank)
    pads = _paddings(c, x, attrs["padding"], kernel, attrs["stride"], attrs["dilation"])
    if any(lo != hi for lo, hi in pads):
        x, pads = _pad(c, x, pads, 0.0), [[0, 0]] * rank
    bias = params.get("bias")
    y = F.Convolution(x, w, bias, kernel=tuple(kernel), stride=tuple(attrs["stride"]), dilate=tuple(attrs["dilation"]),
                      pad=tuple(lo for lo, _ in pads), num_filter=out, num_group=attrs["groups"], no_bias=bias is None)  # fmt: skip
    return _back(c, y, last, rank)


def _pool(kind: str) -> Callable[..., Any]:
    def run_pool(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
        kernel = list(attrs["kernel"])
        rank, last = len(kernel), attrs["data_format"] == "channels_last"
        stride = list(attrs["stride"] or kernel)
        x = _first(c, ops[0], last, rank)
        pads = _paddings(c, x, attrs["padding"], kernel, stride, [1] * rank)
        include = attrs.get("count_include_pad", True)
        if any(lo != hi for lo, hi in pads):
            if kind == "avg" and not include:
                raise _fail(c.node, "asymmetric padding without counting it is not an MXNet pooling")
            x, pads = _pad(c, x, pads, -math.inf if kind == "max" else 0.0), [[0, 0]] * rank
        options = {"count_include_pad": bool(include)} if kind == "avg" else {}
        y = c.F.Pooling(x, kernel=tuple(kernel), stride=tuple(stride), pad=tuple(lo for lo, _ in pads), pool_type=kind,
                        pooling_convention="valid", **options)  # fmt: skip
        return _back(c, y, last, rank)

    return run_pool


def _adaptive_avg_pool2d(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    """``contrib.AdaptiveAvgPooling2D``: cell i covers [floor(i*H/oh), ceil((i+1)*H/oh)), as torch."""
    last = attrs["data_format"] == "channels_last"
    x = _first(c, ops[0], last, 2)
    return _back(c, c.F.contrib.AdaptiveAvgPooling2D(x, output_size=tuple(attrs["output_size"])), last, 2)


def _batch_norm(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    F = c.F
    mean = params["mean"]
    gamma = params["scale"] if "scale" in params else F.ones_like(mean)
    beta = params["offset"] if "offset" in params else F.zeros_like(mean)
    return F.BatchNorm(ops[0], gamma, beta, mean, params["var"], eps=attrs["eps"], axis=attrs["axis"] % c.ranks[0],
                       use_global_stats=True, fix_gamma="scale" not in params)  # fmt: skip


def _layer_norm(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    F = c.F
    x = ops[0]
    if attrs["axes"] == 1 and "scale" in params and "offset" in params:
        return F.LayerNorm(x, params["scale"], params["offset"], axis=-1, eps=attrs["eps"])
    axes = tuple(range(c.ranks[0] - attrs["axes"], c.ranks[0]))
    centered = F.broadcast_sub(x, F.mean(x, axis=axes, keepdims=True))
    y = F.broadcast_mul(centered, F.rsqrt(F.mean(F.square(centered), axis=axes, keepdims=True) + attrs["eps"]))
    if "scale" in params:
        y = F.broadcast_mul(y, params["scale"])
    return F.broadcast_add(y, params["offset"]) if "offset" in params else y


def _embedding(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    rows, width = c.shapes["weight"]
    return c.F.Embedding(ops[0], params["weight"], input_dim=rows, output_dim=width)


def _gelu(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    F, x = c.F, ops[0]
    if attrs["approximate"] == "none":
        return F.LeakyReLU(x, act_type="gelu")  # erf-based
    inner = (x + F.power(x, 3) * 0.044715) * math.sqrt(2 / math.pi)
    return x * (F.tanh(inner) + 1) * 0.5


def _binary(name: str) -> Callable[..., Any]:
    """Elementwise with NumPy broadcasting; a Python number (a ``constant`` with a value) as a scalar operand."""

    def run_binary(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
        a, b = ops
        if isinstance(a, float) or isinstance(b, float):
            return {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "div": lambda: a / b}[name]()
        return getattr(c.F, f"broadcast_{name}")(a, b)

    return run_binary


def _matmul(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    a, b = ops
    ra, rb = c.ranks
    if rb == 2 or (ra, rb) == (1, 1) or rb == 1:
        return c.F.dot(a, b)  # contracts a's last dim with b's first: matmul when b has 2 dims (or 1)
    if ra == rb:
        return c.F.linalg.gemm2(a, b)
    raise _fail(c.node, f"matmul of ranks {ra} and {rb} (broadcast batch dims) is not built for MXNet")


def _reshape(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    """``"$k"`` at position k is MXNet's code 0 (copy); elsewhere it needs the operand's concrete shape."""
    x = ops[0]
    codes: list[int] = []
    for i, d in enumerate(attrs["shape"]):
        if isinstance(d, str):
            k = int(d[1])
            codes.append(0 if k == i else c.concrete(x, f"a reshape taking dim {k} at position {i}")[k])
        elif d == 0:
            raise _fail(c.node, "a reshape to a size of 0 (MXNet's code 0 copies a dim)")
        else:
            codes.append(d)
    return c.F.reshape(x, shape=tuple(codes))


def _flatten(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    x, rank = ops[0], c.ranks[0]
    if rank == 0:
        return c.F.reshape(x, shape=(1,))
    start, end = attrs["start"] % rank, attrs["end"] % rank
    for _ in range(end - start):  # merge dims start and start + 1, as often as needed
        x = c.F.reshape(x, shape=(0,) * start + (-3, -2))
    return x


def _slice(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    rank, axis = c.ranks[0], attrs["axis"] % c.ranks[0]
    begin, end, step = [None] * rank, [None] * rank, [None] * rank
    begin[axis], end[axis], step[axis] = attrs["start"], attrs["stop"], attrs["step"]
    return c.F.slice(ops[0], begin=tuple(begin), end=tuple(end), step=tuple(step))


def _split(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> list[Any]:
    bounds = [0, *np.cumsum(attrs["sizes"]).tolist()]
    axis = attrs["axis"] % c.ranks[0]
    return [c.F.slice_axis(ops[0], axis=axis, begin=int(lo), end=int(hi)) for lo, hi in zip(bounds, bounds[1:])]


def _sdpa(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    """softmax(q k^T * scale + mask) v with ``linalg.gemm2`` (batched over the leading dims, which q, k and v
    share). The default scale 1/sqrt(head size) comes from ``shape_array`` (so it hybridizes); ``causal``
    masks keys after the query with ``contrib.arange_like``; a fourth operand is an additive (float) mask."""
    F = c.F
    q, k, v = ops[:3]
    if attrs["scale"] is not None:
        scores = F.linalg.gemm2(q, k, transpose_b=True, alpha=float(attrs["scale"]))
    else:
        size = F.cast(F.slice_axis(F.shape_array(q), axis=0, begin=-1, end=None), dtype="float32")
        scores = F.broadcast_div(F.linalg.gemm2(q, k, transpose_b=True), F.sqrt(size))
    if attrs["causal"]:
        rows = F.reshape(F.contrib.arange_like(scores, axis=-2), shape=(-1, 1))
        cols = F.reshape(F.contrib.arange_like(scores, axis=-1), shape=(1, -1))
        allowed = F.broadcast_greater_equal(rows, cols)
        for _ in range(c.ranks[0] - 2):
            allowed = F.expand_dims(allowed, axis=0)
        allowed = F.broadcast_like(allowed, scores)
        scores = F.where(allowed, scores, F.ones_like(scores) * -math.inf)
    if len(ops) == 4:
        scores = F.broadcast_add(scores, ops[3])
    return F.linalg.gemm2(F.softmax(scores, axis=-1), v)


def _multi_head_attention(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    """torch ``nn.MultiheadAttention`` (batch_first, no mask): in_proj_weight is [q; k; v] (3E x E)."""
    F = c.F
    e, heads = c.shapes["in_proj_weight"][1], attrs["num_heads"]
    if c.ranks[0] != 3:
        raise _fail(c.node, "multi-head attention on unbatched inputs is not built for MXNet")
    w, b = params["in_proj_weight"], params.get("in_proj_bias")
    split = []
    for i, x in enumerate(ops):
        wi = F.slice_axis(w, axis=0, begin=i * e, end=(i + 1) * e)
        bi = F.slice_axis(b, axis=0, begin=i * e, end=(i + 1) * e) if b is not None else None
        p = F.FullyConnected(x, wi, bi, num_hidden=e, no_bias=bi is None, flatten=False)
        split.append(F.transpose(F.reshape(p, shape=(0, 0, -4, heads, -1)), axes=(0, 2, 1, 3)))  # B, H, L, D
    out = _sdpa(c, split, {}, {"scale": 1 / math.sqrt(e // heads), "causal": False})
    out = F.reshape(F.transpose(out, axes=(0, 2, 1, 3)), shape=(0, 0, -3))
    bias = params.get("out_proj_bias")
    return F.FullyConnected(out, params["out_proj_weight"], bias, num_hidden=e, no_bias=bias is None, flatten=False)


def _constant(c: _Context, ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    return params["value"] if "value" in params else float(attrs["value"])


def _axis(c: _Context, axis: int, extra: int = 0) -> int:
    return axis % (c.ranks[0] + extra)


_OPS: dict[str, Callable[..., Any]] = {
    "linear": _linear,
    "conv1d": _conv,
    "conv2d": _conv,
    "max_pool1d": _pool("max"),
    "max_pool2d": _pool("max"),
    "avg_pool1d": _pool("avg"),
    "avg_pool2d": _pool("avg"),
    "adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "embedding": _embedding,
    "dropout": lambda c, ops, params, attrs: ops[0],
    "identity": lambda c, ops, params, attrs: ops[0],
    "relu": lambda c, ops, params, attrs: c.F.relu(ops[0]),
    "gelu": _gelu,
    "sigmoid": lambda c, ops, params, attrs: c.F.sigmoid(ops[0]),
    "tanh": lambda c, ops, params, attrs: c.F.tanh(ops[0]),
    "softmax": lambda c, ops, params, attrs: c.F.softmax(ops[0], axis=attrs["axis"]),
    "add": _binary("add"),
    "sub": _binary("sub"),
    "mul": _binary("mul"),
    "div": _binary("div"),
    "matmul": _matmul,
    "constant": _constant,
    "mean": lambda c, ops, params, attrs: c.F.mean(
        ops[0], axis=tuple(_axis(c, a) for a in attrs["axes"]), keepdims=attrs["keepdims"]
    ),  # fmt: skip
    "reshape": _reshape,
    "flatten": _flatten,
    "permute": lambda c, ops, params, attrs: c.F.transpose(ops[0], axes=tuple(attrs["dims"])),
    "transpose": lambda c, ops, params, attrs: c.F.swapaxes(
        ops[0], dim1=_axis(c, attrs["dim0"]), dim2=_axis(c, attrs["dim1"])
    ),
    "squeeze": lambda c, ops, params, attrs: c.F.squeeze(ops[0], axis=_axis(c, attrs["axis"])),
    "unsqueeze": lambda c, ops, params, attrs: c.F.expand_dims(ops[0], axis=_axis(c, attrs["axis"], 1)),
    "concat": lambda c, ops, params, attrs: c.F.concat(*ops, dim=_axis(c, attrs["axis"])),
    "split": _split,
    "slice": _slice,
    "scaled_dot_product_attention": _sdpa,
    "multi_head_attention": _multi_head_attention,
}


@functools.lru_cache(maxsize=1)
def _block_class() -> type:
    from mxnet import gluon

    class GraphBlock(gluon.HybridBlock):
        """A Gluon block that evaluates a model graph.

        ``block(*inputs)`` takes ``mx.nd`` arrays (``mx.np`` arrays in NumPy mode) shaped like the graph's
        inputs and gives the output (a tuple for several). Its parameters are ``block.collect_params()``
        under the file's names (``hidden.weight``).

        Attributes:
            graph: the validated graph.
        """

        def __init__(self, graph: Graph, tensors: Mapping[str, np.ndarray], **kwargs: Any) -> None:
            import mxnet as mx

            super().__init__(**kwargs)
            self.graph = graph
            self._shapes = {name: tuple(value.shape) for name, value in tensors.items()}
            self._ranks = ranks(graph, self._shapes)
            make = mx.np.array if mx.util.is_np_array() else mx.nd.array
            used = graph.params()
            with self.name_scope():
                for i, (name, value) in enumerate(tensors.items()):
                    if value.ndim == 0 and not mx.util.is_np_array():
                        if name not in used:
                            continue  # legacy MXNet has no 0-d arrays: an unused counter (num_batches_tracked) is left out
                        value = value.reshape(1)  # broadcasts as the 0-d value would
                    param = self.params.get(f"t{i}", shape=tuple(value.shape), dtype=value.dtype,
                                            allow_deferred_init=False)  # fmt: skip
                    param.initialize(init=mx.init.Zero(), ctx=mx.cpu())
                    param.set_data(make(np.ascontiguousarray(value), dtype=value.dtype))
                    self._reg_params[name] = param  # by the file's name: save_parameters and hybrid_forward's kwargs

        def forward(self, *inputs: Any) -> Any:
            out = super().forward(*inputs)
            return tuple(out) if isinstance(out, list) else out  # hybridized, several outputs come as a list

        def hybrid_forward(self, F: Any, *inputs: Any, **params: Any) -> Any:
            import mxnet as mx

            np_mode = bool(mx.util.is_np_array())

            def legacy(x: Any) -> Any:
                return x.as_nd_ndarray() if np_mode and hasattr(x, "as_nd_ndarray") else x

            if len(inputs) != len(self.graph.inputs):
                raise ValueError(f"the graph takes {len(self.graph.inputs)} inputs, got {len(inputs)}")
            values: dict[str, Any] = {name: legacy(x) for (name, _, _), x in zip(self.graph.inputs, inputs)}
            tensors = {name: legacy(value) for name, value in params.items()}
            for node in self.graph.nodes:
                context = _Context(F, [self._ranks[ref] for ref in node.inputs],
                                   {role: self._shapes[t] for role, t in node.params.items()}, repr(node.name))  # fmt: skip
                result = _OPS[node.op](context, [values[ref] for ref in node.inputs],
                                       {role: tensors[t] for role, t in node.params.items()}, node.attrs)  # fmt: skip
                if node.outputs == 1:
                    values[node.name] = result
                else:
                    values.update({f"{node.name}:{i}": part for i, part in enumerate(result)})
            outputs = [values[ref] for ref in self.graph.outputs]
            if np_mode:
                outputs = [y.as_np_ndarray() if hasattr(y, "as_np_ndarray") else y for y in outputs]
            return outputs[0] if len(outputs) == 1 else tuple(outputs)

    return GraphBlock


def build(graph: Graph, tensors: Mapping[str, np.ndarray]) -> Any:
    """A Gluon ``HybridBlock`` evaluating ``graph`` over ``tensors`` (name -> NumPy array), on the CPU, in
    legacy or NumPy mode as MXNet is now (``npx.set_np()`` before the call gives ``mx.np`` arrays)."""
    return _block_class()(graph, tensors)
