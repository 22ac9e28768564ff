"""``load_model(path, "torch")``: an ``nn.Module`` that holds the file's tensors and runs the graph with torch ops.

Every op computes what :mod:`.reference` (the NumPy meaning) computes, in both layouts the vocabulary
allows: ``weight_layout`` ``out_in`` (torch) / ``in_out`` (Keras), ``kernel_layout``
``out_in_spatial`` / ``spatial_in_out``, ``data_format`` ``channels_first`` / ``channels_last``, so a
graph captured from Keras runs in torch too. Padding the torch functions cannot take (asymmetric, as
Keras ``"same"`` with stride 2 gives, or wider than half the kernel) is applied with ``F.pad`` first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FormatError
from .graph import Graph
from .reference import same_padding

__all__ = ["OPS_TORCH", "GraphModule", "build"]

Params = Mapping[str, torch.Tensor]
Attrs = Mapping[str, Any]

#: Parameter roles that hold running statistics: registered as buffers, as torch's BatchNorm does.
_BUFFER_ROLES = {("batch_norm", "mean"), ("batch_norm", "var")}


def _first(x: torch.Tensor, attrs: Attrs) -> torch.Tensor:
    return x.movedim(-1, 1) if attrs.get("data_format") == "channels_last" else x


def _back(y: torch.Tensor, attrs: Attrs) -> torch.Tensor:
    return y.movedim(1, -1) if attrs.get("data_format") == "channels_last" else y


def _pads(spatial: Sequence[int], padding: Any, kernel: Sequence[int], stride: Sequence[int],
          dilation: Sequence[int]) -> list[list[int]]:  # fmt: skip
    if padding == "valid":
        return [[0, 0] for _ in spatial]
    if padding == "same":
        return [same_padding(s, k, st, d) for s, k, st, d in zip(spatial, kernel, stride, dilation)]
    return [list(p) for p in padding]


def _flat(pads: Sequence[Sequence[int]]) -> list[int]:
    """``[[low, high]]`` per spatial dim -> ``F.pad``'s order (last dim first)."""
    return [v for low, high in reversed(pads) for v in (low, high)]


def _linear(ops: Sequence[torch.Tensor], params: Params, attrs: Attrs) -> torch.Tensor:
    w = params["weight"]
    return F.linear(ops[0], w if attrs["weight_layout"] == "out_in" else w.t(), params.get("bias"))


def _conv(ops: Sequence[torch.Tensor], params: Params, attrs: Attrs) -> torch.Tensor:
    x, w = _first(ops[0], attrs), params["weight"]
    rank = w.ndim - 2
    if attrs["kernel_layout"] == "spatial_in_out":  # (k..., in/groups, out) -> (out, in/groups, k...)
        w = w.permute(rank + 1, rank, *range(rank))
    pads = _pads(x.shape[2:], attrs["padding"], w.shape[2:], attrs["stride"], attrs["dilation"])
    if all(low == high for low, high in pads):
        padding = [low for low, _ in pads]
    else:
        x, padding = F.pad(x, _flat(pads)), [0] * rank
    conv = F.conv1d if rank == 1 else F.conv2d
    return _back(conv(x, w, params.get("bias"), attrs["stride"], padding, attrs["dilation"], attrs["groups"]), attrs)


