"""``load_model(path, "jax")``: the graph evaluated with ``jax.numpy`` / ``jax.lax``, jit-compiled.

Each op of the vocabulary is one function ``(operands, params, attrs) -> result`` over JAX arrays that
computes what :mod:`.reference` (the NumPy meaning, ``docs/FORMAT.md`` "Model graphs") computes: both
weight layouts of ``linear`` (``out_in`` torch / MXNet, ``in_out`` Flax / Keras), both kernel layouts
and data formats of convolutions and pooling (``lax.conv_general_dilated`` with ``OIHW`` / ``HWIO``
and ``NCHW`` / ``NHWC``), ``"same"`` padding as :func:`.reference.same_padding` computes it. Products
run at ``lax.Precision.HIGHEST`` so that float32 results agree with the reference on any accelerator
(TF32 would not).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .graph import Graph
from .reference import same_padding

__all__ = ["JaxModel", "build"]

Attrs = Mapping[str, Any]


def _highest() -> Any:
    from jax import lax

    return lax.Precision.HIGHEST


def _pads(spatial: Sequence[int], padding: Any, kernel: Sequence[int], stride: Sequence[int],
          dilation: Sequence[int]) -> list[tuple[int, int]]:  # fmt: skip
    if padding == "valid":
        return [(0, 0)] * len(kernel)
    if padding == "same":
        return [tuple(same_padding(s, k, st, d)) for s, k, st, d in zip(spatial, kernel, stride, dilation)]  # type: ignore[misc]
    return [(int(lo), int(hi)) for lo, hi in padding]


def _spatial(x: Any, attrs: Attrs, rank: int) -> tuple[int, ...]:
    return tuple(x.shape[1:-1]) if attrs.get("data_format") == "channels_last" else tuple(x.shape[2 : 2 + rank])


def _linear(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    import jax.numpy as jnp

    w = params["weight"]
    y = jnp.matmul(ops[0], w.T if attrs["weight_layout"] == "out_in" else w, precision=_highest())
    return y + params["bias"] if "bias" in params else y


def _conv(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    from jax import lax

    x, w = ops[0], params["weight"]
    rank = w.ndim - 2
    letters = "HW"[:rank] if rank <= 2 else "DHW"
    last = attrs["data_format"] == "channels_last"
    data = f"N{letters}C" if last else f"NC{letters}"
    kernel_spec = f"{letters}IO" if attrs["kernel_layout"] == "spatial_in_out" else f"OI{letters}"
    kernel = w.shape[:rank] if attrs["kernel_layout"] == "spatial_in_out" else w.shape[2:]
    pads = _pads(_spatial(x, attrs, rank), attrs["padding"], kernel, attrs["stride"], attrs["dilation"])
    y = lax.conv_general_dilated(x, w, tuple(attrs["stride"]), pads, rhs_dilation=tuple(attrs["dilation"]),
                                 dimension_numbers=(data, kernel_spec, data), feature_group_count=attrs["groups"],
                                 precision=_highest())  # fmt: skip
    if "bias" in params:
        y = y + (params["bias"] if last else params["bias"].reshape((-1,) + (1,) * rank))
    return y


def _pool(kind: str) -> Callable[[Sequence[Any], Mapping[str, Any], Attrs], Any]:
    def run_pool(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
        import jax.numpy as jnp
        from jax import lax

        x = ops[0]
        kernel = list(attrs["kernel"])
        rank = len(kernel)
        stride = list(attrs["stride"] or kernel)
        pads = _pads(_spatial(x, attrs, rank), attrs["padding"], kernel, stride, [1] * rank)
        last = attrs["data_format"] == "channels_last"

        def full(values: list[Any], fill: Any) -> tuple[Any, ...]:
            return tuple([fill] + values + [fill]) if last else tuple([fill, fill] + values)

        window, strides, padding = full(kernel, 1), full(stride, 1), full(pads, (0, 0))
        if kind == "max":
            return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, padding).astype(x.dtype)
        total = lax.reduce_window(x, jnp.zeros((), x.dtype), lax.add, window, strides, padding)
        if attrs["count_include_pad"]:
            return total / math.prod(kernel)
        ones = jnp.ones(full(list(_spatial(x, attrs, rank)), 1), x.dtype)
        return total / lax.reduce_window(ones, jnp.zeros((), x.dtype), lax.add, window, strides, padding)

    return run_pool


def _adaptive_avg_pool2d(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    """torch's adaptive average: output cell i covers [floor(i*H/oh), ceil((i+1)*H/oh))."""
    import jax.numpy as jnp

    x = ops[0]
    last = attrs["data_format"] == "channels_last"
    if last:
        x = jnp.moveaxis(x, -1, 1)
    (oh, ow), (h, w) = attrs["output_size"], x.shape[2:]
    rows = []
    for i in range(oh):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        rows.append(jnp.stack([x[:, :, r0:r1, (j * w) // ow : -(-((j + 1) * w) // ow)].mean(axis=(2, 3))
                               for j in range(ow)], axis=-1))  # fmt: skip
    y = jnp.stack(rows, axis=-2)
    return jnp.moveaxis(y, 1, -1) if last else y


def _batch_norm(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    from jax import lax

    x = ops[0]
    shape = [1] * x.ndim
    shape[attrs["axis"]] = -1
    y = (x - params["mean"].reshape(shape)) * lax.rsqrt(params["var"].reshape(shape) + attrs["eps"])
    if "scale" in params:
        y = y * params["scale"].reshape(shape)
    return y + params["offset"].reshape(shape) if "offset" in params else y


def _layer_norm(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    from jax import lax

    x = ops[0]
    axes = tuple(range(-attrs["axes"], 0))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) * lax.rsqrt(var + attrs["eps"])
    if "scale" in params:
        y = y * params["scale"]
    return y + params["offset"] if "offset" in params else y


def _sdpa(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    import jax
    import jax.numpy as jnp

    q, k, v = ops[:3]
    scale = attrs["scale"] if attrs["scale"] is not None else 1 / math.sqrt(q.shape[-1])
    scores = jnp.matmul(q, jnp.swapaxes(k, -1, -2), precision=_highest()) * scale
    if attrs["causal"]:
        lq, lk = scores.shape[-2:]
        scores = jnp.where(jnp.tril(jnp.ones((lq, lk), bool)), scores, -jnp.inf)
    if len(ops) == 4:
        mask = ops[3]
        scores = jnp.where(mask, scores, -jnp.inf) if mask.dtype == bool else scores + mask
    return jnp.matmul(jax.nn.softmax(scores, axis=-1), v, precision=_highest())


def _multi_head_attention(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    """torch ``nn.MultiheadAttention`` (batch_first, no mask): in_proj_weight is [q; k; v] (3E x E)."""
    import jax.numpy as jnp

    q, k, v = ops
    e, heads = q.shape[-1], attrs["num_heads"]
    w = params["in_proj_weight"]
    b = params.get("in_proj_bias", jnp.zeros(3 * e, q.dtype))
    projected = [jnp.matmul(x, w[i * e : (i + 1) * e].T, precision=_highest()) + b[i * e : (i + 1) * e]
                 for i, x in enumerate((q, k, v))]  # fmt: skip
    split = [jnp.swapaxes(p.reshape(p.shape[:-1] + (heads, e // heads)), -2, -3) for p in projected]
    out = _sdpa(split, {}, {"scale": None, "causal": False})
    out = jnp.swapaxes(out, -2, -3).reshape(q.shape[:-1] + (e,))
    y = jnp.matmul(out, params["out_proj_weight"].T, precision=_highest())
    return y + params["out_proj_bias"] if "out_proj_bias" in params else y


def _reshape(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    x = ops[0]
    return x.reshape([x.shape[int(d[1])] if isinstance(d, str) else d for d in attrs["shape"]])


def _flatten(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    x = ops[0]
    if not x.ndim:
        return x.reshape(1)
    start, end = attrs["start"] % x.ndim, attrs["end"] % x.ndim
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :])


def _split(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> list[Any]:
    import jax.numpy as jnp

    return jnp.split(ops[0], [int(b) for b in np.cumsum(attrs["sizes"])[:-1]], axis=attrs["axis"])


def _slice(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    index = [slice(None)] * ops[0].ndim
    index[attrs["axis"]] = slice(attrs["start"], attrs["stop"], attrs["step"])
    return ops[0][tuple(index)]


def _constant(ops: Sequence[Any], params: Mapping[str, Any], attrs: Attrs) -> Any:
    import jax.numpy as jnp

    return params["value"] if "value" in params else jnp.asarray(attrs["value"], dtype=attrs["dtype"])


def _ops() -> dict[str, Callable[[Sequence[Any], Mapping[str, Any], Attrs], Any]]:
    import jax
    import jax.numpy as jnp

    def unary(fn: Callable[[Any], Any]) -> Callable[..., Any]:
        return lambda ops, params, attrs: fn(ops[0])

    def binary(fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        return lambda ops, params, attrs: fn(ops[0], ops[1])

    return {
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
        "embedding": lambda ops, params, attrs: jnp.take(params["weight"], ops[0].astype(jnp.int32), axis=0),
        "dropout": unary(lambda x: x),
        "identity": unary(lambda x: x),
        "relu": unary(jax.nn.relu),
        "gelu": lambda ops, params, attrs: jax.nn.gelu(ops[0], approximate=attrs["approximate"] == "tanh"),
        "sigmoid": unary(jax.nn.sigmoid),
        "tanh": unary(jnp.tanh),
        "softmax": lambda ops, params, attrs: jax.nn.softmax(ops[0], axis=attrs["axis"]),
        "add": binary(jnp.add),
        "sub": binary(jnp.subtract),
        "mul": binary(jnp.multiply),
        "div": binary(jnp.divide),
        "matmul": binary(lambda a, b: jnp.matmul(a, b, precision=_highest())),
        "constant": _constant,
        "mean": lambda ops, params, attrs: ops[0].mean(axis=tuple(attrs["axes"]), keepdims=attrs["keepdims"]),
        "reshape": _reshape,
        "flatten": _flatten,
        "permute": lambda ops, params, attrs: jnp.transpose(ops[0], attrs["dims"]),
        "transpose": lambda ops, params, attrs: jnp.swapaxes(ops[0], attrs["dim0"], attrs["dim1"]),
        "squeeze": lambda ops, params, attrs: jnp.squeeze(ops[0], attrs["axis"]),
        "unsqueeze": lambda ops, params, attrs: jnp.expand_dims(ops[0], attrs["axis"]),
        "concat": lambda ops, params, attrs: jnp.concatenate(ops, axis=attrs["axis"]),
        "split": _split,
        "slice": _slice,
        "scaled_dot_product_attention": _sdpa,
        "multi_head_attention": _multi_head_attention,
    }


def evaluate(graph: Graph, params: Mapping[str, Any], *inputs: Any) -> list[Any]:
    """The graph's outputs on ``inputs`` with ``params`` (name -> JAX array); traceable by ``jax.jit``."""
    table = _ops()
    values: dict[str, Any] = dict(zip((name for name, _, _ in graph.inputs), inputs))
    for node in graph.nodes:
        result = table[node.op]([values[ref] for ref in node.inputs], {r: params[t] for r, t in node.params.items()},
                                node.attrs)  # fmt: skip
        if node.outputs == 1:
            values[node.name] = result
        else:
            values.update({f"{node.name}:{i}": part for i, part in enumerate(result)})
    return [values[ref] for ref in graph.outputs]


class JaxModel:
    """A callable JAX model: ``model(*inputs)`` gives the output array (a tuple for several outputs).

    Attributes:
        graph: the validated graph.
        params: the file's tensors by name, as JAX arrays (``hidden.kernel``...); replace entries to
            run other values (they are arguments of the jitted function, not constants).
    """

    def __init__(self, graph: Graph, params: Mapping[str, Any]) -> None:
        import jax

        self.graph, self.params = graph, dict(params)
        self._forward = jax.jit(lambda params, *inputs: evaluate(graph, params, *inputs))

    def apply(self, params: Mapping[str, Any], *inputs: Any) -> Any:
        """The outputs with ``params`` in place of :attr:`params` (a pure function, for ``jax.grad``)."""
        outputs = evaluate(self.graph, params, *inputs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __call__(self, *inputs: Any) -> Any:
        """Run on arrays shaped like the graph's inputs.

        Raises:
            ValueError: the inputs' number, ranks or fixed dims differ from the graph's inputs.
        """
        if len(inputs) != len(self.graph.inputs):
            raise ValueError(f"the graph takes {len(self.graph.inputs)} inputs, got {len(inputs)}")
        for (name, _, shape), x in zip(self.graph.inputs, inputs):
            dims = tuple(np.shape(x))
            if len(dims) != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, dims)):
                raise ValueError(f"input {name!r}: expected shape {list(shape)}, got {list(dims)}")
        outputs = self._forward(self.params, *inputs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def build(graph: Graph, tensors: Mapping[str, np.ndarray]) -> JaxModel:
    """The JAX model of ``graph`` over ``tensors`` (name -> NumPy array), each put on JAX's default device."""
    import jax.numpy as jnp

    return JaxModel(graph, {name: jnp.asarray(value) for name, value in tensors.items()})
