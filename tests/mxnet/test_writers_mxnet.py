"""save(format="mxnet" | "mxnet-np") checked by real MXNet 1.9.1 (run inside .venv-mxnet)."""

from __future__ import annotations

import os
import sys

import numpy as onp
import pytest

mx = pytest.importorskip("mxnet")
from mxnet import nd, npx  # noqa: E402

import tensorfile  # noqa: E402
from tensorfile.errors import UnsupportedTypeError  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gluon_mlp import MLP  # noqa: E402

ARRAYS = {
    "w": onp.arange(6, dtype=onp.float32).reshape(2, 3), "d": onp.array([0.25, -1.5]), "h": onp.array([1, 2], onp.float16),
    "u8": onp.array([0, 255], onp.uint8), "i8": onp.array([-128, 5], onp.int8), "i32": onp.array([7, -7], onp.int32),
    "i64": onp.array([2**40], onp.int64), "b": onp.array([True, False, True]), "cube": onp.ones((2, 1, 3), onp.float32),
}  # fmt: skip


@pytest.fixture(autouse=True)
def _legacy_mode():
    npx.reset_np()
    yield
    npx.reset_np()


def test_nd_load_reads_it_and_bytes_match_nd_save(tmp_path):
    ours, theirs = tmp_path / "ours.params", tmp_path / "theirs.params"
    tensorfile.save(ARRAYS, ours, format="mxnet")
    back = nd.load(str(ours))
    assert list(back) == list(ARRAYS)
    for k, a in ARRAYS.items():
        assert back[k].dtype == a.dtype and back[k].shape == a.shape and (back[k].asnumpy() == a).all()
    nd.save(str(theirs), {k: nd.array(a, dtype=a.dtype) for k, a in ARRAYS.items()})
    assert ours.read_bytes() == theirs.read_bytes()  # byte for byte what MXNet writes


def test_list_and_single_array_as_nd_save(tmp_path):
    tensorfile.save([ARRAYS["w"], ARRAYS["b"]], tmp_path / "list", format="mxnet")
    nd.save(str(tmp_path / "ref"), [nd.array(ARRAYS["w"]), nd.array(ARRAYS["b"], dtype=bool)])
    assert (tmp_path / "list").read_bytes() == (tmp_path / "ref").read_bytes()
    tensorfile.save(ARRAYS["w"], tmp_path / "one", format="mxnet")
    one = nd.load(str(tmp_path / "one"))
    assert isinstance(one, list) and len(one) == 1 and (one[0].asnumpy() == ARRAYS["w"]).all()


def test_bfloat16_loads_in_mxnet(tmp_path):
    import ml_dtypes

    a = onp.array([1.0, -2.5, 3.0], ml_dtypes.bfloat16)
    tensorfile.save({"h": a}, tmp_path / "bf", format="mxnet")
    x = nd.load(str(tmp_path / "bf"))["h"]
    assert x.shape == (3,) and (x.astype("float32").asnumpy() == onp.array([1.0, -2.5, 3.0], onp.float32)).all()


def test_npx_load_reads_mxnet_np_with_0d_and_empty(tmp_path):
    arrays = {"s": onp.array(3.5, onp.float32), "e": onp.zeros((0, 4), onp.float64), **ARRAYS}
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    tensorfile.save(arrays, ours, format="mxnet-np")
    npx.set_np()
    back = npx.load(str(ours))
    for k, a in arrays.items():
        assert back[k].shape == a.shape and back[k].dtype == a.dtype and (back[k].asnumpy() == a).all()
    npx.save(str(theirs), {k: mx.np.array(a, dtype=a.dtype) for k, a in arrays.items()})
    assert ours.read_bytes() == theirs.read_bytes()


def test_gluon_load_parameters_reads_it(tmp_path):
    """A Gluon MLP filled by load_parameters from a file tensorfile wrote gives the source model's outputs."""
    source = MLP()
    source.initialize()
    x = nd.random.uniform(shape=(2, 20))
    y = source(x)
    params = {name: p.data().asnumpy() for name, p in source._collect_params_with_prefix().items()}
    tensorfile.save(params, tmp_path / "mlp.params", format="mxnet")
    clone = MLP()
    clone.load_parameters(str(tmp_path / "mlp.params"))
    assert (clone(x).asnumpy() == y.asnumpy()).all()


def test_round_trip_back_through_tensorfile(tmp_path):
    tensorfile.save(ARRAYS, tmp_path / "a", format="mxnet")
    back = tensorfile.load(tmp_path / "a")  # MXNet installed: MXNet arrays
    assert isinstance(back["w"], mx.nd.NDArray) and (back["w"].asnumpy() == ARRAYS["w"]).all()
    with pytest.raises(UnsupportedTypeError, match="mxnet-np"):
        tensorfile.save({"s": onp.array(1.0)}, tmp_path / "b", format="mxnet")
