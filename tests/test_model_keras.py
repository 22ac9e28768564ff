"""Issue 13, Keras side: Keras models captured as graphs (subclassed, Sequential, functional) and rebuilt in Keras
and NumPy, in a fresh process that never defines the model's class; graphs in torch's layouts rebuilt in Keras
against torch itself; parameters under save_parameters' names, bit for bit; refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

import tensorfile
from tensorfile.model import MODEL_KEY, UnsupportedArchitectureError, load_model, read_graph, save_model
from tensorfile.model.graph import dump_graph

keras = pytest.importorskip("keras")
L, ops = keras.layers, keras.ops
RNG = np.random.default_rng(13)


class MLP(keras.Model):  # the chapter's Keras MLP
    def __init__(self):
        super().__init__()
        self.hidden = L.Dense(256, activation="relu")
        self.out = L.Dense(10)

    def call(self, x):
        return self.out(self.hidden(x))


def _lenet():
    return keras.Sequential([
        keras.Input((28, 28, 1)), L.Conv2D(6, 5, padding="same", activation="sigmoid"), L.AveragePooling2D(2),
        L.Conv2D(16, 5, activation="sigmoid"), L.AveragePooling2D(2), L.Flatten(),
        L.Dense(120, activation="sigmoid"), L.Dense(84, activation="sigmoid"), L.Dense(10),
    ])  # fmt: skip


def _residual():
    """Conv-BN-ReLU-Conv(stride 2, 'same')-BN plus a 1x1 stride-2 shortcut, Add, ReLU, 'same' pools, softmax."""
    x = keras.Input((9, 9, 3))
    h = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False)(x)))
    h = L.BatchNormalization(epsilon=1e-5)(L.Conv2D(4, 3, strides=2, padding="same")(h))
    o = L.ReLU()(L.Add()([h, L.Conv2D(4, 1, strides=2)(x)]))
    o = L.AveragePooling2D(2, padding="same")(L.MaxPooling2D(3, strides=1, padding="same")(o))  # 5x5 -> 3x3
    model = keras.Model(x, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(o)))
    for layer in model.layers:  # statistics far from 0 / 1, so that using them is visible
        if isinstance(layer, L.BatchNormalization):
            for v in (layer.moving_mean, layer.moving_variance, layer.gamma, layer.beta):
                v.assign(RNG.uniform(0.5, 1.5, v.shape).astype("float32"))
    return model


class Attention(keras.Model):
    """Embedding, MultiHeadAttention, LayerNorm, a list of Dense (gelu), a weight of its own, keras.ops
    arithmetic, split/concat/slicing, grouped causal dilated Conv1D and 'same' average pooling."""

    def __init__(self):
        super().__init__()
        self.emb = L.Embedding(50, 32)
        self.mha = L.MultiHeadAttention(num_heads=4, key_dim=8)
        self.ln = L.LayerNormalization(epsilon=1e-5)
        self.blocks = [L.Dense(32, activation="gelu"), L.Dense(32)]
        self.scale = self.add_weight(shape=(32,), initializer="random_normal", name="scale")
        self.conv = L.Conv1D(8, 3, padding="causal", dilation_rate=2, groups=2)
        self.pool = L.AveragePooling1D(3, strides=2, padding="same")
        self.drop = L.Dropout(0.5)

    def call(self, ids, training=False):
        x = self.emb(ids)
        x = self.ln(x + self.mha(x, x))
        y = self.drop(self.blocks[1](self.blocks[0](x)) * self.scale - 1.5, training=training)
        a, b = ops.split(y, 2, axis=-1)
        z = self.pool(self.conv(ops.concatenate([b, a], axis=-1)[:, 1:, :]))
        return ops.reshape(ops.softmax(ops.mean(z, axis=1) / 2.0), (-1, 2, 4))


def _built(model, x):
    model(x)
    return model


CASES = {  # name -> (model factory, example input)
    "mlp": (lambda x: _built(MLP(), x), RNG.normal(size=(4, 20)).astype(np.float32)),
    "lenet": (lambda x: _lenet(), RNG.random((3, 28, 28, 1), dtype=np.float32)),
    "residual": (lambda x: _residual(), RNG.random((2, 9, 9, 3), dtype=np.float32)),
    "attention": (lambda x: _built(Attention(), x), RNG.integers(0, 50, (3, 7)).astype(np.int32)),
}

_CHILD = """
import sys
import numpy as np
from tensorfile.model import load_model

