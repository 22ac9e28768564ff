"""What each Keras 3 layer and ``keras.ops`` operation is in vocabulary ops (used by :mod:`.capture_keras`).

:func:`convert` turns one recorded call (a ``keras.src.ops.node.Node``) into graph nodes. The
meanings followed are Keras' own (``keras/src/layers/...``, ``keras/src/ops/...`` of Keras 3):

- ``Dense``: ``x @ kernel + bias`` (kernel ``(in, out)``: ``linear`` with ``weight_layout="in_out"``),
  then its activation, traced as a function.
- ``Conv1D`` / ``Conv2D``: cross-correlation, kernel ``(k..., in/groups, out)``
  (``kernel_layout="spatial_in_out"``); ``"same"`` pads as TensorFlow (the extra after), recorded
  as explicit padding where a stride is above 1; ``Conv1D`` ``"causal"`` pads ``(k-1)*dilation``
  before.
- pooling: ``"same"`` average pooling does not count the padding (``count_include_pad=False``);
  ``GlobalAveragePooling1D/2D``: ``mean`` over the spatial axes.
- ``BatchNormalization``: inference, the moving statistics, ``epsilon``, ``axis``;
  ``LayerNormalization``: over the trailing ``axis`` dims (biased variance).
- ``MultiHeadAttention`` (rank-3 inputs, no masks): decomposed into ``constant`` nodes of its own
  kernels and biases (names and values unchanged), ``reshape``, ``matmul``, ``add``, ``permute`` and
  ``scaled_dot_product_attention`` with scale ``1/sqrt(key_dim)``, because the vocabulary's
  ``multi_head_attention`` has torch's packed layout.

Layers of other classes from Keras itself are refused; ``Sequential`` / functional sub-models and
user layers with their own ``call`` are traced into.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

from .capture_keras import Tracer, _snake
from .graph import UnsupportedArchitectureError
from .reference import same_padding

__all__ = ["convert"]

Handler = Callable[[Tracer, Any, Any, str], list]


def _what(layer: Any, name: str) -> str:
    return f"layer {name!r} ({type(layer).__name__})"


def _refuse(layer: Any, name: str, why: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(f"{_what(layer, name)}: {why}")


def _plain(layer: Any, name: str) -> None:
    """Refuse weights the vocabulary cannot hold as they are (LoRA, quantized)."""
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise _refuse(layer, name, "LoRA or quantized weights are not in the vocabulary")


def _variable(layer: Any, attr: str) -> Any:
    """The layer's own variable (``_kernel``), not the property that may compute from it (LoRA)."""
    own = getattr(layer, f"_{attr}", None)
    return own if own is not None else getattr(layer, attr)


def _activation(tr: Tracer, fn: Any, ref: str, like: Any, name: str) -> str:
    """The layer's activation function applied to ``ref`` (traced, so any function of keras.ops works)."""
    tr.refs[id(like)] = ref  # ``like``: the symbolic tensor the activation applies to, for its shape
    tr.keep(like)
    return tr.trace(fn, (like,), {}, name, f"activation {getattr(fn, '__name__', fn)!r} of {name!r}")[0]


def _out_like(node: Any) -> Any:
    return node.outputs[0]


