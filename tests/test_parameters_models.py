"""Issue 12, first part: lazy modules in save/load_parameters; a layer is loaded whole or not at all."""

from __future__ import annotations

import pytest

import tensorfile
from tensorfile import UnsupportedTypeError

torch = pytest.importorskip("torch")
nn = torch.nn


def _d2l_mlp() -> "nn.Module":
    """d2l's PyTorch MLP of the File I/O chapter: LazyLinear layers, shaped by the first batch."""
    return nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))


def test_a_lazy_mlp_is_saved_after_its_first_batch_and_loads_into_a_fresh_lazy_clone(tmp_path):
    torch.manual_seed(0)
    net = _d2l_mlp()
    with pytest.raises(UnsupportedTypeError, match="lazy module such as nn.LazyLinear"):
        tensorfile.save_parameters(net, tmp_path / "mlp.params")
    X = torch.randn(2, 20)
    Y = net(X)
    tensorfile.save_parameters(net, tmp_path / "mlp.params")
    clone = _d2l_mlp()  # never run: its parameters take the file's shapes, as load_state_dict does
    report = tensorfile.load_parameters(clone, tmp_path / "mlp.params")
    assert report.ok and sorted(report.loaded) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert clone[0].weight.shape == (256, 20) and torch.equal(clone(X), Y)
    reference = _d2l_mlp()
    reference.load_state_dict(torch.load(_torch_file(net, tmp_path), weights_only=True))
    assert torch.equal(reference(X), clone(X))  # what torch's own load_state_dict gives


def _torch_file(net, tmp_path):
    path = tmp_path / "mlp.pt"
    torch.save(net.state_dict(), path)
    return path


def test_a_lazy_parameter_of_another_dtype_is_a_mismatch(tmp_path):
    torch.manual_seed(0)
    net = _d2l_mlp()
    net(torch.randn(2, 20))
    tensorfile.save({k: v.double() for k, v in net.state_dict().items()}, tmp_path / "f64.tensorfile")
    report = tensorfile.load_parameters(_d2l_mlp(), tmp_path / "f64.tensorfile", strict=False)
    assert {m.name for m in report.mismatched} == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_strict_false_loads_a_layer_whole_or_not_at_all(tmp_path):
    """The chapter's layer reuse: a new head of another size. The old head's bias fits, its weight does not:
    neither is loaded, and the report says why."""
    torch.manual_seed(0)
    old = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10))
    tensorfile.save_parameters(old, tmp_path / "mlp.params")
    torch.manual_seed(1)
    new = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(128, 10))
    head_bias = new[2].bias.detach().clone()
    report = tensorfile.load_parameters(new, tmp_path / "mlp.params", strict=False)
    assert torch.equal(new[0].weight, old[0].weight) and torch.equal(new[2].bias, head_bias)
    assert report.loaded == ["0.weight", "0.bias"] and [m.name for m in report.mismatched] == ["2.weight"]
    assert any("layer '2' was not loaded (weight does not fit)" in n and "2.bias kept" in n for n in report.notes)


def test_a_layer_missing_a_parameter_is_not_half_loaded(tmp_path):
    torch.manual_seed(0)
    old = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    tensorfile.save({k: v for k, v in old.state_dict().items() if k != "1.bias"}, tmp_path / "f.tensorfile")
    new = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    weight = new[1].weight.detach().clone()
    report = tensorfile.load_parameters(new, tmp_path / "f.tensorfile", strict=False)
    assert torch.equal(new[1].weight, weight) and report.missing_keys == ["1.bias"] and "1.weight" not in report.loaded


def test_a_prefix_mismatch_is_named_with_the_rename_that_fixes_it_and_the_writer(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    torch.save({"model." + k: v for k, v in net.state_dict().items()}, tmp_path / "lightning.pt")
    with pytest.raises(tensorfile.ParameterMismatchError) as info:
        tensorfile.load_parameters(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), tmp_path / "lightning.pt")
    text = str(info.value)
    assert "carry a prefix 'model.' the model's lack" in text and "rename={'model.': ''}" in text
    assert "written by torch.save" in text and "tensorfile.save," not in text
    fixed = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    assert tensorfile.load_parameters(fixed, tmp_path / "lightning.pt", rename={"model.": ""}).ok


def test_a_failed_keras_weights_load_does_not_print_the_weights(tmp_path):
    keras = pytest.importorskip("keras")
    big = keras.Sequential([keras.layers.Input((300,)), keras.layers.Dense(300)])
    big.save_weights(tmp_path / "big.weights.h5")
    small = keras.Sequential([keras.layers.Input((300,)), keras.layers.Dense(200)])
    with pytest.raises(tensorfile.ParameterMismatchError) as info:
        tensorfile.load_parameters(small, tmp_path / "big.weights.h5")
    from test_messages import _longest_value

    message = str(info.value)  # Keras prints the variable's values
    assert "more characters)" in message and _longest_value(message) <= 230 and len(message) < 1500
