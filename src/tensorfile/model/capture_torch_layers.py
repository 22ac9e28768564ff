"""The torch calls :mod:`.capture_torch` maps to vocabulary nodes: functions and methods (leaf ``torch.nn``
modules: :mod:`.capture_torch_modules`), and the helpers both use.

Each mapping follows the module's or function's definition in pytorch/pytorch (``torch/nn/modules/*.py``,
``torch/nn/functional.py``) in eval mode, and refuses a setting the vocabulary cannot express
(``ceil_mode=True``, ``padding_mode="reflect"``, a mask passed to ``nn.MultiheadAttention``...),
naming the node and the op. ``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder`` are written as
the ops their ``forward`` runs in eval mode (``torch/nn/modules/transformer.py``: ``_sa_block``,
``_ff_block``, ``norm_first``), dropout being the identity, the parameters under their state_dict names.
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .capture_torch import Capture, Handler, Multi, Param, Static, label, refuse

__all__ = ["FUNCTIONS", "METHODS", "static_op"]


def _arg(args: Sequence[Any], kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _ints(value: Any, rank: int) -> list[int]:
    return [int(value)] * rank if isinstance(value, int) else [int(v) for v in value]


def _axis(axis: int, rank: int, node: fx.Node | str, op: Any) -> int:
    if not -rank <= axis < max(rank, 1):
        raise refuse(node, op, f"axis {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)


# ---------------------------------------------------------------------------------------- layer writers


def _padding(padding: Any, rank: int, node: Any, op: Any) -> Any:
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise refuse(node, op, f"padding {padding!r} is not 'valid', 'same' or numbers")
        return padding
    return [[p, p] for p in _ints(padding, rank)]


def emit_conv(cap: Capture, node: fx.Node, x: str, rank: int, weight: str, bias: str | None, stride: Any,
              padding: Any, dilation: Any, groups: int, base: str) -> str:  # fmt: skip
    op = f"conv{rank}d"
    if len(cap.tensor(node).shape) != rank + 2:
        raise refuse(
            node, op, f"input must be batched (N, C, spatial x {rank}); found rank {len(cap.tensor(node).shape)}"
        )
    return cap.emit(op, [x], base, {"weight": weight, "bias": bias}, stride=_ints(stride, rank),
                    padding=_padding(padding, rank, node, op), dilation=_ints(dilation, rank),
                    groups=int(groups))  # fmt: skip


def emit_layer_norm(
    cap: Capture, x: str, weight: str | None, bias: str | None, axes: int, eps: float, base: str
) -> str:
    return cap.emit("layer_norm", [x], base, {"scale": weight, "offset": bias}, eps=float(eps), axes=int(axes))




def _softmax_dim(dim: int | None, rank: int) -> int:
    """``dim=None``: torch's legacy choice (``torch/nn/functional.py`` ``_get_softmax_dim``)."""
    return int(dim) if dim is not None else (0 if rank in (0, 1, 3) else 1)


def _pool(cap: Capture, node: fx.Node, m: Any, op: str, path: str, x: str, rank_in: int) -> str:
    average = isinstance(m, (nn.AvgPool1d, nn.AvgPool2d))
    rank = 1 if isinstance(m, (nn.MaxPool1d, nn.AvgPool1d)) else 2
    if rank_in != rank + 2:
        raise refuse(node, op, f"input must be batched (N, C, spatial x {rank}); found rank {rank_in}")
    if m.ceil_mode:
        raise refuse(node, op, "ceil_mode=True is not in the vocabulary")
    if not average and (any(d != 1 for d in _ints(m.dilation, rank)) or m.return_indices):
        raise refuse(node, op, "dilation > 1 and return_indices are not in the vocabulary")
    if average and getattr(m, "divisor_override", None) is not None:
        raise refuse(node, op, "divisor_override is not in the vocabulary")
    stride = m.stride if m.stride not in (None, (), []) else m.kernel_size
    attrs: dict[str, Any] = {"kernel": _ints(m.kernel_size, rank), "stride": _ints(stride, rank),
                             "padding": _padding(m.padding, rank, node, op)}  # fmt: skip
    if average:
        attrs["count_include_pad"] = bool(m.count_include_pad)
    return cap.emit(f"{'avg' if average else 'max'}_pool{rank}d", [x], path, **attrs)