def _pool(kind: str, rank: int) -> Callable[[Sequence[torch.Tensor], Params, Attrs], torch.Tensor]:
    max_pool, avg_pool = (F.max_pool1d, F.avg_pool1d) if rank == 1 else (F.max_pool2d, F.avg_pool2d)

    def run(ops: Sequence[torch.Tensor], params: Params, attrs: Attrs) -> torch.Tensor:
        x, kernel = _first(ops[0], attrs), attrs["kernel"]
        stride = attrs["stride"] or kernel
        pads = _pads(x.shape[2:], attrs["padding"], kernel, stride, [1] * rank)
        native = all(low == high and low <= k // 2 for (low, high), k in zip(pads, kernel))
        padding = [low for low, _ in pads] if native else [0] * rank
        if kind == "max":
            x = x if native else F.pad(x, _flat(pads), value=-float("inf"))
            y = max_pool(x, kernel, stride, padding)
        elif native:
            y = avg_pool(x, kernel, stride, padding, count_include_pad=attrs["count_include_pad"])
        elif attrs["count_include_pad"]:
            y = avg_pool(F.pad(x, _flat(pads)), kernel, stride, 0)
        else:  # mean over the window's real elements: pooled sums over pooled counts
            ones = F.pad(torch.ones_like(x[:1, :1]), _flat(pads))
            y = avg_pool(F.pad(x, _flat(pads)), kernel, stride, 0) / avg_pool(ones, kernel, stride, 0)
        return _back(y, attrs)

    return run


def _batch_norm(ops: Sequence[torch.Tensor], params: Params, attrs: Attrs) -> torch.Tensor:
    x = ops[0]
    axis = attrs["axis"] % x.ndim
    moved = x.movedim(axis, 1) if axis != 1 else x
    y = F.batch_norm(
        moved, params["mean"], params["var"], params.get("scale"), params.get("offset"), False, 0.0, attrs["eps"]
    )
    return y.movedim(1, axis) if axis != 1 else y


def _layer_norm(ops: Sequence[torch.Tensor], params: Params, attrs: Attrs) -> torch.Tensor:
    x = ops[0]
    shape = x.shape[x.ndim - attrs["axes"] :]
    scale, offset = params.get("scale"), params.get("offset")
    if all(p is None or p.shape == shape for p in (scale, offset)):
        return F.layer_norm(x, shape, scale, offset, attrs["eps"])
    y = F.layer_norm(x, shape, None, None, attrs["eps"])  # parameters that broadcast differently
    y = y * scale if scale is not None else y
    return y + offset if offset is not None else y


def _sdpa(ops: Sequence[torch.Tensor], params: Params, attrs: Attrs) -> torch.Tensor:
    q, k, v = ops[:3]
    mask, causal = (ops[3] if len(ops) == 4 else None), attrs["causal"]
    if causal and mask is not None:  # torch takes one or the other: fold the causal mask into the given one
        allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        mask = mask & allowed if mask.dtype == torch.bool else mask.masked_fill(~allowed, -float("inf"))
        causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=attrs["scale"])


