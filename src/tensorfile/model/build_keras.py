"""``load_model(path, "keras")`` (and ``"tensorflow"``): the graph as a ``keras.Model`` computing with ``keras.ops``.

The model holds the file's tensors as Keras variables (dict attribute ``params``: file name ->
``keras.Variable`` named the same, ``/`` written ``_``), so ``tensorfile.save_parameters`` of the
rebuilt model gives back the file's names; its ``call`` interprets the graph node by node. Each op
follows :mod:`.reference` (the meaning of the vocabulary, ``docs/FORMAT.md``) in both layouts: graphs
captured from torch (``out_in`` weights, ``out_in_spatial`` kernels, ``channels_first`` data) and
from Keras (``in_out``, ``spatial_in_out``, ``channels_last``). Convolutions and pooling run
channels-last (what every backend's CPU kernels support), grouped convolutions one group at a time.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .graph import Graph
from .reference import same_padding

__all__ = ["build"]

Fn = Callable[[Sequence[Any], Mapping[str, Any], Mapping[str, Any]], Any]


def _ops() -> Any:
    import keras

    return keras.ops


def _last(x: Any, attrs: Mapping[str, Any]) -> Any:
    """Channels-first data moved to channels-last (N, spatial..., C)."""
    return _ops().moveaxis(x, 1, -1) if attrs["data_format"] == "channels_first" else x


def _back(y: Any, attrs: Mapping[str, Any]) -> Any:
    return _ops().moveaxis(y, -1, 1) if attrs["data_format"] == "channels_first" else y


def _pads(x: Any, padding: Any, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> list:
    """Explicit ``[[low, high], ...]`` of channels-last ``x``."""
    if padding == "valid":
        return [[0, 0] for _ in kernel]
    if padding == "same":
        spatial = tuple(x.shape)[1:-1]
        return [same_padding(s, k, st, d) for s, k, st, d in zip(spatial, kernel, stride, dilation)]
    return [list(p) for p in padding]


def _pad(x: Any, pads: list, value: float = 0.0) -> Any:
    if not any(any(p) for p in pads):
        return x
    return _ops().pad(x, [[0, 0], *pads, [0, 0]], constant_values=value)


def _conv(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
    ops = _ops()
    x, w = _last(xs[0], a), p["weight"]
    rank = len(x.shape) - 2
    if a["kernel_layout"] == "out_in_spatial":  # (out, in/groups, k...) -> (k..., in/groups, out)
        w = ops.transpose(w, (*range(2, 2 + rank), 1, 0))
    padding = a["padding"]
    if padding != "valid" and (padding != "same" or any(s != 1 for s in a["stride"])):
        x, padding = _pad(x, _pads(x, padding, tuple(w.shape)[:rank], a["stride"], a["dilation"])), "valid"
    groups = a["groups"]
    parts = [x] if groups == 1 else ops.split(x, groups, axis=-1)
    kernels = [w] if groups == 1 else ops.split(w, groups, axis=-1)
    ys = [ops.conv(xg, wg, strides=a["stride"], padding=padding, data_format="channels_last",
                   dilation_rate=a["dilation"]) for xg, wg in zip(parts, kernels)]  # fmt: skip
    y = ys[0] if groups == 1 else ops.concatenate(ys, axis=-1)
    if "bias" in p:
        y = y + p["bias"]
    return _back(y, a)


def _pool(kind: str) -> Fn:
    def run(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
        ops = _ops()
        x = _last(xs[0], a)
        kernel, stride = a["kernel"], a["stride"] or a["kernel"]
        padding = a["padding"]
        if kind == "max":
            if padding != "valid" and (padding != "same" or any(s != 1 for s in stride)):
                x, padding = _pad(x, _pads(x, padding, kernel, stride, [1] * len(kernel)), -np.inf), "valid"
            return _back(ops.max_pool(x, kernel, stride, padding, data_format="channels_last"), a)
        if padding == "valid" or (padding == "same" and not a["count_include_pad"]):  # Keras' own "same" excludes
            return _back(ops.average_pool(x, kernel, stride, padding, data_format="channels_last"), a)
        pads = _pads(x, padding, kernel, stride, [1] * len(kernel))
        y = ops.average_pool(_pad(x, pads), kernel, stride, "valid", data_format="channels_last")
        if not a["count_include_pad"]:  # the mean of what is inside: divide by the share of real cells
            y = y / ops.average_pool(_pad(ops.ones_like(x), pads), kernel, stride, "valid", data_format="channels_last")
        return _back(y, a)

    return run


def _adaptive_avg_pool2d(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
    """torch's adaptive average: output cell i covers [floor(i*H/oh), ceil((i+1)*H/oh))."""
    ops = _ops()
    x = _last(xs[0], a)
    (oh, ow), (h, w) = a["output_size"], tuple(x.shape)[1:3]
    rows = []
    for i in range(oh):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        cells = [ops.mean(x[:, r0:r1, (j * w) // ow : -(-((j + 1) * w) // ow), :], axis=(1, 2)) for j in range(ow)]
        rows.append(ops.stack(cells, axis=1))
    return _back(ops.stack(rows, axis=1), a)


def _norm_shape(x: Any, axis: int) -> list[int]:
    shape = [1] * len(x.shape)
    shape[axis] = -1
    return shape


def _batch_norm(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
    ops, x = _ops(), xs[0]
    shape = _norm_shape(x, a["axis"])
    y = (x - ops.reshape(p["mean"], shape)) / ops.sqrt(ops.reshape(p["var"], shape) + a["eps"])
    if "scale" in p:
        y = y * ops.reshape(p["scale"], shape)
    if "offset" in p:
        y = y + ops.reshape(p["offset"], shape)
    return y


def _layer_norm(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
    ops, x = _ops(), xs[0]
    axes = tuple(range(-a["axes"], 0))
    mean = ops.mean(x, axis=axes, keepdims=True)
    var = ops.mean(ops.square(x - mean), axis=axes, keepdims=True)
    y = (x - mean) / ops.sqrt(var + a["eps"])
    if "scale" in p:
        y = y * p["scale"]
    if "offset" in p:
        y = y + p["offset"]
    return y


def _linear(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
    ops = _ops()
    w = p["weight"]
    y = ops.matmul(xs[0], ops.transpose(w) if a["weight_layout"] == "out_in" else w)
    return y + p["bias"] if "bias" in p else y


def _sdpa(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
    """softmax(q @ k^T * scale + mask) @ v; a bool mask is True where attention is allowed."""
    ops = _ops()
    q, k, v = xs[:3]
    scale = a["scale"] if a["scale"] is not None else 1 / np.sqrt(q.shape[-1])
    scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) * ops.cast(scale, q.dtype)
    if a["causal"]:
        lq, lk = tuple(scores.shape)[-2:]
        scores = ops.where(np.tril(np.ones((lq, lk), bool)), scores, ops.cast(-np.inf, scores.dtype))
    if len(xs) == 4:
        mask = xs[3]
        if ops.dtype(mask) == "bool":
            scores = ops.where(mask, scores, ops.cast(-np.inf, scores.dtype))
        else:
            scores = scores + mask
    return ops.matmul(ops.softmax(scores, axis=-1), v)


def _mha(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
    """torch ``nn.MultiheadAttention`` (batch_first, no mask): in_proj_weight is [q; k; v] (3E x E)."""
    ops = _ops()
    q = xs[0]
    e, heads = q.shape[-1], a["num_heads"]
    w = p["in_proj_weight"]
    b = p.get("in_proj_bias")
    split = []
    for i, x in enumerate(xs):
        y = ops.matmul(x, ops.transpose(w[i * e : (i + 1) * e]))
        if b is not None:
            y = y + b[i * e : (i + 1) * e]
        shape = tuple(ops.shape(y))
        split.append(ops.swapaxes(ops.reshape(y, (*shape[:-1], heads, e // heads)), -2, -3))  # B, H, L, D
    out = _sdpa(split, {}, {"scale": None, "causal": False})
    out = ops.swapaxes(out, -2, -3)
    out = ops.reshape(out, (*tuple(ops.shape(out))[:-2], e))
    y = ops.matmul(out, ops.transpose(p["out_proj_weight"]))
    return y + p["out_proj_bias"] if "out_proj_bias" in p else y


def _reshape(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
    ops, x = _ops(), xs[0]
    shape = ops.shape(x)
    return ops.reshape(x, [shape[int(d[1])] if isinstance(d, str) else d for d in a["shape"]])


def _flatten(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
    ops, x = _ops(), xs[0]
    shape = tuple(ops.shape(x))
    if not shape:
        return ops.reshape(x, (1,))
    start, end = a["start"] % len(shape), a["end"] % len(shape)
    return ops.reshape(x, (*shape[:start], -1, *shape[end + 1 :]))


def _slice(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
    x = xs[0]
    index = [slice(None)] * len(x.shape)
    index[a["axis"]] = slice(a["start"], a["stop"], a["step"])
    return x[tuple(index)]


def _constant(xs: Sequence[Any], p: Mapping[str, Any], a: Mapping[str, Any]) -> Any:
    return p["value"] if "value" in p else _ops().convert_to_tensor(np.asarray(a["value"], dtype=a["dtype"]))


def _table() -> dict[str, Fn]:
    ops = _ops()

    def one(fn: Callable[[Any], Any]) -> Fn:
        return lambda xs, p, a: fn(xs[0])

    def two(fn: Callable[[Any, Any], Any]) -> Fn:
        return lambda xs, p, a: fn(xs[0], xs[1])

    return {
        "linear": _linear, "conv1d": _conv, "conv2d": _conv,
        "max_pool1d": _pool("max"), "max_pool2d": _pool("max"), "avg_pool1d": _pool("avg"), "avg_pool2d": _pool("avg"),
        "adaptive_avg_pool2d": _adaptive_avg_pool2d, "batch_norm": _batch_norm, "layer_norm": _layer_norm,
        "embedding": lambda xs, p, a: ops.take(p["weight"], ops.cast(xs[0], "int32"), axis=0),
        "dropout": one(lambda x: x), "identity": one(lambda x: x),
        "relu": one(ops.relu), "sigmoid": one(ops.sigmoid), "tanh": one(ops.tanh),
        "gelu": lambda xs, p, a: ops.gelu(xs[0], approximate=a["approximate"] == "tanh"),
        "softmax": lambda xs, p, a: ops.softmax(xs[0], axis=a["axis"]),
        "add": two(ops.add), "sub": two(ops.subtract), "mul": two(ops.multiply), "div": two(ops.divide),
        "matmul": two(ops.matmul), "constant": _constant,
        "mean": lambda xs, p, a: ops.mean(xs[0], axis=tuple(a["axes"]), keepdims=a["keepdims"]),
        "reshape": _reshape, "flatten": _flatten,
        "permute": lambda xs, p, a: ops.transpose(xs[0], a["dims"]),
        "transpose": lambda xs, p, a: ops.swapaxes(xs[0], a["dim0"], a["dim1"]),
        "squeeze": lambda xs, p, a: ops.squeeze(xs[0], axis=a["axis"]),
        "unsqueeze": lambda xs, p, a: ops.expand_dims(xs[0], a["axis"]),
        "concat": lambda xs, p, a: ops.concatenate(list(xs), axis=a["axis"]),
        "split": lambda xs, p, a: ops.split(xs[0], list(np.cumsum(a["sizes"])[:-1]), axis=a["axis"]),
        "slice": _slice, "scaled_dot_product_attention": _sdpa, "multi_head_attention": _mha,
    }  # fmt: skip


def build(graph: Graph, tensors: Mapping[str, np.ndarray]) -> Any:
    """A ``keras.Model`` running ``graph`` over ``tensors`` (name -> NumPy array, copied into variables).

    The model's call takes the graph's inputs positionally (NumPy or backend tensors; shapes as the
    graph's inputs, any size for symbolic dims) and returns the output tensor, or a tuple of them.
    Float tensors become trainable variables, others (and batch-norm statistics) non-trainable.

    Raises:
        ValueError (at call): the number of inputs differs from the graph's.
    """
    import keras

    statistics = {node.params[r] for node in graph.nodes if node.op == "batch_norm" for r in ("mean", "var")}

    class GraphModel(keras.Model):
        """A model rebuilt from a tensorfile graph: ``params`` (file name -> variable), ``graph``."""

        def __init__(self) -> None:
            super().__init__(name="tensorfile_graph")
            self.graph = graph
            self._fns = _table()
            self.params = {
                name: keras.Variable(np.asarray(value), dtype=np.asarray(value).dtype.name, name=name.replace("/", "_"),
                                     trainable=np.asarray(value).dtype.kind == "f" and name not in statistics)
                for name, value in tensors.items()
            }  # fmt: skip
            self.built = True

        def call(self, *inputs: Any) -> Any:
            if len(inputs) != len(graph.inputs):
                raise ValueError(f"the graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
            values: dict[str, Any] = {}
            for (name, dtype, _), x in zip(graph.inputs, inputs):
                values[name] = keras.ops.convert_to_tensor(x, dtype=dtype)
            for node in graph.nodes:
                params = {role: self.params[t] for role, t in node.params.items()}
                result = self._fns[node.op]([values[r] for r in node.inputs], params, node.attrs)
                if node.outputs == 1:
                    values[node.name] = result
                else:
                    values.update({f"{node.name}:{i}": part for i, part in enumerate(result)})
            outputs = [values[ref] for ref in graph.outputs]
            return outputs[0] if len(outputs) == 1 else tuple(outputs)

    return GraphModel()