def _dense(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    _plain(layer, name)
    kernel = _variable(layer, "kernel")
    params = {"weight": tr.weight(kernel, _what(layer, name))}
    if layer.use_bias:
        params["bias"] = tr.weight(layer.bias, _what(layer, name))
    x = tr.value(node.arguments.args[0], _what(layer, name))
    pre = _stand_in(tr, node)
    y = tr.emit("linear", [x], name, params, {"weight_layout": "in_out"})
    return [_activation(tr, layer.activation, y, pre, name)]


def _stand_in(tr: Tracer, node: Any) -> Any:
    """A symbolic tensor shaped like the node's output (the value before the layer's activation)."""
    out = _out_like(node)
    return tr.keras.KerasTensor(out.shape, dtype=out.dtype)


def _spatial_pads(layer: Any, name: str, shape: tuple, kernel: tuple, strides: tuple, dilation: tuple,
                  padding: str, first: bool) -> Any:  # fmt: skip
    """``"valid"``, ``"same"`` (all strides 1) or explicit ``[[low, high], ...]`` padding."""
    if padding == "causal":
        return [[(kernel[0] - 1) * dilation[0], 0]]
    if padding == "valid" or (padding == "same" and all(s == 1 for s in strides)):
        return padding
    sizes = shape[2:] if first else shape[1:-1]
    if any(s is None for s in sizes):
        raise _refuse(layer, name, f"'same' padding with strides {list(strides)} needs fixed spatial dims, "
                                   f"found {list(shape)}")
    pads = [same_padding(s, k, st, d) for s, k, st, d in zip(sizes, kernel, strides, dilation)]
    return pads if any(any(p) for p in pads) else "valid"


def _conv(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    _plain(layer, name)
    what = _what(layer, name)
    x_t = node.arguments.args[0]
    first = layer.data_format == "channels_first"
    padding = _spatial_pads(layer, name, tuple(x_t.shape), layer.kernel_size, layer.strides, layer.dilation_rate,
                            layer.padding, first)  # fmt: skip
    kernel = _variable(layer, "kernel")
    params = {"weight": tr.weight(kernel, what)}
    if layer.use_bias:
        params["bias"] = tr.weight(layer.bias, what)
    attrs = {"stride": list(layer.strides), "padding": padding, "dilation": list(layer.dilation_rate),
             "groups": layer.groups, "data_format": layer.data_format, "kernel_layout": "spatial_in_out"}  # fmt: skip
    y = tr.emit(f"conv{layer.rank}d", [tr.value(x_t, what)], name, params, attrs)
    return [_activation(tr, layer.activation, y, _stand_in(tr, node), name)]


def _pool(kind: str) -> Handler:
    def run(tr: Tracer, node: Any, layer: Any, name: str) -> list:
        x_t = node.arguments.args[0]
        rank = len(layer.pool_size)
        first = layer.data_format == "channels_first"
        strides = tuple(layer.strides or layer.pool_size)
        padding = _spatial_pads(layer, name, tuple(x_t.shape), layer.pool_size, strides, (1,) * rank,
                                layer.padding.lower(), first)  # fmt: skip
        attrs = {"kernel": list(layer.pool_size), "stride": list(strides), "padding": padding,
                 "data_format": layer.data_format}  # fmt: skip
        if kind == "avg":
            attrs["count_include_pad"] = False  # TensorFlow / Keras average only what is inside
        return [tr.emit(f"{kind}_pool{rank}d", [tr.value(x_t, _what(layer, name))], name, attrs=attrs)]

    return run


def _global_avg(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    x_t = node.arguments.args[0]
    rank = len(x_t.shape)
    axes = list(range(2, rank)) if layer.data_format == "channels_first" else list(range(1, rank - 1))
    attrs = {"axes": axes, "keepdims": bool(layer.keepdims)}
    return [tr.emit("mean", [tr.value(x_t, _what(layer, name))], name, attrs=attrs)]


def _batch_norm(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    what = _what(layer, name)
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    if axis is None:
        raise _refuse(layer, name, f"normalization over several axes {layer.axis} is not in the vocabulary")
    if getattr(layer, "renorm", False):
        raise _refuse(layer, name, "batch renormalization is not in the vocabulary")
    params = {"mean": tr.weight(layer.moving_mean, what), "var": tr.weight(layer.moving_variance, what)}
    if layer.scale:
        params["scale"] = tr.weight(layer.gamma, what)
    if layer.center:
        params["offset"] = tr.weight(layer.beta, what)
    x = tr.value(node.arguments.args[0], what)
    return [tr.emit("batch_norm", [x], name, params, {"eps": float(layer.epsilon), "axis": int(axis)})]


def _layer_norm(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    what = _what(layer, name)
    x_t = node.arguments.args[0]
    rank = len(x_t.shape)
    axes = sorted({a % rank for a in ([layer.axis] if isinstance(layer.axis, int) else layer.axis)})
    if axes != list(range(rank - len(axes), rank)) or getattr(layer, "rms_scaling", False):
        raise _refuse(layer, name, f"only normalization over the trailing dims (no rms_scaling) is in the "
                                   f"vocabulary, found axis={layer.axis}")
    params = {}
    if layer.scale:
        params["scale"] = tr.weight(layer.gamma, what)
    if layer.center:
        params["offset"] = tr.weight(layer.beta, what)
    attrs = {"eps": float(layer.epsilon), "axes": len(axes)}
    return [tr.emit("layer_norm", [tr.value(x_t, what)], name, params, attrs)]


def _embedding(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    _plain(layer, name)
    if layer.mask_zero:
        raise _refuse(layer, name, "mask_zero=True (Keras masks) cannot be recorded")
    table = _variable(layer, "embeddings")
    x = tr.value(node.arguments.args[0], _what(layer, name))
    return [tr.emit("embedding", [x], name, {"weight": tr.weight(table, _what(layer, name))})]


def _unary(op: str, **attrs: Any) -> Handler:
    def run(tr: Tracer, node: Any, layer: Any, name: str) -> list:
        return [tr.emit(op, [tr.value(node.arguments.args[0], _what(layer, name))], name, attrs=attrs)]

    return run


def _activation_layer(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    x_t = node.arguments.args[0]
    return [_activation(tr, layer.activation, tr.value(x_t, _what(layer, name)), x_t, name)]


def _relu_layer(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    if layer.max_value is not None or layer.negative_slope or layer.threshold:
        raise _refuse(layer, name, "ReLU with max_value, negative_slope or threshold is not in the vocabulary")
    return _unary("relu")(tr, node, layer, name)


def _softmax_layer(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    if axis is None or node.arguments.kwargs.get("mask") is not None:
        raise _refuse(layer, name, f"softmax over several axes ({layer.axis}) or with a mask is not in the vocabulary")
    return _unary("softmax", axis=int(axis))(tr, node, layer, name)


def _flatten(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    x_t = node.arguments.args[0]
    x, rank = tr.value(x_t, _what(layer, name)), len(x_t.shape)
    if layer.data_format == "channels_first" and rank > 2:  # Keras moves channels last first
        x = tr.emit("permute", [x], f"{name}.channels_last", attrs={"dims": [0, *range(2, rank), 1]})
    return [tr.emit("flatten", [x], name, attrs={"start": 1, "end": -1})]


def _reshape(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    x = tr.value(node.arguments.args[0], _what(layer, name))
    return [tr.emit("reshape", [x], name, attrs={"shape": ["$0", *[int(d) for d in layer.target_shape]]})]


def _permute(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    x = tr.value(node.arguments.args[0], _what(layer, name))
    return [tr.emit("permute", [x], name, attrs={"dims": [0, *[int(d) for d in layer.dims]]})]


def _merge(op: str) -> Handler:
    def run(tr: Tracer, node: Any, layer: Any, name: str) -> list:
        tensors = list(node.arguments.args[0])
        if len({len(t.shape) for t in tensors}) != 1:
            raise _refuse(layer, name, "inputs of different ranks (Keras expands them at axis 1) are not recorded")
        refs = [tr.value(t, _what(layer, name)) for t in tensors]
        if op == "concat":
            return [tr.emit("concat", refs, name, attrs={"axis": int(layer.axis)})]
        out = refs[0]
        for i, ref in enumerate(refs[1:], 1):
            out = tr.emit(op, [out, ref], name if i == len(refs) - 1 else f"{name}.{i}")
        return [out]

    return run


def _mha(tr: Tracer, node: Any, layer: Any, name: str) -> list:
    """Keras ``MultiHeadAttention`` (``keras/src/layers/attention/multi_head_attention.py``) in vocabulary
    ops: projections ``einsum("abc,cde->abde")`` as a matmul with the kernel ``(E, H, D)`` reshaped to
    ``(E, H*D)``, heads moved before the sequence, scaled dot-product attention, and the output
    ``einsum("abcd,cde->abe")`` as a matmul with the kernel ``(H, Dv, E_out)`` reshaped to ``(H*Dv, E_out)``."""
    what = _what(layer, name)
    bound = inspect.signature(layer.call).bind(*node.arguments.args, **node.arguments.kwargs)
    call = bound.arguments
    for key in ("query_mask", "value_mask", "key_mask", "attention_mask"):
        if call.get(key) is not None:
            raise _refuse(layer, name, f"{key} is not recorded (no masks in the vocabulary's attention)")
    if call.get("return_attention_scores"):
        raise _refuse(layer, name, "return_attention_scores=True is not recorded")
    query, value = call["query"], call["value"]
    key = call.get("key") if call.get("key") is not None else value
    if any(len(t.shape) != 3 for t in (query, key, value)) or tuple(layer._attention_axes) != (1,):
        raise _refuse(layer, name, "only (batch, seq, features) inputs attending over axis 1 are recorded")
    for t in (query, key, value):
        if getattr(t, "_keras_mask", None) is not None:
            raise _refuse(layer, name, "inputs carrying Keras masks are not recorded")
    heads = layer._num_heads

    def project(t: Any, dense: Any, tag: str) -> str:
        kernel = _variable(dense, "kernel")
        e, h, d = kernel.shape
        w = tr.emit("reshape", [tr.param_const(kernel, what)], f"{name}.{tag}.kernel_2d", attrs={"shape": [e, h * d]})
        y = tr.emit("matmul", [tr.value(t, what), w], f"{name}.{tag}.matmul")
        y = tr.emit("reshape", [y], f"{name}.{tag}.heads", attrs={"shape": ["$0", "$1", h, d]})
        if dense.bias is not None:
            y = tr.emit("add", [y, tr.param_const(dense.bias, what)], f"{name}.{tag}.bias")
        return tr.emit("permute", [y], f"{name}.{tag}", attrs={"dims": [0, 2, 1, 3]})  # B, H, L, D

    for dense in (layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense):
        _plain(dense, name)
    q, k, v = project(query, layer._query_dense, "query"), project(key, layer._key_dense, "key"), \
        project(value, layer._value_dense, "value")  # fmt: skip
    attrs = {"scale": 1.0 / math.sqrt(layer._key_dim), "causal": bool(call.get("use_causal_mask"))}
    out = tr.emit("scaled_dot_product_attention", [q, k, v], f"{name}.attention", attrs=attrs)
    out = tr.emit("permute", [out], f"{name}.attention.seq_first", attrs={"dims": [0, 2, 1, 3]})
    dense = layer._output_dense
    kernel = _variable(dense, "kernel")
    if len(kernel.shape) != 3 or kernel.shape[0] != heads:
        raise _refuse(layer, name, f"an output_shape of several dims is not recorded (kernel {list(kernel.shape)})")
    h, dv, e_out = kernel.shape
    out = tr.emit("reshape", [out], f"{name}.attention.merged", attrs={"shape": ["$0", "$1", h * dv]})
    w = tr.emit("reshape", [tr.param_const(kernel, what)], f"{name}.output.kernel_2d", attrs={"shape": [h * dv, e_out]})
    if dense.bias is None:
        return [tr.emit("matmul", [out, w], name)]
    out = tr.emit("matmul", [out, w], f"{name}.output.matmul")
    return [tr.emit("add", [out, tr.param_const(dense.bias, what)], name)]


def _layer_handlers() -> dict[type, Handler]:
    import keras

    L = keras.layers
    table: dict[type, Handler] = {
        L.Dense: _dense, L.Conv1D: _conv, L.Conv2D: _conv,
        L.MaxPooling1D: _pool("max"), L.MaxPooling2D: _pool("max"),
        L.AveragePooling1D: _pool("avg"), L.AveragePooling2D: _pool("avg"),
        L.GlobalAveragePooling1D: _global_avg, L.GlobalAveragePooling2D: _global_avg,
        L.BatchNormalization: _batch_norm, L.LayerNormalization: _layer_norm, L.Embedding: _embedding,
        L.Dropout: _unary("dropout"), L.SpatialDropout1D: _unary("dropout"), L.SpatialDropout2D: _unary("dropout"),
        L.GaussianDropout: _unary("dropout"), L.GaussianNoise: _unary("dropout"), L.Identity: _unary("identity"),
        L.Activation: _activation_layer, L.ReLU: _relu_layer, L.Softmax: _softmax_layer,
        L.Flatten: _flatten, L.Reshape: _reshape, L.Permute: _permute,
        L.Add: _merge("add"), L.Subtract: _merge("sub"), L.Multiply: _merge("mul"), L.Concatenate: _merge("concat"),
        L.MultiHeadAttention: _mha,
    }  # fmt: skip
    return table


# -- keras.ops operations ------------------------------------------------------------------------------


def _binary(op: str) -> Callable[[Tracer, Any, str, str], list]:
    def run(tr: Tracer, node: Any, name: str, what: str) -> list:
        a, b = node.arguments.args[:2]
        like = a if isinstance(a, tr.keras.KerasTensor) else b
        operands = [tr.value(a, what, like, f"{name}.const"), tr.value(b, what, like, f"{name}.const")]
        return [tr.emit(op, operands, name)]

    return run


def _one(op: str, attrs: Callable[[Any, Any], dict[str, Any]] | None = None) -> Callable[[Tracer, Any, str, str], list]:
    def run(tr: Tracer, node: Any, name: str, what: str) -> list:
        x_t = node.arguments.args[0]
        return [tr.emit(op, [tr.value(x_t, what)], name, attrs=attrs(node.operation, x_t) if attrs else None)]

    return run


def _negative(tr: Tracer, node: Any, name: str, what: str) -> list:
    x_t = node.arguments.args[0]
    return [tr.emit("mul", [tr.value(x_t, what), tr.value(-1, what, x_t, f"{name}.const")], name)]


def _relu_op(tr: Tracer, node: Any, name: str, what: str) -> list:
    op = node.operation
    if getattr(op, "max_value", None) is not None or getattr(op, "negative_slope", 0) or getattr(op, "threshold", 0):
        raise UnsupportedArchitectureError(f"{what}: relu with max_value, negative_slope or threshold is not "
                                           "in the vocabulary")
    return _one("relu")(tr, node, name, what)


def _concat(tr: Tracer, node: Any, name: str, what: str) -> list:
    refs = [tr.value(t, what) for t in node.arguments.args[0]]
    return [tr.emit("concat", refs, name, attrs={"axis": _int_axis(node.operation.axis, what)})]


def _same_dtype(tr: Tracer, node: Any, name: str, what: str) -> list:
    """``convert_to_tensor`` / ``cast`` that keep the dtype (functional models convert their inputs)."""
    x_t, out = node.arguments.args[0], node.outputs[0]
    if str(x_t.dtype) != str(out.dtype):
        raise UnsupportedArchitectureError(f"{what}: a cast from {x_t.dtype} to {out.dtype} is not in the vocabulary")
    return [tr.value(x_t, what)]


def _int_axis(value: Any, what: str) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int):
        raise UnsupportedArchitectureError(f"{what}: axis {value!r}: only one int axis is recorded")
    return value


def _split(tr: Tracer, node: Any, name: str, what: str) -> list:
    op, x_t = node.operation, node.arguments.args[0]
    axis = _int_axis(op.axis, what)
    size = x_t.shape[axis]
    if size is None:
        raise UnsupportedArchitectureError(f"{what}: splitting a dim of unknown size (axis {axis}) is not recorded")
    cuts = op.indices_or_sections
    bounds = [size * i // cuts for i in range(cuts + 1)] if isinstance(cuts, int) else [0, *cuts, size]
    sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    out = tr.emit("split", [tr.value(x_t, what)], name, attrs={"axis": axis, "sizes": sizes})
    return [f"{out}:{i}" for i in range(len(sizes))] if len(sizes) > 1 else [out]


def _get_item(tr: Tracer, node: Any, name: str, what: str) -> list:
    x_t, key = node.arguments.args[:2]
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis or k is None or not isinstance(k, (int, slice)) for k in key) or len(key) > len(x_t.shape):
        raise UnsupportedArchitectureError(f"{what}: only indexing by ints and slices is recorded, "
                                           f"found {str(key)[:80]}")
    out, drop = tr.value(x_t, what), []
    for axis, k in enumerate(key):
        if isinstance(k, slice) and k == slice(None):
            continue
        if isinstance(k, int):
            k, _ = slice(k, k + 1 if k != -1 else None), drop.append(axis)
        if not all(v is None or isinstance(v, int) for v in (k.start, k.stop, k.step)) or (k.step or 1) < 1:
            raise UnsupportedArchitectureError(f"{what}: slice {k} is not recorded (int bounds, positive step)")
        attrs = {"axis": axis, "start": k.start or 0, "stop": k.stop, "step": k.step or 1}
        out = tr.emit("slice", [out], name, attrs=attrs)
    for axis in reversed(drop):
        out = tr.emit("squeeze", [out], name, attrs={"axis": axis})
    return [out]


def _op_handlers() -> dict[type, Callable[[Tracer, Any, str, str], list]]:
    from keras.src.activations.activations import ReLU
    from keras.src.ops import core, nn
    from keras.src.ops import numpy as knp

    def axes(op: Any, x: Any) -> dict[str, Any]:
        axis = op.axis if op.axis is not None else list(range(len(x.shape)))
        return {"axes": [axis] if isinstance(axis, int) else list(axis), "keepdims": bool(op.keepdims)}

    def transpose(op: Any, x: Any) -> dict[str, Any]:
        return {"dims": list(op.axes) if op.axes is not None else list(range(len(x.shape)))[::-1]}

    return {
        knp.Add: _binary("add"), knp.Subtract: _binary("sub"), knp.Multiply: _binary("mul"),
        knp.Divide: _binary("div"), knp.TrueDivide: _binary("div"), knp.Matmul: _binary("matmul"),
        knp.Negative: _negative, nn.Relu: _relu_op, ReLU: _relu_op,
        nn.Sigmoid: _one("sigmoid"), knp.Tanh: _one("tanh"),
        nn.Softmax: _one("softmax", lambda op, x: {"axis": _int_axis(op.axis, "softmax")}),
        nn.Gelu: _one("gelu", lambda op, x: {"approximate": "tanh" if op.approximate else "none"}),
        knp.Reshape: _one("reshape", lambda op, x: {"shape": [int(d) for d in op.newshape]}),
        knp.Transpose: _one("permute", transpose),
        knp.Swapaxes: _one("transpose", lambda op, x: {"dim0": op.axis1, "dim1": op.axis2}),
        knp.ExpandDims: _one("unsqueeze", lambda op, x: {"axis": _int_axis(op.axis, "expand_dims")}),
        knp.Squeeze: _one("squeeze", lambda op, x: {"axis": _int_axis(op.axis, "squeeze")}),
        knp.Mean: _one("mean", axes),
        knp.Concatenate: _concat, knp.Split: _split, knp.GetItem: _get_item,
        core.ConvertToTensor: _same_dtype, core.Cast: _same_dtype,
    }  # fmt: skip


_TABLES: dict[str, dict[type, Any]] = {}


def _find(table: dict[type, Any], operation: Any) -> tuple[type | None, Any]:
    for cls in type(operation).__mro__:
        if cls in table:
            return cls, table[cls]
    return None, None


def convert(tr: Tracer, node: Any, scope: str) -> list:
    """The graph values of ``node``'s outputs, emitting the nodes that compute them.

    Raises:
        UnsupportedArchitectureError: a layer or op outside the vocabulary, naming it.
    """
    import keras
    from keras.src.models.functional import Functional

    if not _TABLES:
        _TABLES["layers"], _TABLES["ops"] = _layer_handlers(), _op_handlers()
    operation = node.operation
    if isinstance(operation, keras.layers.Layer):
        path = tr.paths.get(id(operation))
        if path is None and operation.weights:
            raise UnsupportedArchitectureError(
                f"layer {operation.name!r} ({type(operation).__name__}): has weights but is not an attribute of the "
                "model (a layer created inside call?)"
            )
        name = path or (f"{scope}.{operation.name}" if scope else operation.name)
        base, handler = _find(_TABLES["layers"], operation)
        if handler is not None and type(operation).call is base.call:  # type: ignore[union-attr]
            return handler(tr, node, operation, name)
        from_keras = type(operation).__module__.startswith("keras.")
        if from_keras and not isinstance(operation, (keras.Sequential, Functional)):
            raise _refuse(operation, name, "this Keras layer is not in the vocabulary of IR version 1")
        return tr.call_layer(operation, node.arguments.args, dict(node.arguments.kwargs), name, _what(operation, name))
    _, handler = _find(_TABLES["ops"], operation)
    base = _snake(type(operation).__name__)
    what = f"op {base!r}" + (f" in {scope!r}" if scope else "")
    if handler is None:
        raise UnsupportedArchitectureError(f"{what}: keras.ops.{base} is not in the vocabulary of IR version 1")
    return handler(tr, node, f"{scope}.{base}" if scope else base, what)
