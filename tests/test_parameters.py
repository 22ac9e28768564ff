"""save_parameters / load_parameters: the chapter in each framework, reports, select/rename, conversions."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tensorfile
from frameworks_support import keras_mlp, torch_mlp
from tensorfile import ParameterMismatchError

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
from torch import nn  # noqa: E402


# ---------------------------------------------------------------- the chapter, each framework


def test_torch_clone_gives_same_outputs(tmp_path):
    os.chdir(tmp_path)
    net = torch_mlp()
    X = torch.randn(size=(2, 20))
    Y = net(X)
    tensorfile.save_parameters(net, "mlp.params")
    clone = torch_mlp()
    report = tensorfile.load_parameters(clone, "mlp.params")
    clone.eval()
    assert torch.equal(clone(X), Y)
    assert report.ok and sorted(report.loaded) == ["hidden.bias", "hidden.weight", "output.bias", "output.weight"]
    # the file holds the standard state_dict names
    from safetensors.torch import load_file

    assert sorted(load_file("mlp.params")) == sorted(net.state_dict())


def test_keras_clone_under_the_chapters_own_name(tmp_path):
    os.chdir(tmp_path)
    net = keras_mlp()
    X = np.random.default_rng(0).uniform(size=(2, 20)).astype(np.float32)
    Y = net(X)
    with pytest.raises(ValueError):
        net.save_weights("mlp.params")  # what Keras 3 itself says to the chapter's file name
    tensorfile.save_parameters(net, "mlp.params")
    clone = keras_mlp()
    tensorfile.load_parameters(clone, "mlp.params")
    assert np.array_equal(np.asarray(clone(X)), np.asarray(Y))


def test_two_keras_instances_save_identical_key_sets(tmp_path):
    a, b = keras_mlp(), keras_mlp()
    assert a.hidden.name != b.hidden.name  # Keras numbers the layers: dense, dense_2, ...
    tensorfile.save_parameters(a, tmp_path / "a")
    tensorfile.save_parameters(b, tmp_path / "b")
    with tensorfile.open(tmp_path / "a") as fa, tensorfile.open(tmp_path / "b") as fb:
        assert fa.keys() == fb.keys()
        assert sorted(fa.keys()) == ["hidden.bias", "hidden.kernel", "out.bias", "out.kernel"]


def test_keras_sequential_and_buffers(tmp_path):
    seq = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3, name="d"),
                            keras.layers.BatchNormalization(name="bn")])  # fmt: skip
    tensorfile.save_parameters(seq, tmp_path / "s")
    with tensorfile.open(tmp_path / "s") as f:
        assert sorted(f.keys()) == ["bn.beta", "bn.gamma", "bn.moving_mean", "bn.moving_variance", "d.bias", "d.kernel"]
    with pytest.raises(tensorfile.UnsupportedTypeError, match="not built"):
        tensorfile.save_parameters(keras_mlp(build=False), tmp_path / "x")


def test_torch_buffers_and_tied_parameters(tmp_path):
    net = nn.Sequential(nn.Embedding(10, 4), nn.BatchNorm1d(4), nn.Linear(4, 10, bias=False))
    net[2].weight = net[0].weight
    net[1].running_mean.fill_(0.5)
    tensorfile.save_parameters(net, tmp_path / "t")
    with tensorfile.open(tmp_path / "t") as f:
        assert "1.running_mean" in f and "1.num_batches_tracked" in f
        assert "0.weight" in f.keys() and "2.weight" in f.keys()  # every name, as a plain reader sees it
        assert f["2.weight"].tolist() == net[0].weight.tolist()
    clone = nn.Sequential(nn.Embedding(10, 4), nn.BatchNorm1d(4), nn.Linear(4, 10, bias=False))
    clone[2].weight = clone[0].weight
    report = tensorfile.load_parameters(clone, tmp_path / "t")
    assert report.ok and clone[1].running_mean.tolist() == [0.5] * 4
    assert torch.equal(clone[2].weight, net[0].weight)


def test_pytree_of_arrays(tmp_path):
    params = {"w": np.arange(6.0).reshape(2, 3), "layers": [{"b": np.zeros(3, np.float32)}]}
    tensorfile.save_parameters(params, tmp_path / "p")
    target = {"w": np.zeros((2, 3)), "layers": [{"b": np.ones(3, np.float32)}]}
    report = tensorfile.load_parameters(target, tmp_path / "p")
    assert report.loaded == ["w", "layers.0.b"]
    assert target["w"].tolist() == params["w"].tolist() and target["layers"][0]["b"].tolist() == [0, 0, 0]


# ---------------------------------------------------------------- reports


class Wide(nn.Module):
    def __init__(self, hidden=256, extra=False, dtype=torch.float32):
        super().__init__()
        self.hidden = nn.Linear(20, hidden, dtype=dtype)
        self.output = nn.Linear(hidden, 10)
        if extra:
            self.extra = nn.Linear(10, 2)


def test_report_lists_every_problem_and_loads_nothing_when_strict(tmp_path):
    tensorfile.save_parameters(torch_mlp(), tmp_path / "m")
    model = Wide(hidden=128, extra=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ParameterMismatchError) as info:
        tensorfile.load_parameters(model, tmp_path / "m")
    message = str(info.value)
    assert 'Missing key(s) in the file: "extra.weight", "extra.bias".' in message
    assert "size or dtype mismatch for hidden.weight: shape (256, 20) float32 in the file, (128, 20) float32 in the model" in message
    assert "hidden.bias" in message and "output.weight" in message
    report = info.value.report
    assert report.missing_keys == ["extra.weight", "extra.bias"]
    assert [m.name for m in report.mismatched] == ["hidden.weight", "hidden.bias", "output.weight"]
    assert report.loaded == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_non_strict_loads_what_fits_never_a_wrong_shape(tmp_path):
    source = torch_mlp()
    tensorfile.save_parameters(source, tmp_path / "m")
    model = Wide(hidden=128, extra=True)
    old_hidden = model.hidden.weight.detach().clone()
    old_bias = model.output.bias.detach().clone()
    report = tensorfile.load_parameters(model, tmp_path / "m", strict=False)
    assert report.loaded == []  # output.bias fits, output.weight does not: the layer is not half-loaded
    assert torch.equal(model.output.bias, old_bias) and not torch.equal(model.output.bias, source.output.bias)
    assert torch.equal(model.hidden.weight, old_hidden)
    assert not report.ok and any("layer 'output' was not loaded" in n for n in report.notes)


def test_unexpected_and_dtype_mismatch(tmp_path):
    tensorfile.save_parameters(Wide(extra=True), tmp_path / "m")
    with pytest.raises(ParameterMismatchError, match='Unexpected key\\(s\\) in the file: "extra.weight", "extra.bias"'):
        tensorfile.load_parameters(torch_mlp(), tmp_path / "m")
    report = tensorfile.load_parameters(Wide(dtype=torch.float64), tmp_path / "m", strict=False)
    assert [str(m) for m in report.mismatched] == [
        "hidden.weight: shape (256, 20) float32 in the file, (256, 20) float64 in the model",
        "hidden.bias: shape (256,) float32 in the file, (256,) float64 in the model",
    ]
    assert report.unexpected_keys == ["extra.weight", "extra.bias"]


@pytest.mark.parametrize(
    "select, loaded",
    [
        ("hidden.*", ["hidden.weight", "hidden.bias"]),
        ("hidden", ["hidden.weight", "hidden.bias"]),
        (["hidden.weight", "output."], ["hidden.weight", "output.weight", "output.bias"]),
        (lambda name: name.endswith("bias"), ["hidden.bias", "output.bias"]),
    ],
)
def test_select(tmp_path, select, loaded):
    tensorfile.save_parameters(torch_mlp(), tmp_path / "m")
    report = tensorfile.load_parameters(torch_mlp(), tmp_path / "m", select=select, strict=False)
    assert report.loaded == loaded
    assert sorted(report.missing_keys) == sorted({"hidden.weight", "hidden.bias", "output.weight", "output.bias"} - set(loaded))


def test_rename_prefix_and_function_after_select(tmp_path):
    source = torch_mlp()
    tensorfile.save_parameters(source, tmp_path / "m")
    enc = nn.Sequential(nn.Sequential(nn.Linear(20, 256), nn.ReLU()), nn.Linear(256, 3))
    report = tensorfile.load_parameters(enc, tmp_path / "m", select="hidden.*", rename={"hidden.": "0.0."}, strict=False)
    assert report.loaded == ["0.0.weight", "0.0.bias"] and report.missing_keys == ["1.weight", "1.bias"]
    assert torch.equal(enc[0][0].weight, source.hidden.weight)
    report = tensorfile.load_parameters(enc, tmp_path / "m", select="hidden", rename=lambda n: n.replace("hidden", "0.0"), strict=False)
    assert report.loaded == ["0.0.weight", "0.0.bias"]


# ---------------------------------------------------------------- between frameworks


def test_torch_to_keras_and_back_within_1e5(tmp_path):
    os.chdir(tmp_path)
    net = torch_mlp()
    X = torch.randn(4, 20)
    Y = net(X).detach().numpy()
    tensorfile.save_parameters(net, "mlp.params")
    k = keras_mlp()
    report = tensorfile.load_parameters(k, "mlp.params", rename={"output.": "out."})
    assert report.ok and sorted(report.loaded) == ["hidden.bias", "hidden.kernel", "out.bias", "out.kernel"]
    Yk = np.asarray(k(X.numpy()))
    assert np.abs(Yk - Y).max() <= 1e-5 * np.abs(Y).max()
    tensorfile.save_parameters(k, "keras.params")
    back = torch_mlp()
    tensorfile.load_parameters(back, "keras.params", rename={"out.": "output."})
    assert np.abs(back(X).detach().numpy() - Yk).max() <= 1e-5 * np.abs(Yk).max()


class TorchConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 6)
        self.norm = nn.LayerNorm(6)
        self.conv1 = nn.Conv1d(6, 5, 3)
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 3 * 3, 2)

    def forward(self, tokens, image):
        seq = self.conv1(self.norm(self.emb(tokens)).transpose(1, 2))
        x = torch.relu(self.bn(self.conv(image)))
        return self.fc(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)), seq


def keras_convnet():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.emb = keras.layers.Embedding(12, 6)
            self.norm = keras.layers.LayerNormalization(epsilon=1e-5)
            self.conv1 = keras.layers.Conv1D(5, 3)
            self.conv = keras.layers.Conv2D(4, 3)
            self.bn = keras.layers.BatchNormalization(epsilon=1e-5)
            self.fc = keras.layers.Dense(2)

        def call(self, tokens, image):
            seq = self.conv1(self.norm(self.emb(tokens)))
            x = keras.ops.relu(self.bn(self.conv(image), training=False))
            return self.fc(keras.ops.reshape(x, (x.shape[0], -1))), seq

    net = Net()
    net(np.zeros((1, 7), np.int32), np.zeros((1, 5, 5, 1), np.float32))
    return net


def test_conv_batchnorm_embedding_layernorm_torch_to_keras(tmp_path):
    torch.manual_seed(0)
    net = TorchConvNet().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
        net.norm.weight.uniform_(0.5, 1.5)
    tokens = torch.randint(0, 12, (2, 7))
    image = torch.randn(2, 1, 5, 5)
    y, seq = net(tokens, image)
    tensorfile.save_parameters(net, tmp_path / "c")
    k = keras_convnet()
    report = tensorfile.load_parameters(k, tmp_path / "c")
    assert report.ok and report.skipped == ["bn.num_batches_tracked"]
    ky, kseq = k(tokens.numpy().astype(np.int32), image.permute(0, 2, 3, 1).numpy())
    assert np.abs(np.asarray(ky) - y.detach().numpy()).max() <= 1e-5 * np.abs(y.detach().numpy()).max() + 1e-6
    assert np.allclose(np.asarray(kseq), seq.detach().numpy().transpose(0, 2, 1), rtol=1e-5, atol=1e-6)
    # and back: Keras -> torch
    tensorfile.save_parameters(k, tmp_path / "k")
    back = TorchConvNet().eval()
    report = tensorfile.load_parameters(back, tmp_path / "k")  # strict: torch's own counter is not missing
    assert report.ok and report.skipped == ["bn.num_batches_tracked"]
    assert torch.allclose(back(tokens, image)[0], y, rtol=1e-5, atol=1e-6)


def test_unknown_layers_are_reported_not_guessed(tmp_path):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(3, 2)

    tensorfile.save_parameters(Odd(), tmp_path / "o")
    k = keras.Sequential([keras.layers.Input((5, 3)), keras.layers.GRU(2)])
    report = tensorfile.load_parameters(k, tmp_path / "o", strict=False)
    assert report.loaded == [] and report.unexpected_keys and report.missing_keys


def test_flax_nnx_clone_and_torch_conversion(tmp_path):
    nnx = pytest.importorskip("flax.nnx")
    import jax.numpy as jnp

    class MLP(nnx.Module):
        def __init__(self, seed):
            rngs = nnx.Rngs(seed)
            self.hidden = nnx.Linear(20, 256, rngs=rngs)
            self.output = nnx.Linear(256, 10, rngs=rngs)
            self.dropout = nnx.Dropout(0.1, rngs=rngs)

        def __call__(self, x):
            return self.output(nnx.relu(self.hidden(x)))

    net = MLP(0)
    X = jnp.ones((2, 20)) * 0.5
    Y = net(X)
    tensorfile.save_parameters(net, tmp_path / "nnx")
    with tensorfile.open(tmp_path / "nnx") as f:
        assert sorted(f.keys()) == ["hidden.bias", "hidden.kernel", "output.bias", "output.kernel"]
    clone = MLP(1)
    assert tensorfile.load_parameters(clone, tmp_path / "nnx").ok
    assert bool((clone(X) == Y).all())
    # a torch MLP's layers into the NNX MLP: Linear weight (out, in) -> kernel (in, out)
    t = torch_mlp()
    tensorfile.save_parameters(t, tmp_path / "t")
    report = tensorfile.load_parameters(clone, tmp_path / "t")
    assert report.ok
    y_torch = t(torch.from_numpy(np.array(X))).detach().numpy()
    assert np.allclose(np.asarray(clone(X)), y_torch, rtol=1e-5, atol=1e-6)


def test_rename_collisions_and_malformed_parameter_metadata(tmp_path):
    tensorfile.save_parameters(torch_mlp(), tmp_path / "m")
    with pytest.raises(ValueError, match="map two parameters"):
        tensorfile.load_parameters(torch_mlp(), tmp_path / "m", rename=lambda n: "x." + n.rsplit(".", 1)[1])
    net = torch_mlp()
    tensorfile.save(net.state_dict(), tmp_path / "bad", metadata={"tensorfile.parameters": "{not json"})
    with pytest.raises(tensorfile.FormatError, match="tensorfile.parameters"):
        tensorfile.load_parameters(torch_mlp(), tmp_path / "bad")


def test_plain_state_dict_and_nested_checkpoint(tmp_path):
    net = torch_mlp()
    tensorfile.save(net.state_dict(), tmp_path / "sd")
    assert tensorfile.load_parameters(torch_mlp(), tmp_path / "sd").ok
    tensorfile.save({"model": net.state_dict(), "step": 3}, tmp_path / "ckpt")
    clone = torch_mlp()
    report = tensorfile.load_parameters(clone, tmp_path / "ckpt", select="model.", rename={"model.": ""})
    assert report.ok and torch.equal(clone.hidden.weight, net.hidden.weight)


def test_keras_weights_outside_public_attributes_are_all_named(tmp_path):
    inputs = keras.Input((3, 4))
    outputs = keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    functional = keras.Model(inputs, outputs)
    tensorfile.save_parameters(functional, tmp_path / "f")
    with tensorfile.open(tmp_path / "f") as f:
        assert len(f.keys()) == len(functional.weights) == 8
        assert "mha._query_dense.kernel" in f.keys()  # by the layer's name; InputLayer not counted

    class Heads(keras.Model):
        def __init__(self):
            super().__init__()
            self.heads = {"a": keras.layers.Dense(2), "b": keras.layers.Dense(3)}

        def call(self, x):
            return [h(x) for h in self.heads.values()]

    model = Heads()
    model(np.zeros((1, 4), np.float32))
    tensorfile.save_parameters(model, tmp_path / "h")
    with tensorfile.open(tmp_path / "h") as f:
        assert sorted(f.keys()) == ["heads.a.bias", "heads.a.kernel", "heads.b.bias", "heads.b.kernel"]


def test_pytree_tensors_filled_in_place(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tensorfile.save_parameters({"v": np.ones(3, np.float32), "p": np.ones(2, np.float32), "n": np.ones(2)}, tmp_path / "p")
    variable, parameter, array = tf.Variable(np.zeros(3, np.float32)), nn.Parameter(torch.zeros(2)), np.zeros(2)
    tree = {"v": variable, "p": parameter, "n": array}
    assert tensorfile.load_parameters(tree, tmp_path / "p").ok
    assert tree["v"] is variable and variable.numpy().tolist() == [1, 1, 1]
    assert tree["p"] is parameter and parameter.tolist() == [1, 1]
    assert tree["n"] is array and array.tolist() == [1, 1]


def test_renamed_leaf_of_a_standard_layer_is_reported_not_guessed(tmp_path):
    tensorfile.save_parameters(nn.Sequential(nn.Linear(3, 3)), tmp_path / "t")
    dense = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(3, name="d")])
    report = tensorfile.load_parameters(dense, tmp_path / "t", rename=lambda n: "d" + n[1:].replace("weight", "kernel"), strict=False)
    assert report.loaded == []  # the bias alone would be half a Dense
    assert any("layer 'd' was not loaded (kernel is missing)" in n for n in report.notes)
    assert any("no such parameter in a Linear of torch" in k for k in report.unexpected_keys)


def test_a_parameter_that_cannot_be_written_stops_the_load_before_anything_changed(tmp_path):
    source = torch_mlp()
    tensorfile.save_parameters(source, tmp_path / "m")
    target = torch_mlp()
    before = target.hidden.weight.detach().clone()
    with torch.inference_mode():
        target.output = nn.Linear(256, 10)  # inference tensors cannot be written in place outside inference mode
    with pytest.raises(tensorfile.TensorFileError, match="could not load parameter 'output.weight'"):
        tensorfile.load_parameters(target, tmp_path / "m")
    assert torch.equal(target.hidden.weight, before)


def test_a_damaged_tensor_late_in_the_file_loads_nothing(tmp_path):
    source = torch_mlp()
    tensorfile.save_parameters(source, tmp_path / "m")
    with tensorfile.open(tmp_path / "m") as f:
        last = max(f.keys(), key=lambda k: f.info(k).offset)  # the tensor read last
        offset = f.info(last).offset
    raw = bytearray((tmp_path / "m").read_bytes())
    raw[offset] ^= 0x40
    (tmp_path / "m").write_bytes(bytes(raw))
    target = torch_mlp()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(tensorfile.IntegrityError, match=repr(last)):
        tensorfile.load_parameters(target, tmp_path / "m")
    assert all(torch.equal(target.state_dict()[k], v) for k, v in before.items())


def test_a_plain_save_file_into_another_framework_says_why(tmp_path):
    tensorfile.save(torch_mlp().state_dict(), tmp_path / "plain.params")
    with pytest.raises(ParameterMismatchError, match="no layer information.*save_parameters"):
        tensorfile.load_parameters(keras_mlp(), tmp_path / "plain.params", rename={"output.": "out."})


def test_keras_files_fill_a_keras_model_through_keras_own_loader():
    """The TensorFlow chapter's Keras 3 files (weights.h5, .keras) fill freshly built models: same outputs."""
    from conftest import FIXTURES

    net = keras_mlp()
    report = tensorfile.load_parameters(net, FIXTURES / "tensorflow" / "mlp.weights.h5")
    assert report.ok and report.loaded == ["hidden.kernel", "hidden.bias", "out.kernel", "out.bias"]
    io = np.load(FIXTURES / "tensorflow" / "mlp-io.npz")
    np.testing.assert_allclose(np.asarray(net(io["X"])), io["Y"], rtol=1e-6, atol=1e-6)
    seq = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu", name="hidden"),
                            keras.layers.BatchNormalization(), keras.layers.Dense(2)])  # fmt: skip
    report = tensorfile.load_parameters(seq, FIXTURES / "tensorflow" / "seq.keras")
    assert report.ok and len(report.loaded) == 8  # kernel, bias, gamma, beta, moving mean and variance, kernel, bias
    io = np.load(FIXTURES / "tensorflow" / "seq-io.npz")
    np.testing.assert_allclose(np.asarray(seq(io["X"])), io["Y"], rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:A total of .* objects could not be loaded")
def test_keras_legacy_h5_and_mismatches(tmp_path):
    def build(width=3):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(width, name="d1"), keras.layers.Dense(2, name="d2")])

    source = build()
    source.save(tmp_path / "whole.h5")  # Keras 2 layout (model_weights/...), whole model
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    clone = build()
    assert tensorfile.load_parameters(clone, tmp_path / "whole.h5").ok
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(source(x)))
    source.save_weights(tmp_path / "w.weights.h5")
    wrong = build(width=5)
    before = [np.array(v) for v in wrong.weights]
    with pytest.raises(ParameterMismatchError, match="shape") as info:
        tensorfile.load_parameters(wrong, tmp_path / "w.weights.h5")
    assert str(tmp_path / "w.weights.h5") in str(info.value)
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, wrong.weights))  # nothing changed
    report = tensorfile.load_parameters(wrong, tmp_path / "w.weights.h5", strict=False)
    assert not report.ok and set(report.missing_keys) >= {"d1.kernel", "d1.bias"}
    assert "layers/dense/vars/0" in report.unexpected_keys  # Keras 3 names list entries by class
    with pytest.raises(ValueError, match="select and rename do not apply"):
        tensorfile.load_parameters(build(), tmp_path / "w.weights.h5", select="d1*")
    again = build()
    for _ in range(2):  # loading the same file twice: everything loaded both times
        assert tensorfile.load_parameters(again, tmp_path / "w.weights.h5").loaded == [
            "d1.kernel", "d1.bias", "d2.kernel", "d2.bias"]