def _mha(ops: Sequence[torch.Tensor], params: Params, attrs: Attrs) -> torch.Tensor:
    """torch ``nn.MultiheadAttention`` (batch_first, no mask), as :func:`.reference.multi_head_attention`."""
    q, k, v = ops
    e, heads = q.shape[-1], attrs["num_heads"]
    weights = params["in_proj_weight"].chunk(3)
    bias = params.get("in_proj_bias")
    biases = bias.chunk(3) if bias is not None else (None, None, None)
    split = [
        F.linear(x, w, b).unflatten(-1, (heads, e // heads)).transpose(-2, -3)
        for x, w, b in zip((q, k, v), weights, biases)
    ]
    out = F.scaled_dot_product_attention(*split).transpose(-2, -3).flatten(-2)
    return F.linear(out, params["out_proj_weight"], params.get("out_proj_bias"))


def _reshape(ops: Sequence[torch.Tensor], params: Params, attrs: Attrs) -> torch.Tensor:
    x = ops[0]
    return x.reshape([x.shape[int(d[1])] if isinstance(d, str) else d for d in attrs["shape"]])


def _slice(ops: Sequence[torch.Tensor], params: Params, attrs: Attrs) -> torch.Tensor:
    x = ops[0]
    index = [slice(None)] * x.ndim
    index[attrs["axis"]] = slice(attrs["start"], attrs["stop"], attrs["step"])
    return x[tuple(index)]


def _mean(ops: Sequence[torch.Tensor], params: Params, attrs: Attrs) -> torch.Tensor:
    x = ops[0]
    return torch.mean(x, dim=attrs["axes"], keepdim=attrs["keepdims"]) if attrs["axes"] else x


def _unary(
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[Sequence[torch.Tensor], Params, Attrs], torch.Tensor]:
    return lambda ops, params, attrs: fn(ops[0])


def _binary(fn: Callable[[Any, Any], torch.Tensor]) -> Callable[[Sequence[torch.Tensor], Params, Attrs], torch.Tensor]:
    return lambda ops, params, attrs: fn(ops[0], ops[1])


#: op -> its torch computation ``(operands, params, attrs) -> tensor`` (``constant`` is in :meth:`GraphModule.forward`).
OPS_TORCH: dict[str, Callable[[Sequence[torch.Tensor], Params, Attrs], Any]] = {
    "linear": _linear,
    "conv1d": _conv,
    "conv2d": _conv,
    "max_pool1d": _pool("max", 1),
    "max_pool2d": _pool("max", 2),
    "avg_pool1d": _pool("avg", 1),
    "avg_pool2d": _pool("avg", 2),
    "adaptive_avg_pool2d": lambda ops, p, a: _back(F.adaptive_avg_pool2d(_first(ops[0], a), a["output_size"]), a),
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "embedding": lambda ops, p, a: F.embedding(ops[0].long(), p["weight"]),
    "dropout": lambda ops, p, a: ops[0],
    "identity": lambda ops, p, a: ops[0],
    "relu": _unary(torch.relu),
    "gelu": lambda ops, p, a: F.gelu(ops[0], approximate=a["approximate"]),
    "sigmoid": _unary(torch.sigmoid),
    "tanh": _unary(torch.tanh),
    "softmax": lambda ops, p, a: torch.softmax(ops[0], dim=a["axis"]),
    "add": _binary(torch.add),
    "sub": _binary(torch.sub),
    "mul": _binary(torch.mul),
    "div": _binary(torch.div),
    "matmul": _binary(torch.matmul),
    "mean": _mean,
    "reshape": _reshape,
    "flatten": lambda ops, p, a: torch.flatten(ops[0], a["start"], a["end"]),
    "permute": lambda ops, p, a: ops[0].permute(a["dims"]),
    "transpose": lambda ops, p, a: ops[0].transpose(a["dim0"], a["dim1"]),
    "squeeze": lambda ops, p, a: ops[0].squeeze(a["axis"]),
    "unsqueeze": lambda ops, p, a: ops[0].unsqueeze(a["axis"]),
    "concat": lambda ops, p, a: torch.cat(list(ops), dim=a["axis"]),
    "split": lambda ops, p, a: torch.split(ops[0], a["sizes"], dim=a["axis"]),
    "slice": _slice,
    "scaled_dot_product_attention": _sdpa,
    "multi_head_attention": _mha,
}


def _tensor(array: np.ndarray) -> torch.Tensor:
    from ..frameworks import get_adapter

    array = np.asarray(array)
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, order="C")
    return get_adapter("torch").from_numpy(array, {}, {})


class GraphModule(nn.Module):
    """The rebuilt model: ``model(*inputs)`` gives the output tensor (a tuple for several outputs).

    Its ``state_dict()`` holds the file's tensors under the file's names (submodules by the dotted
    names): floating tensors are ``nn.Parameter`` s (``requires_grad=True``) except batch_norm's running
    statistics, which are buffers like every non-floating tensor. Built in eval mode.
    """

    def __init__(self, graph: Graph, tensors: Mapping[str, Any]) -> None:
        super().__init__()
        buffers = {
            name for node in graph.nodes for role, name in node.params.items() if (node.op, role) in _BUFFER_ROLES
        }
        self._tf_graph = graph
        self._tf_slots: dict[str, tuple[nn.Module, str]] = {}
        for name, array in tensors.items():
            t = array if isinstance(array, torch.Tensor) else _tensor(array)
            self._tf_slots[name] = _register(self, name, t, name in buffers or not t.is_floating_point())
        self.eval()

    def forward(self, *inputs: Any) -> Any:
        graph = self._tf_graph
        if len(inputs) != len(graph.inputs):
            raise ValueError(f"the graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
        values: dict[str, Any] = {}
        for (name, _, shape), x in zip(graph.inputs, inputs):
            x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
            if x.ndim != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, x.shape)):
                raise ValueError(f"input {name!r}: expected shape {list(shape)}, got {list(x.shape)}")
            values[name] = x
        device = next(iter(values.values())).device
        for node in graph.nodes:
            params = {role: getattr(*self._tf_slots[t]) for role, t in node.params.items()}
            if node.op == "constant":
                result = params["value"] if "value" in params else torch.tensor(
                    node.attrs["value"], dtype=getattr(torch, node.attrs["dtype"]), device=device)  # fmt: skip
            else:
                result = OPS_TORCH[node.op]([values[r] for r in node.inputs], params, node.attrs)
            if node.op != "split":
                values[node.name] = result
            elif node.outputs == 1:
                values[node.name] = result[0]
            else:
                values.update((f"{node.name}:{i}", part) for i, part in enumerate(result))
        outputs = [values[ref] for ref in graph.outputs]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _register(root: nn.Module, name: str, t: torch.Tensor, buffer: bool) -> tuple[nn.Module, str]:
    """Put ``t`` at the dotted ``name`` under ``root`` (creating plain submodules); returns (module, leaf)."""
    *path, leaf = name.split(".")
    module = root
    try:
        for part in path:
            child = module._modules.get(part)
            if child is None:
                child = nn.Module()
                module.add_module(part, child)
            module = child
        if buffer:
            module.register_buffer(leaf, t)
        else:
            module.register_parameter(leaf, nn.Parameter(t, requires_grad=t.is_floating_point()))
    except (KeyError, TypeError) as exc:
        raise FormatError(f"tensor {name!r}: cannot be placed in a torch module under this name ({exc})") from None
    return module, leaf


def build(graph: Graph, tensors: Mapping[str, Any]) -> GraphModule:
    """The torch model of ``graph`` over ``tensors`` (name -> NumPy array or torch tensor), in eval mode.

    Raises:
        FormatError: a tensor name that cannot be a module path (empty parts, a clash with a module
            attribute, or a name that is both a tensor and a prefix of another).
    """
    return GraphModule(graph, tensors)
