"""save_model / load_model with Flax NNX and JAX (issue 13): the chapter's NNX MLP saved from JAX and rebuilt in
a fresh process that never defines its class, NNX layers captured as vocabulary ops, hand-written graphs in
torch and Keras layouts built in JAX, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")
import jax.numpy as jnp  # noqa: E402
import model_graphs  # noqa: E402
from conftest import MXNET_PYTHON, ROOT  # noqa: E402

import tensorfile  # noqa: E402
from tensorfile.model import UnsupportedArchitectureError, load_model, read_graph, save_model  # noqa: E402


class MLP(nnx.Module):  # the chapter's NNX MLP
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(20, 256, rngs=rngs)
        self.output = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x):
        return self.output(nnx.relu(self.hidden(x)))


class ConvNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), strides=2, padding="SAME", rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.ln = nnx.LayerNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(8 * 4 * 4, 10, rngs=rngs)

    def __call__(self, x):
        x = self.bn(self.conv(x))
        x = nnx.max_pool(jax.nn.gelu(x), (2, 2), strides=(2, 2))
        x = self.drop(self.ln(x))
        x = x.reshape(x.shape[0], -1)
        centre = jnp.mean(x, axis=-1, keepdims=True)
        pooled = nnx.avg_pool(x.reshape(x.shape[0], 8, 16, 1), (2, 2), strides=(2, 2)).reshape(x.shape[0], -1)
        return jax.nn.softmax(self.head(x) - 2.0 * centre + pooled[:, :10], axis=-1)


def _x(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _built(make, seed: int = 0):
    """The module ``make()`` builds, its variables random from NumPy (no initializer compiled: fast)."""
    rng = np.random.default_rng(seed)
    graphdef, state = nnx.split(nnx.eval_shape(make))

    def fill(s):
        if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key):
            return jax.random.key(seed)
        if np.issubdtype(s.dtype, np.floating):
            return jnp.asarray((rng.standard_normal(s.shape) * 0.3).astype(s.dtype))
        return jnp.zeros(s.shape, s.dtype)

    return nnx.merge(graphdef, jax.tree.map(fill, state))


_FRESH = textwrap.dedent(
    """
    import importlib.util, json, sys
    import numpy as np
    from tensorfile.model import load_model
    path, x_path, out_path = sys.argv[1:4]
    x = np.load(x_path)
    frameworks = ["jax", "numpy"] + (["torch"] if importlib.util.find_spec("tensorfile.model.build_torch") else [])
    outputs = {}
    for framework in frameworks:
        model = load_model(path, framework)
        if framework == "torch":
            import torch

            outputs[framework] = model(torch.from_numpy(x)).detach().numpy()
        else:
            outputs[framework] = np.asarray(model(x))
        if framework == "jax":
            names = sorted(model.params)
    np.savez(out_path, **outputs)
    print(json.dumps({"flax": "flax" in sys.modules, "params": names, "frameworks": frameworks}))
    """
)


def test_nnx_mlp_saved_from_jax_loads_in_a_fresh_process(tmp_path):
    model = MLP(nnx.Rngs(0))
    x = _x(3, 20)
    want = np.asarray(model(x))
    save_model(model, tmp_path / "mlp.tensorfile", x)
    tensorfile.save_parameters(model, tmp_path / "mlp.params")
    stored, plain = (
        tensorfile.load(tmp_path / "mlp.tensorfile", framework="numpy"),
        tensorfile.load(tmp_path / "mlp.params", framework="numpy"),
    )
    assert sorted(stored) == sorted(plain) == ["hidden.bias", "hidden.kernel", "output.bias", "output.kernel"]
    state = {
        ".".join(map(str, path)): np.asarray(v.get_value())
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    for name, value in stored.items():  # the NNX state, bit for bit, under save_parameters' names
        assert value.dtype == state[name].dtype and value.tobytes() == state[name].tobytes() == plain[name].tobytes()
    graph = read_graph(tmp_path / "mlp.tensorfile")
    assert [(n.name, n.op, n.attrs.get("weight_layout")) for n in graph.nodes] == [
        ("hidden", "linear", "in_out"),
        ("relu", "relu", None),
        ("output", "linear", "in_out"),
    ]
    assert graph.inputs == (("x", "float32", ("batch", 20)),) and graph.framework == "jax"
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run([sys.executable, "-c", _FRESH, str(tmp_path / "mlp.tensorfile"), str(tmp_path / "x.npy"),
                          str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT / "src"), "JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["flax"] is False and report["params"] == sorted(stored)  # rebuilt without Flax, let alone the class
    outputs = np.load(tmp_path / "out.npz")
    assert report["frameworks"][:2] == ["jax", "numpy"]  # and torch, where this tree builds graphs in torch
    for framework in report["frameworks"]:
        assert outputs[framework].shape == (3, 10)
        np.testing.assert_allclose(outputs[framework], want, atol=1e-5, rtol=0, err_msg=framework)


def test_nnx_conv_net_layers_become_vocabulary_ops(tmp_path):
    model = _built(lambda: ConvNet(nnx.Rngs(1)), seed=1)
    model.bn.mean.set_value(jnp.linspace(-1, 1, 8))
    model.bn.var.set_value(jnp.linspace(0.5, 2, 8))
    x = _x(2, 16, 16, 3, seed=1)
    save_model(model, tmp_path / "cnn.tensorfile", x)
    assert not model.bn.use_running_average and not model.drop.deterministic  # captured on a clone in eval mode
    graph = read_graph(tmp_path / "cnn.tensorfile")
    ops = {n.name: n for n in graph.nodes}
    assert ops["conv"].op == "conv2d" and ops["conv"].attrs["padding"] == [[0, 1], [0, 1]]  # SAME, stride 2
    assert (
        ops["conv"].attrs["kernel_layout"] == "spatial_in_out" and ops["conv"].attrs["data_format"] == "channels_last"
    )
    assert ops["bn"].params == {"mean": "bn.mean", "var": "bn.var", "scale": "bn.scale", "offset": "bn.bias"}
    assert ops["bn"].attrs == {"eps": 1e-5, "axis": -1} and ops["ln"].attrs == {"eps": 1e-6, "axes": 1}
    assert ops["gelu"].attrs == {"approximate": "tanh"} and ops["drop"].op == "dropout"
    assert ops["reshape"].attrs == {"shape": ["$0", 128]} and "avg_pool" in ops and "max_pool" in ops
    assert "div" not in ops  # the sums of jnp.mean and avg_pool came back as means
    model.eval()
    want = np.asarray(nnx.jit(lambda m, v: m(v))(model, x))
    for framework in ("jax", "numpy"):
        got = np.asarray(load_model(tmp_path / "cnn.tensorfile", framework)(np.concatenate([x, x, x[:1]])))
        assert got.shape == (5, 10)  # a batch size the capture never traced
        np.testing.assert_allclose(got[:4], np.concatenate([want, want]), atol=1e-5, rtol=0, err_msg=framework)


_IN_MXNET = textwrap.dedent(
    """
    import sys
    import numpy as onp
    from mxnet import np, npx
    from tensorfile.model import load_model
    npx.set_np()
    path, x_path, y_path = sys.argv[1:4]
    x, want = onp.load(x_path), onp.load(y_path)
    block = load_model(path, "mxnet")
    errors = [float(abs(block(np.array(x)).asnumpy() - want).max())]
    block.hybridize()
    errors.append(float(abs(block(np.array(x)).asnumpy() - want).max()))
    print(max(errors))
    """
)


def test_nnx_conv_net_rebuilt_in_mxnet(tmp_path):
    """Channels-last layouts (HWIO kernels, SAME padding with strides, pooling, BatchNorm on the last axis)
    written from Flax and run by MXNet 1.9 (in .venv-mxnet), imperatively and hybridized."""
    if not MXNET_PYTHON.exists():
        pytest.skip("the MXNet side environment .venv-mxnet is missing (make test builds it)")
    model = _built(lambda: ConvNet(nnx.Rngs(1)), seed=3)
    model.bn.var.set_value(jnp.linspace(0.5, 2, 8))
    x = _x(2, 16, 16, 3, seed=3)
    save_model(model, tmp_path / "cnn.tensorfile", x)
    model.eval()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(nnx.jit(lambda m, v: m(v))(model, x)))
    run = subprocess.run([str(MXNET_PYTHON), "-c", _IN_MXNET, *(str(tmp_path / f) for f in ("cnn.tensorfile", "x.npy", "y.npy"))],
                         capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert float(run.stdout.strip().splitlines()[-1]) < 1e-5


def test_nnx_embedding_slicing_and_a_user_parameter(tmp_path):
    class Tagger(nnx.Module):
        def __init__(self, rngs):
            self.emb = nnx.Embed(50, 8, rngs=rngs)
            self.proj = nnx.Param(jnp.zeros((8, 4)))

        def __call__(self, ids):
            h = self.emb(ids)
            return jnp.tanh((h[:, 0] + h.mean(axis=1)) @ self.proj[...])

    model = _built(lambda: Tagger(nnx.Rngs(2)), seed=2)
    ids = np.array([[1, 2, 3], [4, 5, 49]], np.int32)
    save_model(model, tmp_path / "tag.tensorfile", ids)
    graph = read_graph(tmp_path / "tag.tensorfile")
    assert [n.op for n in graph.nodes] == ["embedding", "slice", "squeeze", "mean", "add", "linear", "tanh"]
    assert graph.nodes[5].params == {"weight": "proj"} and graph.inputs[0][:2] == ("ids", "int32")
    for framework in ("jax", "numpy"):
        got = np.asarray(load_model(tmp_path / "tag.tensorfile", framework)(ids))
        np.testing.assert_allclose(got, np.asarray(model(ids)), atol=1e-5, rtol=0, err_msg=framework)


@pytest.mark.parametrize("make", [model_graphs.torch_layout, model_graphs.keras_layout, model_graphs.attention_layout])
def test_hand_written_graph_in_jax_matches_the_reference(tmp_path, make):
    graph, tensors, x = make()
    model_graphs.write(tmp_path / "hand.tensorfile", graph, tensors)
    want = load_model(tmp_path / "hand.tensorfile", "numpy")(x)
    model = load_model(tmp_path / "hand.tensorfile", "jax")
    got = model(x)
    for a, b in zip(want if isinstance(want, tuple) else [want], got if isinstance(got, tuple) else [got]):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(b), a, atol=1e-5, rtol=0)
    assert sorted(model.params) == sorted(tensors)


def test_jax_model_parameters_are_arguments_of_a_pure_function(tmp_path):
    graph, tensors, x = model_graphs.keras_layout()
    model_graphs.write(tmp_path / "hand.tensorfile", graph, tensors)
    model = load_model(tmp_path / "hand.tensorfile", "jax")
    params = dict(model.params)
    params["dense.bias"] = params["dense.bias"] + 1.0
    changed = np.asarray(jax.jit(model.apply)(params, x))
    plain = {k: v.copy() for k, v in tensors.items()}
    plain["dense.bias"] = plain["dense.bias"] + 1.0
    model_graphs.write(tmp_path / "changed.tensorfile", graph, plain)
    np.testing.assert_allclose(changed, load_model(tmp_path / "changed.tensorfile", "numpy")(x), atol=1e-5, rtol=0)
    assert not np.allclose(changed, np.asarray(model(x)))


class _Refused(nnx.Module):
    def __init__(self, kind: str):
        self.lin = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
        self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(1))
        self.kind = kind

    def __call__(self, x):
        y = self.lin(x)
        if self.kind == "exp":
            return jnp.exp(y)
        if self.kind == "cond":
            return jax.lax.cond(y[0, 0] > 0, lambda v: v, lambda v: -v, y)
        if self.kind == "python-if":
            return y if x.sum() > 0 else -y
        if self.kind == "dropout":
            return self.drop(y, deterministic=False)
        if self.kind == "batch-size":
            return y * x.shape[0]
        jax.debug.print("{}", y)
        return y


@pytest.mark.parametrize("kind, message", [
    ("exp", r"\(exp\) at .*test_model_jax.py.*the primitive 'exp' is outside the vocabulary"),
    ("cond", r"\(cond\) at .*data-dependent control flow"),
    ("python-if", "data-dependent control flow"),
    ("dropout", r"Dropout call \(drop\).*not deterministic"),
    ("batch-size", r"\(mul\) at .*depends on the batch size"),
    ("print", r"\(debug_print\) at .*Python callback"),
])  # fmt: skip
def test_refused_at_save_time_naming_the_equation(tmp_path, kind, message):
    original = nnx.Linear.__call__
    with pytest.raises(UnsupportedArchitectureError, match=message):
        save_model(_built(lambda: _Refused(kind)), tmp_path / "bad.tensorfile", np.ones((3, 4), np.float32))
    assert not (tmp_path / "bad.tensorfile").exists()
    assert nnx.Linear.__call__ is original and jax.nn.gelu is nnx.gelu  # the patches are undone


def test_a_graph_outside_the_vocabulary_is_refused_before_building(tmp_path):
    graph, tensors, _ = model_graphs.torch_layout()
    graph["nodes"][2]["op"] = "os.system"
    model_graphs.write(tmp_path / "hostile.tensorfile", graph, tensors)
    with pytest.raises(UnsupportedArchitectureError, match="'os.system' is not in the vocabulary"):
        load_model(tmp_path / "hostile.tensorfile", "jax")
