"""save_model / load_model under real MXNet 1.9.1 (issue 13; run inside .venv-mxnet): the chapter's Gluon MLP
saved and rebuilt in a fresh process that never defines its class, a hybridized conv net in legacy mode,
hand-written graphs in torch and Keras layouts built as Gluon blocks, refusals.

Into torch, JAX and NumPy in the main environment: tests/test_matrix.py loads the MLP file this environment
writes (tests/mxnet/exchange.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as onp
import pytest

mx = pytest.importorskip("mxnet")
from mxnet import np, npx  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

import tensorfile  # noqa: E402
from tensorfile.model import UnsupportedArchitectureError, load_model, read_graph, save_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import model_graphs  # noqa: E402
from gluon_mlp import MLP  # noqa: E402

npx.set_np()

_FRESH = textwrap.dedent(
    """
    import json, sys
    import numpy as onp
    from mxnet import np, npx
    from tensorfile.model import load_model
    npx.set_np()
    path, x_path, out_path = sys.argv[1:4]
    x = onp.load(x_path)
    block = load_model(path, "mxnet")
    outputs = {"mxnet": block(np.array(x)).asnumpy(), "numpy": load_model(path, "numpy")(x)}
    block.hybridize()
    outputs["hybridized"] = block(np.array(x)).asnumpy()
    onp.savez(out_path, **outputs)
    print(json.dumps({"params": sorted(block._collect_params_with_prefix()), "type": type(block).__name__}))
    """
)


def test_gluon_mlp_saved_under_mxnet_loads_in_a_fresh_process(tmp_path):
    mx.random.seed(0)
    net = MLP()  # a plain Block, as in the chapter: its forward calls two hybrid Dense layers
    net.initialize()
    X = np.random.uniform(size=(3, 20))
    Y = net(X).asnumpy()
    save_model(net, tmp_path / "mlp.tensorfile", X)
    tensorfile.save_parameters(net, tmp_path / "mlp.params")
    stored = tensorfile.load(tmp_path / "mlp.tensorfile", framework="numpy")
    plain = tensorfile.load(tmp_path / "mlp.params", framework="numpy")
    assert sorted(stored) == sorted(plain) == ["hidden.bias", "hidden.weight", "output.bias", "output.weight"]
    for name, param in net._collect_params_with_prefix().items():  # Gluon's values, bit for bit, structural names
        assert stored[name].tobytes() == param.data().asnumpy().tobytes() == plain[name].tobytes()
    graph = read_graph(tmp_path / "mlp.tensorfile")
    assert [(n.name, n.op, n.params.get("weight")) for n in graph.nodes] == [
        ("hidden", "linear", "hidden.weight"),
        ("hidden.act", "relu", None),
        ("output", "linear", "output.weight"),
    ]
    assert graph.inputs == (("x", "float32", ("batch", 20)),) and graph.framework == "mxnet"
    onp.save(tmp_path / "x.npy", X.asnumpy())
    run = subprocess.run([sys.executable, "-c", _FRESH, str(tmp_path / "mlp.tensorfile"), str(tmp_path / "x.npy"),
                          str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(os.path.dirname(HERE)), "src")})  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {"params": sorted(stored), "type": "GraphBlock"}
    outputs = onp.load(tmp_path / "out.npz")
    for kind in ("mxnet", "numpy", "hybridized"):
        assert outputs[kind].shape == (3, 10)
        onp.testing.assert_allclose(outputs[kind], Y, atol=1e-5, rtol=0, err_msg=kind)


class ConvNet(nn.HybridBlock):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.features = nn.HybridSequential()
        self.features.add(nn.Conv2D(6, 5, padding=2, activation="sigmoid"), nn.AvgPool2D(2, 2), nn.BatchNorm(),
                          nn.MaxPool2D(3, 2, 1), nn.Conv2D(4, 3, strides=2, groups=2))  # fmt: skip
        self.head = nn.Dense(10)  # on 4-d data: Dense flattens it first
        self.drop = nn.Dropout(0.5)
        self.norm = nn.LayerNorm()

    def hybrid_forward(self, F, x):
        y = self.norm(self.drop(self.head(self.features(x))))
        return F.softmax(2 - F.tanh(y) * 2)


def test_hybridized_conv_net_in_legacy_mode(tmp_path):
    with mx.util.np_array(False), mx.util.np_shape(False):
        mx.random.seed(1)
        net = ConvNet()
        net.initialize()
        net.hybridize()
        x = mx.nd.random.uniform(shape=(2, 1, 28, 28))
        net(x)
        bn = net.features[2]
        bn.running_mean.set_data(mx.nd.array(onp.linspace(-0.2, 0.2, 6)))
        bn.running_var.set_data(mx.nd.array(onp.linspace(0.5, 2.0, 6)))
        want = net(x).asnumpy()
        save_model(net, tmp_path / "cnn.tensorfile", x)
        block = load_model(tmp_path / "cnn.tensorfile", "mxnet")
        got = block(x).asnumpy()
    graph = read_graph(tmp_path / "cnn.tensorfile")
    ops = {n.name: n for n in graph.nodes}
    assert ops["features.0"].op == "conv2d" and ops["features.0"].attrs["padding"] == [[2, 2], [2, 2]]
    assert ops["features.0.act"].op == "sigmoid" and ops["features.1"].op == "avg_pool2d"
    assert ops["features.2"].params == {"mean": "features.2.running_mean", "var": "features.2.running_var",
                                        "offset": "features.2.beta", "scale": "features.2.gamma"}  # fmt: skip
    assert ops["features.4"].attrs["groups"] == 2 and ops["head.flatten"].op == "flatten"
    assert ops["head"].inputs == ("head.flatten",) and ops["drop"].op == "dropout" and ops["norm"].op == "layer_norm"
    tail = [n.op for n in graph.nodes if n.name.split(".")[0] not in ("features", "head", "drop", "norm")]
    assert tail == ["tanh", "constant", "mul", "constant", "sub", "softmax"]
    onp.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    onp.testing.assert_allclose(load_model(tmp_path / "cnn.tensorfile", "numpy")(x.asnumpy()), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", [model_graphs.torch_layout, model_graphs.keras_layout, model_graphs.attention_layout])
@pytest.mark.parametrize("mode", ["numpy", "legacy"])
def test_hand_written_graph_in_mxnet_matches_the_reference(tmp_path, make, mode):
    graph, tensors, x = make()
    model_graphs.write(tmp_path / "hand.tensorfile", graph, tensors)
    want = load_model(tmp_path / "hand.tensorfile", "numpy")(x)
    want = want if isinstance(want, tuple) else (want,)
    with mx.util.np_array(mode == "numpy"), mx.util.np_shape(mode == "numpy"):
        block = load_model(tmp_path / "hand.tensorfile", "mxnet")
        data = np.array(x) if mode == "numpy" else mx.nd.array(x)
        for hybridized in (False, True):
            if hybridized:
                block.hybridize()
            got = block(data)
            got = got if isinstance(got, tuple) else (got,)
            assert len(got) == len(want)
            for a, b in zip(want, got):
                assert isinstance(b, np.ndarray if mode == "numpy" else mx.nd.NDArray)
                onp.testing.assert_allclose(b.asnumpy(), a, atol=1e-5, rtol=0, err_msg=f"hybridized={hybridized}")
    assert sorted(block._collect_params_with_prefix()) == sorted(tensors)


class _Exp(nn.HybridBlock):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = nn.Dense(4)

    def hybrid_forward(self, F, x):
        return F.np.exp(self.dense(x))


def test_an_operator_outside_the_vocabulary_is_refused_naming_it(tmp_path):
    net = _Exp()
    net.initialize()
    with pytest.raises(UnsupportedArchitectureError, match=r"node '_exp\w*_exp0' \(_npi_exp\).*outside the vocabulary"):
        save_model(net, tmp_path / "bad.tensorfile", np.ones((2, 3)))
    assert not (tmp_path / "bad.tensorfile").exists()