def _adaptive(cap: Capture, node: fx.Node, op: str, size: Any, arg: Any, x: str, base: str) -> str:
    shape = cap.tensor(arg).shape
    if len(shape) != 4:
        raise refuse(node, op, f"input must be (N, C, H, W); found rank {len(shape)}")
    size = [size, size] if isinstance(size, int) else list(size)
    size = [shape[2 + i] if s is None else int(s) for i, s in enumerate(size)]
    return cap.emit("adaptive_avg_pool2d", [x], base, output_size=size)


# -------------------------------------------------------------------------------------------- functions


def _unary(op: str) -> Handler:
    return lambda cap, node, args, kwargs: cap.emit(op, [cap.ref(args[0], node)], node.name)


def _gelu(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    approximate = cap.static(_arg(args, kwargs, 1, "approximate", "none"), node, "approximate")
    return cap.emit("gelu", [cap.ref(args[0], node)], node.name, approximate=approximate)


def _softmax(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    dim = cap.static(_arg(args, kwargs, 1, "dim"), node, "dim")
    if _arg(args, kwargs, 3 if node.target is F.softmax else 2, "dtype") is not None:
        raise refuse(node, label(node), "softmax with a dtype (a cast) is not in the vocabulary")
    return cap.emit(
        "softmax", [cap.ref(args[0], node)], node.name, axis=_softmax_dim(dim, len(cap.tensor(args[0]).shape))
    )


def _dropout(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    p = cap.static(_arg(args, kwargs, 1, "p", 0.5), node, "p")
    training = cap.static(
        _arg(args, kwargs, 2, "training" if node.target is F.dropout else "train", True), node, "training"
    )
    if training and p:
        raise refuse(
            node, label(node), "dropout with training=True drops at inference too; pass training=self.training"
        )
    return cap.emit("dropout", [cap.ref(args[0], node)], node.name)


def _binary(op: str) -> Handler:
    def handle(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
        dtype = cap.tensor(node).dtype
        a, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "other")
        if kwargs.get("rounding_mode") is not None:
            raise refuse(node, label(node), "division with a rounding_mode is not in the vocabulary")
        left, right = cap.ref(a, node, dtype), cap.ref(b, node, dtype)
        alpha = cap.static(kwargs.get("alpha", 1), node, "alpha")
        if alpha != 1:
            right = cap.emit("mul", [right, cap.ref(alpha, node, dtype)], f"{node.name}_alpha")
        return cap.emit(op, [left, right], node.name)

    return handle


def _neg(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    return cap.emit("mul", [cap.ref(args[0], node), cap.ref(-1, node, cap.tensor(node).dtype)], node.name)


def _concat(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    tensors = _arg(args, kwargs, 0, "tensors")
    dim = cap.static(_arg(args, kwargs, 1, "axis" if node.target is torch.concatenate else "dim", 0), node, "dim")
    refs = [cap.ref(t, node, cap.tensor(node).dtype) for t in tensors]
    return cap.emit("concat", refs, node.name, axis=_axis(dim, len(cap.tensor(node).shape), node, label(node)))


def _flatten(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    start = cap.static(_arg(args, kwargs, 1, "start_dim", 0), node, "start_dim")
    end = cap.static(_arg(args, kwargs, 2, "end_dim", -1), node, "end_dim")
    return cap.emit("flatten", [cap.ref(args[0], node)], node.name, start=start, end=end)


def _reshape(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    """view / reshape: the target written from the result's shape in both runs; dims that follow the batch
    become ``"$k"`` (dim k of the operand, the same in both runs) or the one ``-1``."""
    x = args[0]
    if cap.tensor(node).dtype != cap.tensor(x).dtype:
        raise refuse(node, label(node), "a view as another dtype is not in the vocabulary")
    (in1, in2), out1, out2 = cap.shapes(x), cap.first[node].shape, cap.second[node].shape
    target: list[int | str] = []
    for a, b in zip(out1, out2):
        if a == b:
            target.append(a)
            continue
        same = [k for k in range(min(len(in1), 8)) if in1[k] == a and in2[k] == b]
        if same:
            target.append(f"${same[0]}")
        elif -1 not in target:
            target.append(-1)
        else:
            raise refuse(node, label(node), f"two dims of the result {list(out1)} depend on the batch size")
    return cap.emit("reshape", [cap.ref(x, node)], node.name, shape=target)


def _dims(args: list, kwargs: dict, name: str) -> Any:
    rest = args[1:]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        return rest[0]
    return rest or kwargs.get(name)


def _permute(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    rank = len(cap.tensor(args[0]).shape)
    dims = [_axis(d, rank, node, label(node)) for d in cap.static(_dims(args, kwargs, "dims"), node, "dims")]
    return cap.emit("permute", [cap.ref(args[0], node)], node.name, dims=dims)


def _transpose(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    d0 = cap.static(_arg(args, kwargs, 1, "dim0"), node, "dim0")
    d1 = cap.static(_arg(args, kwargs, 2, "dim1"), node, "dim1")
    return cap.emit("transpose", [cap.ref(args[0], node)], node.name, dim0=d0, dim1=d1)


def _t(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    x = cap.ref(args[0], node)
    return cap.emit("transpose", [x], node.name, dim0=0, dim1=1) if len(cap.tensor(args[0]).shape) == 2 else x


def _squeeze(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    (in1, in2), x = cap.shapes(args[0]), cap.ref(args[0], node)
    dim = cap.static(_arg(args, kwargs, 1, "dim"), node, "dim")
    dims = range(len(in1)) if dim is None else [dim] if isinstance(dim, int) else dim
    dims = sorted({_axis(d, len(in1), node, label(node)) for d in dims}, reverse=True)
    for d in dims:
        if in1[d] == 1 and in2[d] == 1:
            x = cap.emit("squeeze", [x], node.name, axis=d)
        elif in1[d] == 1 or (dim is not None and in2[d] == 1):
            raise refuse(node, label(node), f"squeezes dim {d}, which follows the batch size")
    return x


def _unsqueeze(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    dim = cap.static(_arg(args, kwargs, 1, "dim"), node, "dim")
    return cap.emit(
        "unsqueeze",
        [cap.ref(args[0], node)],
        node.name,
        axis=_axis(dim, len(cap.tensor(node).shape), node, label(node)),
    )


def _split(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> Multi:
    """split / chunk: the sizes are those of the pieces the recording runs gave (fixed, or refused)."""
    rank = len(cap.tensor(args[0]).shape)
    dim = _axis(cap.static(_arg(args, kwargs, 2, "dim", 0), node, "dim"), rank, node, label(node))
    one, two = ([m.shape[dim] for m in run[node]] for run in (cap.first, cap.second))
    if one != two:
        raise refuse(node, label(node), f"split along dim {dim}, which follows the batch size")
    name = cap.emit("split", [cap.ref(args[0], node)], node.name, axis=dim, sizes=one)
    return Multi(tuple(f"{name}:{i}" for i in range(len(one))) if len(one) > 1 else (name,), "split")


def _getitem(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> Any:
    """One element of a tuple result, or basic indexing of a tensor: ints, slices (step >= 1), None, ``...``."""
    source, index = args
    value = cap.values.get(source) if isinstance(source, fx.Node) else None
    if isinstance(value, Multi):
        i = cap.static(index, node, "index")
        ref = value.refs[i] if isinstance(i, int) and -len(value.refs) <= i < len(value.refs) else None
        if ref is None:
            raise refuse(node, label(node), f"element {i!r} of {source.name!r} is not in the vocabulary ({value.what})")
        return ref
    x, rank = cap.ref(source, node), len(cap.tensor(source).shape)
    items = cap.static(index, node, "index")
    items = list(items) if isinstance(items, tuple) else [items]
    if (
        any(not isinstance(i, (int, slice)) and i is not None and i is not Ellipsis for i in items)
        or items.count(Ellipsis) > 1
    ):
        raise refuse(node, label(node), "only basic indexing (ints, slices, None, ...) is in the vocabulary")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        fill = rank - sum(1 for i in items if i is not None and i is not Ellipsis)
        items[at : at + 1] = [slice(None)] * fill
    axis = 0
    for item in items:
        if item is None:
            x = cap.emit("unsqueeze", [x], node.name, axis=axis)
        elif isinstance(item, int):
            x = cap.emit("slice", [x], node.name, axis=axis, start=item, stop=item + 1 if item != -1 else None, step=1)
            x = cap.emit("squeeze", [x], node.name, axis=axis)
            continue
        elif item != slice(None):
            clip = lambda v: None if v is None or abs(v) >= 1 << 31 else int(v)
            step = 1 if item.step is None else item.step
            if step < 1:
                raise refuse(node, label(node), f"slice step {step} is not in the vocabulary (>= 1)")
            x = cap.emit(
                "slice", [x], node.name, axis=axis, start=clip(item.start) or 0, stop=clip(item.stop), step=int(step)
            )
        axis += 1
    return x


def _alias(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> Any:
    """contiguous / clone / detach / ``.data`` / a cast to the same dtype: the operand itself."""
    value = cap.values.get(args[0])
    if isinstance(value, Param) and cap.tensor(node).dtype == cap.tensor(args[0]).dtype:
        return value
    if cap.tensor(node).dtype != cap.tensor(args[0]).dtype or cap.tensor(node).shape != cap.tensor(args[0]).shape:
        raise refuse(
            node,
            label(node),
            f"a cast from {cap.tensor(args[0]).dtype} to {cap.tensor(node).dtype} is not in the vocabulary",
        )
    return cap.ref(args[0], node)


def _getattr(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> Any:
    attr = args[1]
    if attr == "data":
        return _alias(cap, node, args, kwargs)
    if attr == "T":
        rank = len(cap.tensor(args[0]).shape)
        return cap.emit("permute", [cap.ref(args[0], node)], node.name, dims=list(range(rank))[::-1])
    if attr == "mT":
        return cap.emit("transpose", [cap.ref(args[0], node)], node.name, dim0=-2, dim1=-1)
    raise refuse(node, f"getattr .{attr}", "attribute outside the vocabulary")


def _sdpa(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    q, k, v = (cap.ref(_arg(args, kwargs, i, n), node) for i, n in enumerate(("query", "key", "value")))
    mask = _arg(args, kwargs, 3, "attn_mask")
    if cap.static(_arg(args, kwargs, 4, "dropout_p", 0.0), node, "dropout_p"):
        raise refuse(node, label(node), "dropout_p > 0 drops at inference too; pass dropout_p=0 in eval")
    if cap.static(_arg(args, kwargs, 7, "enable_gqa", False), node, "enable_gqa"):
        raise refuse(node, label(node), "enable_gqa is not in the vocabulary")
    causal = bool(cap.static(_arg(args, kwargs, 5, "is_causal", False), node, "is_causal"))
    scale = cap.static(_arg(args, kwargs, 6, "scale"), node, "scale")
    inputs = [q, k, v] + ([cap.ref(mask, node)] if mask is not None else [])
    return cap.emit("scaled_dot_product_attention", inputs, node.name, scale=scale, causal=causal)


def _f_linear(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    weight = cap.param(_arg(args, kwargs, 1, "weight"), node, "weight")
    bias = cap.param(_arg(args, kwargs, 2, "bias"), node, "bias")
    return cap.emit("linear", [cap.ref(args[0], node)], node.name, {"weight": weight, "bias": bias})


def _f_conv(rank: int) -> Handler:
    def handle(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
        weight = cap.param(_arg(args, kwargs, 1, "weight"), node, "weight")
        bias = cap.param(_arg(args, kwargs, 2, "bias"), node, "bias")
        rest = [cap.static(_arg(args, kwargs, i, n, d), node, n)
                for i, n, d in ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1), (6, "groups", 1))]  # fmt: skip
        return emit_conv(cap, node, cap.ref(args[0], node), rank, weight, bias, *rest, node.name)  # type: ignore[arg-type]

    return handle


def _f_layer_norm(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    shape = cap.static(_arg(args, kwargs, 1, "normalized_shape"), node, "normalized_shape")
    weight = cap.param(_arg(args, kwargs, 2, "weight"), node, "weight")
    bias = cap.param(_arg(args, kwargs, 3, "bias"), node, "bias")
    eps = cap.static(_arg(args, kwargs, 4, "eps", 1e-5), node, "eps")
    axes = 1 if isinstance(shape, int) else len(shape)
    return emit_layer_norm(cap, cap.ref(args[0], node), weight, bias, axes, eps, node.name)


def _f_embedding(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    if _arg(args, kwargs, 3, "max_norm") is not None:
        raise refuse(node, label(node), "max_norm renormalizes the weight in place during forward (a side effect)")
    weight = cap.param(_arg(args, kwargs, 1, "weight"), node, "weight")
    return cap.emit("embedding", [cap.ref(args[0], node)], node.name, {"weight": weight})


def _mean(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    rank = len(cap.tensor(args[0]).shape)
    dim = cap.static(_arg(args, kwargs, 1, "dim"), node, "dim")
    keepdim = bool(cap.static(_arg(args, kwargs, 2, "keepdim", False), node, "keepdim"))
    if kwargs.get("dtype") is not None:
        raise refuse(node, label(node), "mean with a dtype (a cast) is not in the vocabulary")
    axes = list(range(rank)) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    return cap.emit("mean", [cap.ref(args[0], node)], node.name, axes=[_axis(a, rank, node, label(node)) for a in axes],
                    keepdims=keepdim)  # fmt: skip


def _f_pool(kind: str, rank: int) -> Handler:
    def handle(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
        names = ("kernel_size", "stride", "padding") + (
            ("ceil_mode", "count_include_pad") + (("divisor_override",) if rank == 2 else ()) if kind == "avg"
            else ("dilation", "ceil_mode", "return_indices"))  # fmt: skip
        defaults = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True, "dilation": 1,
                    "divisor_override": None, "return_indices": False}  # fmt: skip
        values = {n: cap.static(_arg(args, kwargs, i + 1, n, defaults.get(n)), node, n) for i, n in enumerate(names)}
        classes = {("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d,
                   ("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d}  # fmt: skip
        settings = classes[kind, rank](**values)  # the module of the same settings, mapped as one
        x, rank_in = cap.ref(args[0], node), len(cap.tensor(args[0]).shape)
        return _pool(cap, node, settings, label(node), node.name, x, rank_in)

    return handle


def _f_adaptive(cap: Capture, node: fx.Node, args: list, kwargs: dict) -> str:
    size = cap.static(_arg(args, kwargs, 1, "output_size"), node, "output_size")
    return _adaptive(cap, node, label(node), size, args[0], cap.ref(args[0], node), node.name)


def _table(entries: dict[Handler, Sequence[Any]]) -> dict[Any, Handler]:
    return {target: handler for handler, targets in entries.items() for target in targets}


_SHARED = {
    "relu": [F.relu, torch.relu], "sigmoid": [F.sigmoid, torch.sigmoid], "tanh": [F.tanh, torch.tanh],
    "add": [operator.add, torch.add], "sub": [operator.sub, torch.sub, torch.subtract],
    "mul": [operator.mul, torch.mul, torch.multiply],
    "div": [operator.truediv, torch.div, torch.true_divide, torch.divide],
    "matmul": [operator.matmul, torch.matmul, torch.mm, torch.bmm],
}  # fmt: skip

#: call_function target -> handler.
FUNCTIONS: dict[Any, Handler] = {
    **{t: (_unary(op) if op in ("relu", "sigmoid", "tanh") else _binary(op)) for op, ts in _SHARED.items() for t in ts},
    **_table({
        _gelu: [F.gelu], _softmax: [F.softmax, torch.softmax], _dropout: [F.dropout, torch.dropout],
        _neg: [operator.neg, torch.neg], _concat: [torch.cat, torch.concat, torch.concatenate],
        _flatten: [torch.flatten], _reshape: [torch.reshape], _permute: [torch.permute],
        _transpose: [torch.transpose, torch.swapaxes], _t: [torch.t], _squeeze: [torch.squeeze],
        _unsqueeze: [torch.unsqueeze], _split: [torch.split, torch.chunk], _getitem: [operator.getitem],
        _getattr: [builtins.getattr], _sdpa: [F.scaled_dot_product_attention], _f_linear: [F.linear],
        _f_conv(1): [F.conv1d], _f_conv(2): [F.conv2d], _f_layer_norm: [F.layer_norm], _f_embedding: [F.embedding],
        _mean: [torch.mean], _f_pool("max", 1): [F.max_pool1d], _f_pool("max", 2): [F.max_pool2d],
        _f_pool("avg", 1): [F.avg_pool1d], _f_pool("avg", 2): [F.avg_pool2d], _f_adaptive: [F.adaptive_avg_pool2d],
    }),
}  # fmt: skip

#: call_method name -> handler.
METHODS: dict[str, Handler] = {
    **{op: (_unary(op) if op in ("relu", "sigmoid", "tanh") else _binary(op)) for op in _SHARED},
    **_table({
        _softmax: ["softmax"], _neg: ["neg"], _flatten: ["flatten"], _reshape: ["view", "reshape"],
        _permute: ["permute"], _transpose: ["transpose", "swapaxes"], _t: ["t"], _squeeze: ["squeeze"],
        _unsqueeze: ["unsqueeze"], _split: ["split", "chunk"], _mean: ["mean"],
        _alias: ["contiguous", "clone", "detach", "float", "to", "type_as"],
    }),
    "div": _binary("div"), "true_divide": _binary("div"), "subtract": _binary("sub"), "multiply": _binary("mul"),
    "mm": _binary("matmul"), "bmm": _binary("matmul"),
}  # fmt: skip

_STATIC = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.pow, operator.neg,
           operator.mod, operator.getitem, math.sqrt, math.ceil, math.floor}  # fmt: skip


def static_op(cap: Capture, node: fx.Node) -> None:
    """A node whose result is a Python value: allowed only from shapes (``size``, ``dim``, ``.shape``,
    ``.ndim``) and arithmetic on those; anything else reads tensor values into Python and is refused."""
    target = node.target
    inputs = [cap.values.get(n) for n in node.all_input_nodes]
    shape_query = (node.op == "call_method" and target in ("size", "dim")) or (
        node.op == "call_function" and target is builtins.getattr and node.args[1] in ("shape", "ndim")
    )
    if shape_query or (node.op == "call_function" and target in _STATIC and all(isinstance(v, Static) for v in inputs)):
        cap.values[node] = Static(node)
        return
    why = "data-dependent: reads tensor values into Python (or calls an op outside the vocabulary)"
    raise refuse(node, label(node), why)
