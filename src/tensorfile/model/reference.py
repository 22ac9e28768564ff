"""The reference interpreter of the graph vocabulary, in NumPy: what every op means, and the oracle of the tests.

Each op is one function ``(operands, params, attrs) -> result`` over NumPy arrays, written for
clarity, not speed (``docs/FORMAT.md``, "Model graphs", says the same in words). The framework
rebuilds (:mod:`tensorfile.model.build`) must agree with it within float32 rounding.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .graph import Graph

__all__ = ["run", "OPS_NUMPY", "same_padding"]

Params = Mapping[str, np.ndarray]
Attrs = Mapping[str, Any]


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> list[int]:
    """``"same"`` padding of one spatial dim, as TensorFlow / Keras and torch (stride 1) define it:
    the output has ceil(size / stride) positions, the extra padding going after (``[low, high]``)."""
    extent = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
    return [total // 2, total - total // 2]


def _pads(x: np.ndarray, padding: Any, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> list[list[int]]:
    spatial = x.shape[2:]
    if padding == "valid":
        return [[0, 0] for _ in spatial]
    if padding == "same":
        return [same_padding(s, k, st, d) for s, k, st, d in zip(spatial, kernel, stride, dilation)]
    return [list(p) for p in padding]


def _first(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    """Channels-last data moved to channels-first (N, C, spatial...)."""
    return np.moveaxis(x, -1, 1) if attrs.get("data_format") == "channels_last" else x


def _back(y: np.ndarray, attrs: Attrs) -> np.ndarray:
    return np.moveaxis(y, 1, -1) if attrs.get("data_format") == "channels_last" else y


def _windows(x: np.ndarray, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> np.ndarray:
    """(N, C, out..., k...) windows of channels-first, already padded ``x``."""
    rank = len(kernel)
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    view = np.lib.stride_tricks.sliding_window_view(x, extents, axis=tuple(range(2, 2 + rank)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride) + tuple(slice(None, None, d) for d in dilation)
    return view[index]


def conv(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    """conv1d / conv2d: cross-correlation (no kernel flip), as torch and Keras compute it."""
    x, w = _first(ops[0], attrs), params["weight"]
    rank = x.ndim - 2
    if attrs["kernel_layout"] == "spatial_in_out":  # Keras: (k..., in/groups, out) -> (out, in/groups, k...)
        w = np.moveaxis(w, (-1, -2), (0, 1))
    kernel = w.shape[2:]
    pads = _pads(x, attrs["padding"], kernel, attrs["stride"], attrs["dilation"])
    x = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    win = _windows(x, kernel, attrs["stride"], attrs["dilation"])  # N, C, out..., k...
    groups, out = attrs["groups"], w.shape[0]
    cin = x.shape[1] // groups
    spatial = "".join("hwd"[i] for i in range(rank))
    taps = "".join("xyz"[i] for i in range(rank))
    parts = []
    for g in range(groups):
        wg = w[g * (out // groups) : (g + 1) * (out // groups)]
        xg = win[:, g * cin : (g + 1) * cin]
        parts.append(np.einsum(f"nc{spatial}{taps},oc{taps}->no{spatial}", xg, wg, optimize=True))
    y = np.concatenate(parts, axis=1)
    if "bias" in params:
        y = y + params["bias"].reshape((1, -1) + (1,) * rank)
    return _back(y, attrs).astype(ops[0].dtype, copy=False)


def pool(kind: str) -> Callable[[Sequence[np.ndarray], Params, Attrs], np.ndarray]:
    def run_pool(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
        x = _first(ops[0], attrs)
        kernel = attrs["kernel"]
        stride = attrs["stride"] or kernel
        ones = [1] * len(kernel)
        pads = _pads(x, attrs["padding"], kernel, stride, ones)
        spec = [(0, 0), (0, 0)] + [tuple(p) for p in pads]
        axes = tuple(range(-len(kernel), 0))
        if kind == "max":
            padded = np.pad(x, spec, constant_values=-np.inf)
            y = _windows(padded, kernel, stride, ones).max(axis=axes)
        else:
            total = _windows(np.pad(x, spec), kernel, stride, ones).sum(axis=axes)
            if attrs["count_include_pad"]:
                count = np.prod(kernel)
            else:
                count = _windows(np.pad(np.ones((1, 1) + x.shape[2:], x.dtype), spec), kernel, stride, ones).sum(axis=axes)
            y = total / count
        return _back(y, attrs).astype(ops[0].dtype, copy=False)

    return run_pool


def adaptive_avg_pool2d(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    """torch's adaptive average: output cell i covers [floor(i*H/oh), ceil((i+1)*H/oh))."""
    x = _first(ops[0], attrs)
    if x.ndim != 4:
        raise ValueError(f"takes a 4-d input, got shape {list(ops[0].shape)}")
    (oh, ow), (h, w) = attrs["output_size"], x.shape[2:]
    if oh > h or ow > w:
        raise ValueError(f"output_size {[oh, ow]} is larger than the input's {[h, w]}")
    rows = []
    for i in range(oh):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        rows.append(np.stack([x[:, :, r0:r1, (j * w) // ow : -(-((j + 1) * w) // ow)].mean(axis=(2, 3))
                              for j in range(ow)], axis=-1))  # fmt: skip
    return _back(np.stack(rows, axis=-2), attrs).astype(ops[0].dtype, copy=False)


def batch_norm(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    """Inference batch normalization with the running statistics, along ``axis``."""
    x = ops[0]
    shape = [1] * x.ndim
    shape[attrs["axis"]] = -1
    y = (x - params["mean"].reshape(shape)) / np.sqrt(params["var"].reshape(shape) + attrs["eps"])
    if "scale" in params:
        y = y * params["scale"].reshape(shape)
    if "offset" in params:
        y = y + params["offset"].reshape(shape)
    return y.astype(x.dtype, copy=False)


def layer_norm(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    """Normalization over the last ``axes`` dims (biased variance), then scale and offset."""
    x = ops[0]
    axes = tuple(range(-attrs["axes"], 0))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + attrs["eps"])
    if "scale" in params:
        y = y * params["scale"]
    if "offset" in params:
        y = y + params["offset"]
    return y.astype(x.dtype, copy=False)


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def gelu(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    x = ops[0]
    if attrs["approximate"] == "tanh":
        y = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    else:
        y = 0.5 * x * (1 + _ERF(x / math.sqrt(2)))
    return y.astype(x.dtype, copy=False)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sdpa(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    """softmax(q @ k^T * scale + mask) @ v over the last two dims; a bool mask is True where attention
    is allowed, a float mask is added; ``causal`` allows only keys at or before the query."""
    q, k, v = ops[:3]
    scale = attrs["scale"] if attrs["scale"] is not None else 1 / math.sqrt(q.shape[-1])
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    if attrs["causal"]:
        lq, lk = scores.shape[-2:]
        scores = np.where(np.tril(np.ones((lq, lk), bool)), scores, -np.inf)
    if len(ops) == 4:
        mask = ops[3]
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    return (softmax(scores, -1) @ v).astype(q.dtype, copy=False)


def multi_head_attention(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    """torch ``nn.MultiheadAttention`` (batch_first, no mask): in_proj_weight is [q; k; v] (3E x E)."""
    q, k, v = ops
    e, heads = q.shape[-1], attrs["num_heads"]
    w = params["in_proj_weight"]
    b = params.get("in_proj_bias", np.zeros(3 * e, q.dtype))
    projected = [x @ w[i * e : (i + 1) * e].T + b[i * e : (i + 1) * e] for i, x in enumerate((q, k, v))]
    split = [p.reshape(p.shape[:-1] + (heads, e // heads)).swapaxes(-2, -3) for p in projected]  # B, H, L, D
    out = sdpa(split, {}, {"scale": None, "causal": False})
    out = out.swapaxes(-2, -3).reshape(q.shape[:-1] + (e,))
    y = out @ params["out_proj_weight"].T
    if "out_proj_bias" in params:
        y = y + params["out_proj_bias"]
    return y.astype(q.dtype, copy=False)


def _reshape(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    x = ops[0]
    return x.reshape([x.shape[int(d[1])] if isinstance(d, str) else d for d in attrs["shape"]])


def _flatten(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    x = ops[0]
    start, end = attrs["start"] % max(x.ndim, 1), attrs["end"] % max(x.ndim, 1)
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :]) if x.ndim else x.reshape(1)


def _split(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> list[np.ndarray] | np.ndarray:
    """Pieces of ``sizes`` along ``axis`` (they must add up to its length, as torch.split requires); one
    piece is the array itself, the node's only result."""
    x, sizes = ops[0], attrs["sizes"]
    if sum(sizes) != x.shape[attrs["axis"]]:
        raise ValueError(f"split: sizes {sizes[:8]} do not add up to dim {attrs['axis']} of shape {list(x.shape)}")
    parts = np.split(x, np.cumsum(sizes)[:-1], axis=attrs["axis"])
    return parts if len(parts) > 1 else parts[0]


def _slice(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    index = [slice(None)] * ops[0].ndim
    index[attrs["axis"]] = slice(attrs["start"], attrs["stop"], attrs["step"])
    return ops[0][tuple(index)]


def _constant(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    return params["value"] if "value" in params else np.asarray(attrs["value"], dtype=attrs["dtype"])


def _linear(ops: Sequence[np.ndarray], params: Params, attrs: Attrs) -> np.ndarray:
    w = params["weight"]
    y = ops[0] @ (w.T if attrs["weight_layout"] == "out_in" else w)
    return (y + params["bias"] if "bias" in params else y).astype(ops[0].dtype, copy=False)


def _binary(fn: Callable[[Any, Any], Any]) -> Callable[[Sequence[np.ndarray], Params, Attrs], np.ndarray]:
    return lambda ops, params, attrs: np.asarray(fn(ops[0], ops[1]))


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Sequence[np.ndarray], Params, Attrs], np.ndarray]:
    return lambda ops, params, attrs: fn(ops[0]).astype(ops[0].dtype, copy=False)


#: op -> its NumPy meaning.
OPS_NUMPY: dict[str, Callable[[Sequence[np.ndarray], Params, Attrs], Any]] = {
    "linear": _linear,
    "conv1d": conv,
    "conv2d": conv,
    "max_pool1d": pool("max"),
    "max_pool2d": pool("max"),
    "avg_pool1d": pool("avg"),
    "avg_pool2d": pool("avg"),
    "adaptive_avg_pool2d": adaptive_avg_pool2d,
    "batch_norm": batch_norm,
    "layer_norm": layer_norm,
    "embedding": lambda ops, params, attrs: params["weight"][ops[0].astype(np.int64)],
    "dropout": lambda ops, params, attrs: ops[0],
    "identity": lambda ops, params, attrs: ops[0],
    "relu": _unary(lambda x: np.maximum(x, 0)),
    "gelu": gelu,
    "sigmoid": _unary(lambda x: 1 / (1 + np.exp(-x))),
    "tanh": _unary(np.tanh),
    "softmax": lambda ops, params, attrs: softmax(ops[0], attrs["axis"]).astype(ops[0].dtype, copy=False),
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "div": _binary(np.divide),
    "matmul": _binary(np.matmul),
    "constant": _constant,
    "mean": lambda ops, params, attrs: ops[0].mean(axis=tuple(attrs["axes"]), keepdims=attrs["keepdims"]),
    "reshape": _reshape,
    "flatten": _flatten,
    "permute": lambda ops, params, attrs: np.transpose(ops[0], attrs["dims"]),
    "transpose": lambda ops, params, attrs: np.swapaxes(ops[0], attrs["dim0"], attrs["dim1"]),
    "squeeze": lambda ops, params, attrs: np.squeeze(ops[0], attrs["axis"]),
    "unsqueeze": lambda ops, params, attrs: np.expand_dims(ops[0], attrs["axis"]),
    "concat": lambda ops, params, attrs: np.concatenate(ops, axis=attrs["axis"]),
    "split": _split,
    "slice": _slice,
    "scaled_dot_product_attention": sdpa,
    "multi_head_attention": multi_head_attention,
}


def run(graph: Graph, params: Mapping[str, np.ndarray], *inputs: np.ndarray) -> list[np.ndarray]:
    """Evaluate ``graph`` on ``inputs`` with the file's tensors ``params`` (name -> array); the outputs, in order.

    Raises:
        ValueError: the inputs' number, ranks or fixed dims differ from the graph's inputs, or a node cannot be
            computed on them (the message names the node and its op; the op's own error is its cause).
    """
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"the graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    values: dict[str, Any] = {}
    for (name, _, shape), x in zip(graph.inputs, inputs):
        x = np.asarray(x)
        if x.ndim != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, x.shape)):
            raise ValueError(f"input {name!r}: expected shape {list(shape)}, got {list(x.shape)}")
        values[name] = x
    for node in graph.nodes:
        ops = [values[ref] for ref in node.inputs]
        try:
            result = OPS_NUMPY[node.op](ops, {role: params[t] for role, t in node.params.items()}, node.attrs)
        except (ValueError, IndexError, TypeError, ZeroDivisionError, OverflowError, MemoryError) as exc:
            raise ValueError(f"node {node.name!r} ({node.op}): {str(exc)[:200] or type(exc).__name__}") from exc
        if node.outputs == 1:
            values[node.name] = result
        else:
            for i, part in enumerate(result):
                values[f"{node.name}:{i}"] = part
    return [values[ref] for ref in graph.outputs]