folder, names = sys.argv[1], sys.argv[2:]
FRAMEWORKS = ("keras", "numpy", "torch")
out = {}
for name in names:
    x = np.load(f"{folder}/{name}.input.npy")
    for framework in FRAMEWORKS:
        model = load_model(f"{folder}/{name}.tf", framework)
        if framework == "torch":
            import torch

            with torch.no_grad():
                out[f"{name}.{framework}"] = model(torch.from_numpy(x)).numpy()
        else:
            out[f"{name}.{framework}"] = np.asarray(model(x))
np.savez(f"{folder}/outputs.npz", **out)
print(sorted(vars(sys.modules["__main__"])), [m for m in sys.modules if "test_model" in m])
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each model saved from Keras, its input and output; then loaded in a fresh process (which never defines
    MLP, Attention...) into keras and numpy: name -> (model, x, expected output, outputs of the child)."""
    folder = tmp_path_factory.mktemp("keras_models")
    models = {}
    for name, (make, x) in CASES.items():
        model = make(x)
        save_model(model, folder / f"{name}.tf", x)
        np.save(folder / f"{name}.input.npy", x)
        models[name] = (model, x, np.asarray(model(x)))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.run([sys.executable, "-c", _CHILD, str(folder), *CASES], capture_output=True, text=True,
                           timeout=240, env=env)  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    assert "MLP" not in child.stdout and "Attention" not in child.stdout and "test_model" not in child.stdout
    with np.load(folder / "outputs.npz") as outputs:
        loaded = dict(outputs)
    return folder, {name: (*models[name], {fw: loaded[f"{name}.{fw}"] for fw in ("keras", "numpy", "torch")}) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("framework", ["keras", "numpy", "torch"])
def test_saved_from_keras_runs_in_a_fresh_process(saved, name, framework):
    _, models = saved
    _, x, expected, loaded = models[name]
    assert loaded[framework].shape == expected.shape
    np.testing.assert_allclose(loaded[framework], expected, rtol=0, atol=1e-5)
    assert np.abs(expected).max() > 1e-3  # the outputs are not all zero


@pytest.mark.parametrize("name", list(CASES))
def test_parameters_are_save_parameters_names_and_values(saved, tmp_path, name):
    folder, models = saved
    model = models[name][0]
    tensorfile.save_parameters(model, tmp_path / "params.tf")
    expected = tensorfile.load(tmp_path / "params.tf", framework="numpy")
    stored = tensorfile.load(folder / f"{name}.tf", framework="numpy")
    assert list(stored) == list(expected)
    for key, value in expected.items():
        assert stored[key].dtype == value.dtype and stored[key].tobytes() == value.tobytes(), key
    assert read_graph(folder / f"{name}.tf").params() <= set(stored)


def test_graph_of_the_chapter_mlp(saved):
    folder, _ = saved
    graph = read_graph(folder / "mlp.tf")
    assert graph.inputs == (("x", "float32", ("batch", 20)),)
    assert [(n.name, n.op, n.inputs) for n in graph.nodes] == [
        ("hidden", "linear", ("x",)), ("hidden.relu", "relu", ("hidden",)), ("out", "linear", ("hidden.relu",))]
    assert graph.nodes[0].params == {"weight": "hidden.kernel", "bias": "hidden.bias"}
    assert graph.nodes[0].attrs == {"weight_layout": "in_out"}
    assert graph.modules == {"": "MLP", "hidden": "Dense", "out": "Dense"} and graph.framework == "keras"


def test_padding_recorded_as_keras_computes_it(saved):
    """'same' with stride 2 is recorded as TensorFlow's explicit padding (9 -> 5: (1, 1); 5 -> 3: (0, 1)); Keras'
    'same' average pooling excludes the pad; 'same' with stride 1 stays 'same'."""
    nodes = {n.name: n for n in read_graph(saved[0] / "residual.tf").nodes}
    conv = next(n for n in nodes.values() if n.op == "conv2d" and n.attrs["padding"] not in ("valid", "same"))
    assert conv.attrs["padding"] == [[1, 1], [1, 1]] and conv.attrs["kernel_layout"] == "spatial_in_out"
    avg = next(n for n in nodes.values() if n.op == "avg_pool2d")
    assert avg.attrs["padding"] == [[0, 1], [0, 1]] and avg.attrs["count_include_pad"] is False
    assert next(n for n in nodes.values() if n.op == "max_pool2d").attrs["padding"] == "same"
    bn = [n for n in nodes.values() if n.op == "batch_norm"]
    assert sorted(n.attrs["eps"] for n in bn) == [1e-5, 1e-3] and {n.attrs["axis"] for n in bn} == {-1}


def test_multi_head_attention_keeps_its_parameters(saved):
    graph = read_graph(saved[0] / "attention.tf")
    constants = {n.params["value"] for n in graph.nodes if n.op == "constant" and n.params}
    assert {f"mha._{p}_dense.{w}" for p in ("query", "key", "value", "output") for w in ("kernel", "bias")} <= constants
    assert [n.op for n in graph.nodes].count("scaled_dot_product_attention") == 1
    assert "multi_head_attention" not in [n.op for n in graph.nodes]


def test_capture_leaves_the_model_as_it_was(tmp_path):
    model = _residual()
    before = {id(layer): (len(layer._inbound_nodes), len(layer._outbound_nodes)) for layer in model.layers}
    save_model(model, tmp_path / "r.tf", CASES["residual"][1])
    assert {id(layer): (len(layer._inbound_nodes), len(layer._outbound_nodes)) for layer in model.layers} == before


def test_rebuilt_keras_model_holds_the_files_tensors(saved, tmp_path):
    rebuilt = load_model(saved[0] / "mlp.tf", "keras")
    assert isinstance(rebuilt, keras.Model) and isinstance(load_model(saved[0] / "mlp.tf", "tensorflow"), keras.Model)
    stored = tensorfile.load(saved[0] / "mlp.tf", framework="numpy")
    assert sorted(rebuilt.params) == sorted(stored)
    tensorfile.save_parameters(rebuilt, tmp_path / "again.tf")
    again = tensorfile.load(tmp_path / "again.tf", framework="numpy")
    assert sorted(again) == sorted(stored) and all(np.array_equal(again[k], stored[k]) for k in stored)
    y = rebuilt(RNG.normal(size=(7, 20)).astype(np.float32))  # another batch size: the batch dim is symbolic
    assert tuple(y.shape) == (7, 10)


# -- graphs in torch's layouts (out_in weights, OIHW kernels, channels_first), rebuilt in Keras ----------


def _node(name, op, inputs, params=None, **attrs):
    """A node; torch's module names "0", "1"... are not value names, so values are "n0", "n1"..."""
    value = lambda ref: ref if not ref.isdigit() else f"n{ref}"  # noqa: E731
    return {"name": value(name), "op": op, "inputs": [value(r) for r in inputs], "params": params or {}, "attrs": attrs}


