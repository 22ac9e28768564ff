"""Hypothesis strategies: tensors of every supported dtype and layout, nested in containers."""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from typing import Any

import ml_dtypes
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import bits

STANDARD = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
            "float16", "float32", "float64", "complex64", "complex128"]  # fmt: skip
ML = ["bfloat16", "float8_e4m3fn", "float8_e5m2"]
ALL_DTYPES = STANDARD + ML

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def numpy_arrays(draw: Any, dtypes: list[str] = ALL_DTYPES) -> np.ndarray:
    name = draw(st.sampled_from(dtypes))
    shape = draw(shapes)
    if name in ML:
        dtype = np.dtype(getattr(ml_dtypes, name))
        raw = draw(hnp.arrays(np.dtype(f"u{dtype.itemsize}"), shape))
        array = raw.view(dtype)  # every bit pattern, NaNs included
    else:
        dtype = np.dtype(name)
        if dtype.itemsize > 1 and draw(st.booleans()):
            dtype = dtype.newbyteorder(">")
        array = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(["c", "fortran", "strided", "transposed"]))
    if layout == "fortran":
        array = np.asfortranarray(array)
    elif layout == "strided" and array.ndim:
        array = np.repeat(array, 2, axis=0)[::2]
    elif layout == "transposed":
        array = array.T
    return array


@st.composite
def torch_tensors(draw: Any) -> Any:
    import torch

    from tensorfile.frameworks import get_adapter

    array = draw(numpy_arrays())
    tensor = get_adapter("torch")._tensor(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("=")))
    if tensor.ndim >= 2 and draw(st.booleans()):
        tensor = tensor.transpose(0, 1)  # non-contiguous
    if draw(st.booleans()) and tensor.is_floating_point():
        tensor = torch.nn.Parameter(tensor, requires_grad=draw(st.booleans()))
    return tensor


plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
keys = st.one_of(st.text(max_size=6), st.integers(-5, 50), st.booleans(), st.none(), st.tuples(st.integers(0, 3), st.text(max_size=2)))


def trees(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.one_of(leaves, plain),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.lists(children, max_size=4).map(tuple),
            st.dictionaries(keys, children, max_size=4),
            st.dictionaries(st.text(max_size=4), children, max_size=3).map(OrderedDict),
        ),
        max_leaves=12,
    )


def native(obj: Any) -> Any:
    """``obj`` with big-endian arrays in native byte order: what loading gives back."""
    if isinstance(obj, np.ndarray):
        return obj.astype(obj.dtype.newbyteorder("="))
    if isinstance(obj, dict):
        return type(obj)((k, native(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(native(v) for v in obj)
    return obj


def _float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def assert_same(a: Any, b: Any, where: str = "obj") -> None:
    """Equal to the bit, with the same container, key and tensor types."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert [(type(k), k) for k in a] == [(type(k), k) for k in b], f"{where}: keys differ"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert _float_bits(a) == _float_bits(b) or (math.isnan(a) and math.isnan(b)), f"{where}: {a} != {b}"
    elif a is None or isinstance(a, (bool, int, str)):
        assert a == b, f"{where}: {a!r} != {b!r}"
    else:
        assert bits(a) == bits(b), f"{where}: tensors differ"
        if type(a).__module__.startswith("torch"):
            assert a.requires_grad == b.requires_grad, f"{where}: requires_grad differs"
