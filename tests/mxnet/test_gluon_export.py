"""Gluon export files (``HybridBlock.export``: ``arg:``/``aux:`` and global names) into a freshly built Block,
under real MXNet 1.9.1 (run inside .venv-mxnet). Fixture: the shared seq_bn net (Dense(8, relu), BatchNorm,
Dense(3)), exported by MXNet itself, with its input and inference output (seq_bn-io.nd)."""

from __future__ import annotations

import numpy as onp
import pytest

mx = pytest.importorskip("mxnet")
from mxnet import npx  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

import tensorfile  # noqa: E402
from conftest import fixture_path  # noqa: E402
from tensorfile import ParameterMismatchError  # noqa: E402

EXPORT = str(fixture_path("mxnet", "seq_bn-0000.params"))


@pytest.fixture(autouse=True)
def legacy_mode():
    """The fixture net was built in MXNet's legacy (nd) mode; other test files switch to numpy mode."""
    was = mx.util.is_np_array()
    npx.reset_np()
    yield
    if was:
        npx.set_np()


def _io():
    io = mx.nd.load(str(fixture_path("mxnet", "seq_bn-io.nd")))
    return io["X"], io["Y"].asnumpy()


def _seq_bn(first=8, in_units=0, channels=0):
    net = nn.HybridSequential()
    net.add(nn.Dense(first, activation="relu", in_units=in_units), nn.BatchNorm(in_channels=channels),
            nn.Dense(3, in_units=channels))  # fmt: skip
    return net


def test_export_file_loads_into_a_block_whose_global_names_differ():
    with mx.name.NameManager():  # a process where a Dense was built first: dense1, batchnorm0, dense2
        nn.Dense(3)
        net = _seq_bn()
    assert list(net.collect_params())[:2] == ["dense1_weight", "dense1_bias"]  # the file has dense0_, dense1_
    with pytest.raises(AssertionError, match="dense"):
        net.load_parameters(EXPORT)  # Gluon's own loader refuses it (mxnet#19257)
    report = tensorfile.load_parameters(net, EXPORT)
    assert report.ok and report.loaded == ["0.weight", "0.bias", "1.gamma", "1.beta", "1.running_mean",
                                           "1.running_var", "2.weight", "2.bias"]  # fmt: skip
    assert any("dense0_weight -> 0.weight" in n for n in report.notes)
    X, Y = _io()
    # the file's dense1_ went to the Block's dense2_, not dense1_. The forward pass is compared to the recorded output
    # to float32 rounding: MXNet's kernels differ by an ulp between CPUs (the parameters are compared bit for bit).
    onp.testing.assert_allclose(net(X).asnumpy(), Y, rtol=1e-5, atol=1e-6)
    exported = mx.nd.load(EXPORT)
    running_mean = exported["aux:batchnorm0_running_mean"].asnumpy()
    onp.testing.assert_array_equal(net[1].running_mean.data().asnumpy(), running_mean)


def test_export_file_loads_into_the_exporting_process_names_and_into_a_named_scope(tmp_path):
    with mx.name.NameManager():
        net = _seq_bn()  # the exporting process's own names: dense0, batchnorm0, dense1
    assert tensorfile.load_parameters(net, EXPORT).ok
    X, Y = _io()
    onp.testing.assert_allclose(net(X).asnumpy(), Y, rtol=1e-5, atol=1e-6)  # an ulp apart between CPUs
    scoped = nn.HybridSequential()
    with scoped.name_scope():  # hybridsequential<n>_dense0_weight: another pattern, refused with both sides named
        scoped.add(nn.Dense(8, activation="relu"), nn.BatchNorm(), nn.Dense(3))
    with pytest.raises(ParameterMismatchError, match=r"dense0_weight.*match none of the Block's \(hybridsequential"):
        tensorfile.load_parameters(scoped, EXPORT)


def test_export_file_refused_when_the_counters_cannot_tell_which_layer_is_which():
    with mx.name.NameManager():
        nn.Dense(3)
        bigger = _seq_bn()
        bigger.add(nn.Dense(2))  # three Dense layers (dense1_ to dense3_) against the file's two
    with pytest.raises(ParameterMismatchError, match=r"2 in the file \(dense0_weight, dense1_weight\), 3 in the model "
                                                     r"\(dense1_weight, dense2_weight, dense3_weight\)"):  # fmt: skip
        tensorfile.load_parameters(bigger, EXPORT)
    with mx.name.NameManager():
        late = nn.Dense(3, in_units=8)  # built first, so its number is lower, but placed last
        reordered = nn.HybridSequential()
        reordered.add(nn.Dense(8, activation="relu", in_units=5), nn.BatchNorm(in_channels=8), late)
    reordered.initialize()
    before = reordered[0].weight.data().asnumpy()
    with pytest.raises(ParameterMismatchError, match="dense0_weight with dense0_weight, dense1_weight with "
                                                     "dense1_weight, but the shapes fit another pairing"):  # fmt: skip
        tensorfile.load_parameters(reordered, EXPORT)
    onp.testing.assert_array_equal(reordered[0].weight.data().asnumpy(), before)  # nothing loaded


def test_a_gluon_layer_is_loaded_whole_or_not_at_all():
    """The last Dense's weight does not fit (3, 6) against the file's (3, 8); its bias (3,) would: it is not loaded."""
    with mx.name.NameManager():
        narrow = _seq_bn(first=6, in_units=5, channels=6)
    narrow.initialize()
    narrow[2].bias.set_data(mx.nd.ones(3))
    report = tensorfile.load_parameters(narrow, EXPORT, strict=False)
    assert {m.name for m in report.mismatched} == {"0.weight", "0.bias", "1.gamma", "1.beta", "1.running_mean",
                                                   "1.running_var", "2.weight"}  # fmt: skip
    assert report.loaded == []
    assert any("layer '2' was not loaded (weight does not fit), so 2.bias kept their values" in n for n in report.notes)
    assert narrow[2].bias.data().asnumpy().tolist() == [1, 1, 1]
