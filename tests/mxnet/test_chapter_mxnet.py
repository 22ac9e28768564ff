"""The chapter's MXNet cells through tensorfile, under real MXNet 1.9.1 (run inside .venv-mxnet)."""

from __future__ import annotations

import os
import sys

import numpy as onp
import pytest

mx = pytest.importorskip("mxnet")
from mxnet import np, npx  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

import tensorfile  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gluon_mlp import MLP  # noqa: E402

npx.set_np()



def test_tensor_list_dict(tmp_path):
    os.chdir(tmp_path)
    x = np.arange(4)
    tensorfile.save(x, "x-file")
    x2 = tensorfile.load("x-file")
    assert isinstance(x2, np.ndarray) and x2.dtype == x.dtype and (x2 == x).all()  # one array, not a list
    y = np.zeros(4)
    tensorfile.save([x, y], "x-files")
    x2, y2 = tensorfile.load("x-files")
    assert (x2 == x).all() and (y2 == y).all()
    mydict = {"x": x, "y": y}
    tensorfile.save(mydict, "mydict")
    mydict2 = tensorfile.load("mydict")
    assert list(mydict2) == ["x", "y"] and (mydict2["y"] == y).all()
    legacy = mx.nd.array([[1, 2], [3, 4]], dtype="float64")
    tensorfile.save({"legacy": legacy, "zero_d": np.array(3.5)}, "kinds")
    back = tensorfile.load("kinds")
    assert type(back["legacy"]) is mx.nd.NDArray and back["legacy"].dtype == onp.float64
    assert isinstance(back["zero_d"], np.ndarray) and back["zero_d"].shape == () and float(back["zero_d"]) == 3.5


def test_gluon_clone_gives_same_outputs(tmp_path):
    os.chdir(tmp_path)
    net = MLP()
    net.initialize()
    X = np.random.uniform(size=(2, 20))
    Y = net(X)
    tensorfile.save_parameters(net, "mlp.params")
    with tensorfile.open("mlp.params") as f:
        assert sorted(f.keys()) == ["hidden.bias", "hidden.weight", "output.bias", "output.weight"]
    clone = MLP()  # not initialized: shapes are inferred from the file, as Gluon's own load_parameters does
    report = tensorfile.load_parameters(clone, "mlp.params")
    assert report.ok
    Y_clone = clone(X)
    assert (Y_clone == Y).all()


def test_gluon_report_on_mismatch(tmp_path):
    net = MLP()
    net.initialize()
    net(np.zeros((1, 20)))
    tensorfile.save_parameters(net, tmp_path / "m")
    other = nn.Dense(3)
    other.initialize()
    other(np.zeros((1, 20)))
    with pytest.raises(tensorfile.ParameterMismatchError, match="Unexpected key"):
        tensorfile.load_parameters(other, tmp_path / "m")


def test_files_written_by_mxnet_come_back_as_mxnet_arrays():
    fixtures = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "fixtures", "mxnet")
    params = tensorfile.load(os.path.join(fixtures, "mlp.params"))
    assert sorted(params) == ["hidden.bias", "hidden.weight", "output.bias", "output.weight"]
    assert all(isinstance(v, mx.nd.NDArray) for v in params.values())
    net = MLP()
    assert tensorfile.load_parameters(net, os.path.join(fixtures, "mlp.params")).ok
    io = tensorfile.load(os.path.join(fixtures, "mlp-io"))
    # the recorded output was computed on another CPU: MXNet's kernels can differ there by an ulp
    onp.testing.assert_allclose(net(io["X"].as_np_ndarray()).asnumpy(), io["Y"].asnumpy(), rtol=1e-5, atol=1e-6)
