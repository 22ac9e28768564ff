"""The closed, versioned vocabulary of graph ops (IR version 1): each op's operands, parameters and attributes.

Semantics of every op are specified in ``docs/FORMAT.md`` ("Model graphs") and implemented once, as
the reference, by :mod:`tensorfile.model.reference` (NumPy). This module only says what a well-formed
node of each op looks like, so that :mod:`tensorfile.model.graph` can refuse a malformed or hostile
graph before anything is allocated. Nothing here is ever looked up by a name from a file except
through :data:`OPS` (a plain dict): a file cannot name code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["IR_VERSION", "OpSpec", "OPS", "Attr"]

#: The graph format's version; a reader refuses a higher one.
IR_VERSION = 1

_MAX_DIM = 1 << 31
_MAX_SMALL = 1 << 16  # kernel sizes, strides, dilations, groups, heads, axes


def _int(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and low <= v <= high


def _ints(count: int | None, low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, list) and (count is None or len(v) == count) and len(v) <= 8
                      and all(type(x) is int and low <= x <= high for x in v))  # fmt: skip


def _choice(*options: Any) -> Callable[[Any], bool]:
    return lambda v: type(v) in (str, bool) and v in options


def _number(v: Any) -> bool:
    return type(v) in (int, float) and abs(v) < 1e300


def _eps(v: Any) -> bool:
    return type(v) in (int, float) and 0 <= v < 1


def _padding(rank: int) -> Callable[[Any], bool]:
    """``"valid"``, ``"same"`` (stride 1 only, checked by the reference), or ``[[low, high]] * rank``."""
    return lambda v: v in ("valid", "same") or (
        isinstance(v, list) and len(v) == rank and all(_ints(2, 0, _MAX_SMALL)(p) for p in v)
    )


def _shape_spec(v: Any) -> bool:
    """A reshape target: ints >= 0, at most one -1, or ``"$k"`` (dim k of the operand)."""
    if not isinstance(v, list) or len(v) > 8:
        return False
    ok = all((type(x) is int and -1 <= x < _MAX_DIM) or (isinstance(x, str) and len(x) == 2 and x[0] == "$"
                                                          and x[1].isdigit()) for x in v)  # fmt: skip
    return ok and sum(1 for x in v if x == -1) <= 1


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


@dataclass(frozen=True)
class Attr:
    """An attribute: its check, and its default (``required`` when there is none)."""

    check: Callable[[Any], bool]
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class OpSpec:
    """What a node of one op holds.

    Attributes:
        inputs: (fewest, most) operands.
        params: parameter roles: True = required, False = optional. Each names a tensor of the file.
        param_ranks: the rank each parameter role must have (absent: any rank).
        attrs: attribute name -> :class:`Attr`; other attribute names are refused.
        outputs: number of results (``None``: as many as ``attrs["sizes"]`` lists, for ``split``).
    """

    inputs: tuple[int, int]
    params: dict[str, bool] = field(default_factory=dict)
    param_ranks: dict[str, int] = field(default_factory=dict)
    attrs: dict[str, Attr] = field(default_factory=dict)
    outputs: int | None = 1


_AXIS = Attr(_int(-8, 7), required=True)
_FIRST = Attr(_choice("channels_first", "channels_last"), "channels_first")


def _conv(rank: int) -> OpSpec:
    return OpSpec(
        (1, 1), {"weight": True, "bias": False}, {"weight": rank + 2, "bias": 1},
        {"stride": Attr(_ints(rank, 1, _MAX_SMALL), [1] * rank), "padding": Attr(_padding(rank), "valid"),
         "dilation": Attr(_ints(rank, 1, _MAX_SMALL), [1] * rank), "groups": Attr(_int(1, _MAX_SMALL), 1),
         "data_format": _FIRST,
         "kernel_layout": Attr(_choice("out_in_spatial", "spatial_in_out"), "out_in_spatial")},
    )  # fmt: skip


def _pool(rank: int, average: bool) -> OpSpec:
    attrs = {"kernel": Attr(_ints(rank, 1, _MAX_SMALL), required=True), "stride": Attr(_optional(_ints(rank, 1, _MAX_SMALL))),
             "padding": Attr(_padding(rank), "valid"), "data_format": _FIRST}  # fmt: skip
    if average:
        attrs["count_include_pad"] = Attr(_choice(True, False), True)
    return OpSpec((1, 1), attrs=attrs)


_UNARY = OpSpec((1, 1))
_BINARY = OpSpec((2, 2))

#: Every op of IR version 1. Semantics: docs/FORMAT.md, "Model graphs"; reference: tensorfile.model.reference.
OPS: dict[str, OpSpec] = {
    # layers
    "linear": OpSpec((1, 1), {"weight": True, "bias": False}, {"weight": 2, "bias": 1},
                     {"weight_layout": Attr(_choice("out_in", "in_out"), "out_in")}),
    "conv1d": _conv(1),
    "conv2d": _conv(2),
    "max_pool1d": _pool(1, False),
    "max_pool2d": _pool(2, False),
    "avg_pool1d": _pool(1, True),
    "avg_pool2d": _pool(2, True),
    "adaptive_avg_pool2d": OpSpec((1, 1), attrs={"output_size": Attr(_ints(2, 1, _MAX_SMALL), required=True),
                                                 "data_format": _FIRST}),
    "batch_norm": OpSpec((1, 1), {"scale": False, "offset": False, "mean": True, "var": True},
                         {"scale": 1, "offset": 1, "mean": 1, "var": 1},
                         {"eps": Attr(_eps, 1e-5), "axis": Attr(_int(-8, 7), 1)}),
    "layer_norm": OpSpec((1, 1), {"scale": False, "offset": False}, {},
                         {"eps": Attr(_eps, 1e-5), "axes": Attr(_int(1, 8), 1)}),
    "embedding": OpSpec((1, 1), {"weight": True}, {"weight": 2}),
    "dropout": _UNARY,
    "identity": _UNARY,
    # activations
    "relu": _UNARY,
    "gelu": OpSpec((1, 1), attrs={"approximate": Attr(_choice("none", "tanh"), "none")}),
    "sigmoid": _UNARY,
    "tanh": _UNARY,
    "softmax": OpSpec((1, 1), attrs={"axis": Attr(_int(-8, 7), -1)}),
    # arithmetic (NumPy broadcasting)
    "add": _BINARY,
    "sub": _BINARY,
    "mul": _BINARY,
    "div": _BINARY,
    "matmul": _BINARY,
    "constant": OpSpec((0, 0), {"value": False}, {}, {"value": Attr(_optional(_number)),
                                                      "dtype": Attr(_choice("float32", "float64", "int64", "int32"), "float32")}),
    "mean": OpSpec((1, 1), attrs={"axes": Attr(_ints(None, -8, 7), required=True),
                                  "keepdims": Attr(_choice(True, False), False)}),
    # shapes
    "reshape": OpSpec((1, 1), attrs={"shape": Attr(_shape_spec, required=True)}),
    "flatten": OpSpec((1, 1), attrs={"start": Attr(_int(-8, 7), 1), "end": Attr(_int(-8, 7), -1)}),
    "permute": OpSpec((1, 1), attrs={"dims": Attr(_ints(None, 0, 7), required=True)}),
    "transpose": OpSpec((1, 1), attrs={"dim0": _AXIS, "dim1": _AXIS}),
    "squeeze": OpSpec((1, 1), attrs={"axis": _AXIS}),
    "unsqueeze": OpSpec((1, 1), attrs={"axis": _AXIS}),
    "concat": OpSpec((1, 64), attrs={"axis": _AXIS}),
    "split": OpSpec((1, 1), attrs={"axis": _AXIS, "sizes": Attr(_ints(None, 0, _MAX_DIM), required=True)}, outputs=None),
    "slice": OpSpec((1, 1), attrs={"axis": _AXIS, "start": Attr(_int(-_MAX_DIM, _MAX_DIM), 0),
                                   "stop": Attr(_optional(_int(-_MAX_DIM, _MAX_DIM))),
                                   "step": Attr(_int(1, _MAX_DIM), 1)}),
    # attention
    "scaled_dot_product_attention": OpSpec((3, 4), attrs={"scale": Attr(_optional(_number)),
                                                          "causal": Attr(_choice(True, False), False)}),
    "multi_head_attention": OpSpec(
        (3, 3),
        {"in_proj_weight": True, "in_proj_bias": False, "out_proj_weight": True, "out_proj_bias": False},
        {"in_proj_weight": 2, "in_proj_bias": 1, "out_proj_weight": 2, "out_proj_bias": 1},
        {"num_heads": Attr(_int(1, _MAX_SMALL), required=True)},
    ),
}