def _torch_cases():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(13)
    mlp = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    mlp_nodes = [_node("0", "linear", ["x"], {"weight": "0.weight", "bias": "0.bias"}), _node("1", "relu", ["0"]),
                 _node("2", "linear", ["1"], {"weight": "2.weight", "bias": "2.bias"})]  # fmt: skip
    conv = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, dilation=1), nn.MaxPool2d(3, stride=2, padding=1),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
        nn.Linear(32, 5), nn.GELU(approximate="tanh"),
    )  # fmt: skip
    with torch.no_grad():
        conv[1].running_mean.uniform_(-1, 1), conv[1].running_var.uniform_(0.5, 2), conv[1].weight.uniform_(0.5, 2)
    first = {"data_format": "channels_first"}
    conv_nodes = [
        _node("0", "conv2d", ["x"], {"weight": "0.weight", "bias": "0.bias"}, padding=[[1, 1], [1, 1]]),
        _node("1", "batch_norm", ["0"], {"scale": "1.weight", "offset": "1.bias", "mean": "1.running_mean",
                                         "var": "1.running_var"}, eps=1e-5, axis=1),  # fmt: skip
        _node("2", "relu", ["1"]),
        _node("3", "conv2d", ["2"], {"weight": "3.weight", "bias": "3.bias"}, stride=[2, 2], padding=[[1, 1], [1, 1]],
              groups=2),
        _node("4", "max_pool2d", ["3"], kernel=[3, 3], stride=[2, 2], padding=[[1, 1], [1, 1]], **first),
        _node("5", "avg_pool2d", ["4"], kernel=[3, 3], stride=[1, 1], padding=[[1, 1], [1, 1]], count_include_pad=True,
              **first),
        _node("6", "adaptive_avg_pool2d", ["5"], output_size=[2, 2], **first),
        _node("7", "flatten", ["6"], start=1, end=-1),
        _node("8", "linear", ["7"], {"weight": "8.weight", "bias": "8.bias"}),
        _node("9", "gelu", ["8"], approximate="tanh"),
    ]
    attention = nn.MultiheadAttention(16, 4, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attention

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    attn_params = {r: f"attn.{r}" for r in ("in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias")}
    attn_params.update(out_proj_weight="attn.out_proj.weight", out_proj_bias="attn.out_proj.bias")
    return {
        "mlp": (mlp, mlp_nodes, torch.randn(4, 20)),
        "conv": (conv, conv_nodes, torch.randn(2, 3, 11, 11)),
        "attention": (SelfAttention(), [_node("attn", "multi_head_attention", ["x"] * 3, attn_params, num_heads=4)],
                      torch.randn(3, 5, 16)),
    }  # fmt: skip


@pytest.mark.parametrize("name", ["mlp", "conv", "attention"])
def test_graph_in_torch_layouts_runs_in_keras(tmp_path, name):
    module, nodes, x = _torch_cases()[name]
    module.eval()
    expected = module(x).detach().numpy()
    tensors = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    graph = {"framework": "torch", "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", *x.shape[1:]]}],
             "nodes": nodes, "outputs": [nodes[-1]["name"]]}  # fmt: skip
    tensorfile.save(tensors, tmp_path / "t.tf", metadata={MODEL_KEY: dump_graph(graph)})
    for framework in ("keras", "numpy"):
        got = np.asarray(load_model(tmp_path / "t.tf", framework)(x.numpy()))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=framework)


