"""Issue 12: the names parameters go by. Keras Sequential and functional models by their layers' names (numbers
of automatic names aligned on loading, tensorfile 0.1's ``layers.0.`` still read); Gluon export files
(``arg:``/``aux:``, global names) into other frameworks; a layer loaded whole or not at all on Keras's own path.
(Gluon export files into a Gluon Block: tests/mxnet/test_gluon_export.py, under real MXNet.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

import tensorfile
from conftest import assert_matches, expected, fixture_path
from tensorfile import CheckpointManager, ParameterMismatchError
from tensorfile.parameters.counters import align, gluon_key, keras_key

EXPORT = "seq_bn-0000.params"  # Gluon HybridSequential(Dense(8, relu), BatchNorm, Dense(3)).export, by MXNet 1.9.1


def _keras():
    return pytest.importorskip("keras")


def _functional(names=(None, None)):
    keras = _keras()
    x = keras.Input((5,))
    h = keras.layers.Dense(8, activation="relu", name=names[0])(x)
    return keras.Model(x, keras.layers.Dense(3, name=names[1])(h))


def _sequential():
    keras = _keras()
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dense(3)])  # fmt: skip


X = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)


def _names(model):
    return [f"{layer.name}.{v.name}" for layer in model.layers for v in layer.weights]


# ---------------------------------------------------------------- Keras: layer names


def test_a_functional_model_with_automatic_names_loads_into_a_clone_numbered_otherwise(tmp_path):
    model = _functional()
    tensorfile.save_parameters(model, tmp_path / "f.params")
    with tensorfile.open(tmp_path / "f.params") as f:
        assert sorted(f.keys()) == sorted(_names(model))  # dense_<n>.kernel...: the layers' own names
    clone = _functional()
    assert _names(clone) != _names(model)  # Keras counts the layers built in the process
    report = tensorfile.load_parameters(clone, tmp_path / "f.params")
    assert report.ok and report.loaded == _names(clone)
    assert any("renumbered to the model's" in n for n in report.notes)
    np.testing.assert_array_equal(np.asarray(clone(X)), np.asarray(model(X)))


def test_a_functional_model_with_explicit_names_saves_them(tmp_path):
    model = _functional(("hidden", "out"))
    tensorfile.save_parameters(model, tmp_path / "f.params")
    with tensorfile.open(tmp_path / "f.params") as f:
        assert sorted(f.keys()) == ["hidden.bias", "hidden.kernel", "out.bias", "out.kernel"]
    clone = _functional(("hidden", "out"))
    report = tensorfile.load_parameters(clone, tmp_path / "f.params")
    assert report.ok and not report.notes
    np.testing.assert_array_equal(np.asarray(clone(X)), np.asarray(model(X)))


def test_a_sequential_model_and_a_file_of_tensorfile_0_1(tmp_path):
    model = _sequential()
    model(X, training=True)  # moves BatchNormalization's moving statistics
    tensorfile.save_parameters(model, tmp_path / "s.params")
    with tensorfile.open(tmp_path / "s.params") as f:
        assert sorted(f.keys()) == sorted(_names(model))
        assert any(k.startswith("batch_normalization") and k.endswith(".moving_mean") for k in f.keys())
    clone = _sequential()
    assert tensorfile.load_parameters(clone, tmp_path / "s.params").ok
    np.testing.assert_array_equal(np.asarray(clone(X)), np.asarray(model(X)))
    # what tensorfile 0.1's save_parameters wrote for it: layers by position, with their classes
    old = {f"layers.{i}.{v.name}": np.asarray(v) for i, layer in enumerate(model.layers) for v in layer.weights}
    kinds = {k: type(model.layers[int(k.split(".")[1])]).__name__ for k in old}
    record = json.dumps({"framework": "keras", "layers": kinds})
    tensorfile.save(old, tmp_path / "old.params", metadata={"tensorfile.parameters": record})
    again = _sequential()
    report = tensorfile.load_parameters(again, tmp_path / "old.params")
    assert report.ok and report.loaded == _names(again)
    assert any("as tensorfile 0.1 did" in n and "'layers.0.kernel' -> " in n for n in report.notes)
    np.testing.assert_array_equal(np.asarray(again(X)), np.asarray(model(X)))


def test_a_weights_h5_written_by_keras_loads_into_a_clone_numbered_otherwise(tmp_path):
    model = _sequential()
    model(X, training=True)
    model.save_weights(tmp_path / "s.weights.h5")  # Keras's own file: layers/dense/vars/0...
    clone = _sequential()
    report = tensorfile.load_parameters(clone, tmp_path / "s.weights.h5")
    assert report.ok and report.loaded == _names(clone)
    np.testing.assert_array_equal(np.asarray(clone(X)), np.asarray(model(X)))


def test_automatic_names_that_cannot_be_told_apart_are_refused_naming_both_sides(tmp_path):
    keras = _keras()
    three = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.Dense(4), keras.layers.Dense(4)])
    tensorfile.save_parameters(three, tmp_path / "three.params")
    two = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.Dense(4)])
    before = [np.array(v) for v in two.weights]
    with pytest.raises(ParameterMismatchError) as info:
        tensorfile.load_parameters(two, tmp_path / "three.params")
    file_names = ", ".join(n for n in _names(three) if n.endswith(".kernel"))
    model_names = ", ".join(n for n in _names(two) if n.endswith(".kernel"))
    assert f"3 in the file ({file_names}), 2 in the model ({model_names})" in str(info.value)
    assert "give the layers names" in str(info.value)
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, two.weights))


def test_a_keras_checkpoint_restores_into_a_model_numbered_otherwise(tmp_path):
    keras = _keras()

    def build():
        return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8), keras.layers.Dropout(0.5),
                                 keras.layers.Dense(3)])  # fmt: skip

    model = build()
    with CheckpointManager(tmp_path / "ckpt") as m:
        m.save(1, {"model": model})
        fresh = build()
        out = m.restore(state={"model": fresh})
    assert out.report.ok and any(".kernel" in n for n in out.report.loaded)
    assert any("_seed_generators.0.state" in n for n in out.report.loaded)  # Dropout's, renumbered too
    assert all(np.array_equal(np.array(a), np.array(b)) for a, b in zip(model.weights, fresh.weights))


# ---------------------------------------------------------------- Keras: a layer whole or not at all


def test_keras_own_loader_does_not_leave_half_a_layer(tmp_path):
    keras = _keras()

    class Pair(keras.layers.Layer):
        """A layer of two weights, ``a`` (3,) and ``b`` (n,): Keras assigns ``a`` before it finds ``b`` wrong."""

        def __init__(self, n, **kwargs):
            super().__init__(**kwargs)
            self.n = n

        def build(self, shape):
            self.a = self.add_weight(shape=(3,), initializer="ones", name="a")
            self.b = self.add_weight(shape=(self.n,), initializer="ones", name="b")

        def call(self, x):
            return x * self.a + keras.ops.sum(self.b)

    def model(n, value):
        m = keras.Sequential([keras.Input((3,)), Pair(n, name="pair")])
        m.set_weights([np.full(3, value, np.float32), np.full(n, value, np.float32)])
        return m

    model(2, 5.0).save_weights(tmp_path / "pair.weights.h5")
    plain = model(4, 1.0)
    plain.load_weights(tmp_path / "pair.weights.h5", skip_mismatch=True)  # Keras alone: half the layer
    assert plain.layers[0].a.numpy().tolist() == [5, 5, 5] and plain.layers[0].b.numpy().tolist() == [1] * 4
    target = model(4, 1.0)
    report = tensorfile.load_parameters(target, tmp_path / "pair.weights.h5", strict=False)
    assert report.loaded == [] and report.missing_keys == ["pair.b"]
    assert any("layer 'pair' was not loaded (b is missing), so pair.a kept their values" in n for n in report.notes)
    assert target.layers[0].a.numpy().tolist() == [1, 1, 1]


def test_keras_generic_path_does_not_load_half_a_layer(tmp_path):
    keras = _keras()
    source = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d", bias_initializer="ones")])
    tensorfile.save_parameters(source, tmp_path / "d.params")
    wider = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="d")])  # kernel (5, 3); bias (3,) fits
    report = tensorfile.load_parameters(wider, tmp_path / "d.params", strict=False)
    assert [m.name for m in report.mismatched] == ["d.kernel"] and report.loaded == []
    assert any("layer 'd' was not loaded (kernel does not fit), so d.bias kept their values" in n for n in report.notes)
    assert wider.layers[0].bias.numpy().tolist() == [0, 0, 0]


# ---------------------------------------------------------------- Gluon export files into other frameworks


def test_a_gluon_export_file_into_torch_says_what_its_names_are_and_loads_with_rename():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 3))
    path = fixture_path("mxnet", EXPORT)
    with pytest.raises(ParameterMismatchError, match=r"Gluon export file.*'dense0.weight'.*rename") as info:
        tensorfile.load_parameters(net, path)
    assert "batchnorm0.running_mean" in info.value.report.unexpected_keys  # gamma and beta: BatchNorm's, as torch's
    report = tensorfile.load_parameters(net, path, rename={"dense0.": "0.", "batchnorm0.": "2.", "dense1.": "3."})
    assert report.ok and report.skipped == ["2.num_batches_tracked"]
    io = tensorfile.load(fixture_path("mxnet", "seq_bn-io.nd"), framework="numpy")
    with torch.no_grad():
        y = net.eval()(torch.from_numpy(io["X"])).numpy()
    np.testing.assert_allclose(y, io["Y"], rtol=1e-5, atol=1e-6)  # MXNet's own output for the same input
    items = expected("mxnet")["mxnet/" + EXPORT]["value"]["items"]
    assert_matches(net[2].running_var.numpy(), items["aux:batchnorm0_running_var"])


def test_a_gluon_export_file_into_a_dict_of_arrays():
    tree = {"dense0": {"weight": np.zeros((8, 5), np.float32), "bias": np.zeros(8, np.float32)},
            "batchnorm0": {k: np.zeros(8, np.float32) for k in ("gamma", "beta", "running_mean", "running_var")},
            "dense1": {"weight": np.zeros((3, 8), np.float32), "bias": np.zeros(3, np.float32)}}  # fmt: skip
    report = tensorfile.load_parameters(tree, fixture_path("mxnet", EXPORT))
    assert report.ok and len(report.loaded) == 8 and any("Gluon export file" in n for n in report.notes)
    items = expected("mxnet")["mxnet/" + EXPORT]["value"]["items"]
    assert_matches(tree["dense1"]["weight"], items["arg:dense1_weight"])
    assert_matches(tree["batchnorm0"]["running_mean"], items["aux:batchnorm0_running_mean"])


# ---------------------------------------------------------------- the alignment itself


def test_counter_keys_and_alignment():
    assert keras_key("dense_12.kernel") == ("dense.kernel", (12, 0))
    assert keras_key("dense.bias") == ("dense.bias", (0, 0))
    assert keras_key("conv2d_1._seed_generators.0.state") == ("conv2d._seed_generators.0.state", (1, 0, 0, 0))
    assert gluon_key("hybridsequential2_dense10_weight") == ("hybridsequential#_dense#_weight", (2, 10))
    # numbers compared as numbers (dense9 before dense10), whatever the overlap with the other side's
    found = align({"dense9_weight": (2, 3), "dense10_weight": (4, 2)},
                  {"dense10_weight": (2, 3), "dense11_weight": (4, 2)}, gluon_key)  # fmt: skip
    assert found.renames == {"dense9_weight": "dense10_weight", "dense10_weight": "dense11_weight"}
    assert not found.conflicts
    # unknown sizes (deferred initialization) do not block the pairing
    found = align({"dense0_weight": (8, 5)}, {"dense4_weight": (8, None)}, gluon_key)
    assert found.renames == {"dense0_weight": "dense4_weight"}
    # a real mismatch is kept (and reported by the load), not taken for another order
    found = align({"dense0_weight": (8, 5)}, {"dense4_weight": (6, 5)}, gluon_key)
    assert found.renames == {"dense0_weight": "dense4_weight"} and not found.conflicts
