"""The leaf ``torch.nn`` modules :mod:`.capture_torch` maps to vocabulary nodes (``call_module`` nodes).

Each mapping follows the module's definition in pytorch/pytorch (``torch/nn/modules/*.py``) in eval mode and
refuses a setting the vocabulary cannot express (``ceil_mode=True``, ``padding_mode="reflect"``, a mask passed
to ``nn.MultiheadAttention``...), naming the node and the op. ``nn.TransformerEncoderLayer`` /
``nn.TransformerEncoder`` are written as the ops their ``forward`` runs in eval mode
(``torch/nn/modules/transformer.py``: ``_sa_block``, ``_ff_block``, ``norm_first``), dropout being the identity,
the parameters under their state_dict names. Functions and methods: :mod:`.capture_torch_layers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import fx, nn

from .capture_torch import Capture, Multi, refuse
from .capture_torch_layers import (
    _adaptive,
    _arg,
    _pool,
    _softmax_dim,
    emit_conv,
    emit_layer_norm,
)

__all__ = ["call_module"]

def _pname(module: nn.Module, path: str, attr: str) -> str | None:
    return f"{path}.{attr}" if getattr(module, attr, None) is not None else None


def _linear(cap: Capture, node: fx.Node, m: nn.Linear, path: str, x: str, base: str) -> str:
    return cap.emit("linear", [x], base, {"weight": f"{path}.weight", "bias": _pname(m, path, "bias")})


def _mha(cap: Capture, node: fx.Node, m: nn.MultiheadAttention, path: str, q: str, k: str, v: str, rank: int) -> str:
    op = "torch.nn.MultiheadAttention"
    if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
        raise refuse(
            node, op, "only equal q/k/v embedding dims, no bias_k/bias_v and add_zero_attn=False are in the vocabulary"
        )
    transpose = not m.batch_first and rank == 3
    if transpose:  # (L, N, E) -> (N, L, E), the layout of the vocabulary's multi_head_attention
        moved = {
            r: cap.emit("transpose", [r], f"{path}.to_batch_first", dim0=0, dim1=1) for r in dict.fromkeys((q, k, v))
        }
        q, k, v = moved[q], moved[k], moved[v]
    params = {"in_proj_weight": f"{path}.in_proj_weight", "in_proj_bias": _pname(m, path, "in_proj_bias"),
              "out_proj_weight": f"{path}.out_proj.weight",
              "out_proj_bias": f"{path}.out_proj.bias" if m.out_proj.bias is not None else None}  # fmt: skip
    y = cap.emit("multi_head_attention", [q, k, v], path, params, num_heads=int(m.num_heads))
    return cap.emit("transpose", [y], f"{path}.to_seq_first", dim0=0, dim1=1) if transpose else y


def _activation(cap: Capture, node: fx.Node, act: Any, path: str, x: str) -> str:
    if act is F.relu or isinstance(act, nn.ReLU):
        return cap.emit("relu", [x], f"{path}.activation")
    if act is F.gelu:
        return cap.emit("gelu", [x], f"{path}.activation", approximate="none")
    if isinstance(act, nn.GELU):
        return cap.emit("gelu", [x], f"{path}.activation", approximate=act.approximate)
    raise refuse(node, "torch.nn.TransformerEncoderLayer", f"activation {getattr(act, '__name__', type(act).__name__)} "
                 "is not relu or gelu")  # fmt: skip


def _encoder_layer(cap: Capture, node: fx.Node, m: nn.TransformerEncoderLayer, path: str, x: str, rank: int) -> str:
    """``TransformerEncoderLayer.forward`` in eval mode without masks (torch/nn/modules/transformer.py)."""

    def norm(which: str, h: str) -> str:
        n = getattr(m, which)
        return emit_layer_norm(cap, h, _pname(n, f"{path}.{which}", "weight"), _pname(n, f"{path}.{which}", "bias"),
                               len(n.normalized_shape), n.eps, f"{path}.{which}")  # fmt: skip

    def sa_block(h: str) -> str:
        return _mha(cap, node, m.self_attn, f"{path}.self_attn", h, h, h, rank)

    def ff_block(h: str) -> str:
        h = _linear(cap, node, m.linear1, f"{path}.linear1", h, f"{path}.linear1")
        h = _activation(cap, node, m.activation, path, h)
        return _linear(cap, node, m.linear2, f"{path}.linear2", h, f"{path}.linear2")

    if m.norm_first:
        x = cap.emit("add", [x, sa_block(norm("norm1", x))], f"{path}.residual1")
        return cap.emit("add", [x, ff_block(norm("norm2", x))], f"{path}.residual2")
    x = norm("norm1", cap.emit("add", [x, sa_block(x)], f"{path}.residual1"))
    return norm("norm2", cap.emit("add", [x, ff_block(x)], f"{path}.residual2"))


def _no_masks(node: fx.Node, op: str, args: Sequence[Any], kwargs: dict, names: Sequence[str], first: int) -> None:
    for i, name in enumerate(names, start=first):
        value = _arg(args, kwargs, i, name)
        if value is not None and value is not False:
            raise refuse(node, op, f"{name} is not in the vocabulary (only unmasked attention); pass None")


# ---------------------------------------------------------------------------------------------- modules


def call_module(cap: Capture, node: fx.Node, m: nn.Module) -> Any:
    """Vocabulary nodes for a leaf module call; a reference, or :class:`Multi` for tuple results."""
    path, args, kwargs = node.target, list(node.args), dict(node.kwargs)
    op = f"torch.nn.{type(m).__name__}"
    if not isinstance(m, _KNOWN):
        raise refuse(node, op, "module outside the vocabulary of IR version 1 (docs/FORMAT.md, 'Model graphs'); "
                     "one made of vocabulary ops may be registered: tensorfile.model.register_composite")  # fmt: skip
    x = cap.ref(args[0], node) if args else None
    if isinstance(m, nn.MultiheadAttention):
        _no_masks(node, op, args, kwargs, ("key_padding_mask",), 3)  # forward(query, key, value, key_padding_mask,
        _no_masks(node, op, args, kwargs, ("attn_mask",), 5)  # need_weights, attn_mask, average_attn_weights,
        _no_masks(node, op, args, kwargs, ("is_causal",), 7)  # is_causal)
        q, k, v = (cap.ref(_arg(args, kwargs, i, n), node) for i, n in enumerate(("query", "key", "value")))
        y = _mha(cap, node, m, path, q, k, v, len(cap.tensor(args[0]).shape))
        return Multi((y, None), "nn.MultiheadAttention returns (output, attention weights)")
    if x is None:
        raise refuse(node, op, "a module called without a tensor input")
    rank = len(cap.tensor(args[0]).shape)
    if isinstance(m, nn.TransformerEncoderLayer):
        _no_masks(node, op, args, kwargs, ("src_mask", "src_key_padding_mask", "is_causal"), 1)
        return _encoder_layer(cap, node, m, path, x, rank)
    if isinstance(m, nn.TransformerEncoder):
        _no_masks(node, op, args, kwargs, ("mask", "src_key_padding_mask", "is_causal"), 1)
        for i, layer in enumerate(m.layers):
            x = _encoder_layer(cap, node, layer, f"{path}.layers.{i}", x, rank)
        if m.norm is not None:
            n = m.norm
            x = emit_layer_norm(cap, x, _pname(n, f"{path}.norm", "weight"), _pname(n, f"{path}.norm", "bias"),
                                len(n.normalized_shape), n.eps, f"{path}.norm")  # fmt: skip
        return x
    if len(args) + len(kwargs) != 1:
        raise refuse(node, op, "called with more than one argument")
    if isinstance(m, nn.Linear):
        return _linear(cap, node, m, path, x, path)
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        if m.padding_mode != "zeros":
            raise refuse(node, op, f"padding_mode {m.padding_mode!r} is not in the vocabulary (zeros only)")
        return emit_conv(cap, node, x, len(m.kernel_size), f"{path}.weight", _pname(m, path, "bias"), m.stride,
                         m.padding, m.dilation, m.groups, path)  # fmt: skip
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)):
        return _pool(cap, node, m, op, path, x, rank)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return _adaptive(cap, node, op, m.output_size, args[0], x, path)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.running_mean is None or m.running_var is None:
            raise refuse(node, op, "track_running_stats=False: eval mode normalizes by the batch's statistics, "
                         "which the vocabulary's batch_norm (running statistics) does not")  # fmt: skip
        params = {"scale": _pname(m, path, "weight"), "offset": _pname(m, path, "bias"),
                  "mean": f"{path}.running_mean", "var": f"{path}.running_var"}  # fmt: skip
        return cap.emit("batch_norm", [x], path, params, eps=float(m.eps), axis=1)
    if isinstance(m, nn.LayerNorm):
        return emit_layer_norm(
            cap, x, _pname(m, path, "weight"), _pname(m, path, "bias"), len(m.normalized_shape), m.eps, path
        )
    if isinstance(m, nn.Embedding):
        if m.max_norm is not None:
            raise refuse(node, op, "max_norm renormalizes the weight in place during forward (a side effect)")
        return cap.emit("embedding", [x], path, {"weight": f"{path}.weight"})
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return cap.emit("dropout", [x], path)
    if isinstance(m, nn.Identity):
        return cap.emit("identity", [x], path)
    for cls, name in ((nn.ReLU, "relu"), (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh")):
        if isinstance(m, cls):
            return cap.emit(name, [x], path)
    if isinstance(m, nn.GELU):
        return cap.emit("gelu", [x], path, approximate=m.approximate)
    if isinstance(m, nn.Softmax):
        return cap.emit("softmax", [x], path, axis=_softmax_dim(m.dim, rank))
    if isinstance(m, nn.Flatten):
        return cap.emit("flatten", [x], path, start=int(m.start_dim), end=int(m.end_dim))
    raise refuse(node, op, "module outside the vocabulary of IR version 1 (see docs/FORMAT.md, 'Model graphs')")


#: The leaf modules :func:`call_module` maps.
_KNOWN = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder, nn.Linear, nn.Conv1d, nn.Conv2d,
          nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d,
          nn.LayerNorm, nn.Embedding, nn.modules.dropout._DropoutNd, nn.Identity, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU,
          nn.Softmax, nn.Flatten)  # fmt: skip