# -- refusals -----------------------------------------------------------------------------------------


class _Cumsum(L.Layer):
    def call(self, x):
        return ops.cumsum(x, axis=-1)


class _Branchy(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(4)

    def call(self, x):
        if ops.sum(x) > 0:  # data-dependent control flow
            return self.dense(x)
        return -self.dense(x)


class _ArrayConstant(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(4)

    def call(self, x):
        return self.dense(x) * np.arange(4, dtype=np.float32)


class _BackendOp(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(4)

    def call(self, x):
        import tensorflow as tf

        return tf.math.cumsum(self.dense(x), axis=-1)


def _seq(*layers):
    return keras.Sequential([keras.Input((6,)), *layers])


@pytest.mark.parametrize("make, words", [
    (lambda: _seq(L.Reshape((6, 1)), L.LSTM(3)), ["'lstm", "(LSTM)", "not in the vocabulary"]),
    (lambda: _seq(L.Dense(4), _Cumsum(name="running")), ["'running'", "op 'cumsum'", "not in the vocabulary"]),
    (lambda: _seq(L.Dense(4, activation="elu")), ["op 'elu'", "'dense"]),
    (lambda: _built(_Branchy(), np.ones((2, 6), np.float32)), ["data-dependent control flow"]),
    (lambda: _built(_ArrayConstant(), np.ones((2, 6), np.float32)), ["constant ndarray", "add_weight"]),
    (lambda: _built(_BackendOp(), np.ones((2, 6), np.float32)), ["_BackendOp", "cannot be traced"]),
    (lambda: _seq(L.Reshape((6, 1)), L.Embedding(10, 4, mask_zero=True)), ["(Embedding)", "mask_zero"]),
], ids=["lstm", "layer_op", "elu_activation", "control_flow", "array_constant", "backend_op", "masks"])  # fmt: skip
def test_refused_with_the_layer_or_op_named(tmp_path, make, words):
    model = make()
    with pytest.raises(UnsupportedArchitectureError) as info:
        save_model(model, tmp_path / "m.tf", np.ones((2, 6), np.float32))
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert not (tmp_path / "m.tf").exists()
    assert len(str(info.value)) < 400


def test_graph_json_is_plain_data(saved):
    """Nothing in the file names code: ops are vocabulary words, modules are class names only as labels."""
    with tensorfile.open(saved[0] / "attention.tf", framework="numpy") as f:
        doc = json.loads(f.metadata[MODEL_KEY])
    from tensorfile.model.vocabulary import OPS

    assert {n["op"] for n in doc["nodes"]} <= set(OPS)
    assert doc["modules"]["mha"] == "MultiHeadAttention" and doc["modules"][""] == "Attention"