def test_keras_file_with_extra_layers_is_refused_when_strict(tmp_path):
    bigger = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(2, name="b")])
    bigger.save_weights(tmp_path / "big.weights.h5")
    bigger.save(tmp_path / "big.keras")
    for name in ("big.weights.h5", "big.keras"):
        small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="a")])
        before = [np.array(v.numpy()) for v in small.weights]
        with pytest.raises(ParameterMismatchError, match="Unexpected key") as info:
            tensorfile.load_parameters(small, tmp_path / name)
        assert info.value.report.unexpected_keys == ["layers/dense_1/vars/0", "layers/dense_1/vars/1"]
        assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, small.weights))  # put back
        report = tensorfile.load_parameters(small, tmp_path / name, strict=False)
        assert report.loaded == ["a.kernel", "a.bias"] and len(report.unexpected_keys) == 2


def test_plain_hdf5_and_keras_layers_take_the_generic_path(tmp_path):
    import h5py

    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["kernel"] = np.ones((4, 3), np.float32)
        f["bias"] = np.zeros(3, np.float32)
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    report = tensorfile.load_parameters(layer, tmp_path / "plain.h5")  # a layer has no load_weights: by name
    assert report.ok and report.loaded == ["kernel", "bias"] and np.array_equal(layer.kernel.numpy(), np.ones((4, 3)))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    with pytest.raises(ParameterMismatchError, match="Missing key"):
        tensorfile.load_parameters(model, tmp_path / "plain.h5")  # not Keras's layout: names must match
