"""One file moves between all five frameworks: saved from each, loaded in each, values and dtypes kept.

MXNet lives in its own environment (.venv-mxnet): its row and column run there through
tests/mxnet/exchange.py.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import tensorfile
import tensorfile.frameworks
from conftest import MXNET_PYTHON, ROOT
from matrix_data import check, reference

MAIN = ["numpy", "torch", "tensorflow", "jax"]


def make(framework: str, array: np.ndarray):
    if framework == "numpy":
        return array
    if framework == "torch":  # through the adapter: torch.from_numpy refuses bfloat16 / float8 arrays
        return tensorfile.frameworks.get_adapter("torch").from_numpy(array.copy(), {}, {})
    if framework == "tensorflow":
        import tensorflow as tf

        return tf.constant(array)
    if framework == "jax":
        return tensorfile.frameworks.get_adapter("jax").from_numpy(array, {}, {})
    raise ValueError(framework)


def _mxnet(*args: str) -> subprocess.CompletedProcess:
    if not MXNET_PYTHON.exists():
        pytest.skip("the MXNet side environment .venv-mxnet is missing (make test builds it)")
    return subprocess.run([str(MXNET_PYTHON), str(ROOT / "tests" / "mxnet" / "exchange.py"), *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exchange")
    for source in MAIN:
        tensorfile.save({k: make(source, v) for k, v in reference().items()}, folder / f"from-{source}")
    out = _mxnet("save", str(folder))
    assert out.returncode == 0, out.stderr
    return folder


@pytest.mark.parametrize("target", MAIN)
@pytest.mark.parametrize("source", MAIN + ["mxnet"])
def test_matrix(exchange, source, target):
    loaded = tensorfile.load(exchange / f"from-{source}", framework=target)
    kinds = {type(v).__module__.partition(".")[0] for v in loaded.values()}
    assert kinds <= {target, "jaxlib", "ml_dtypes"} and kinds, kinds
    assert check(loaded, f"{source} -> {target}") == []


def test_matrix_into_mxnet(exchange):
    out = _mxnet("check", str(exchange))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("-> mxnet") == 5


@pytest.mark.parametrize("source", MAIN)
def test_default_framework_is_the_one_saved_from(exchange, source):
    loaded = tensorfile.load(exchange / f"from-{source}")
    top = {type(v).__module__.partition(".")[0] for v in loaded.values()}
    assert top == ({"jaxlib"} if source == "jax" else {source})


@pytest.mark.parametrize("target", MAIN)
def test_bfloat16_and_float8_between_the_four(tmp_path, target):
    import ml_dtypes

    values = {"bf16": np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16) / 4,
              "f8": np.array([0.5, -2, 448], dtype=ml_dtypes.float8_e4m3fn)}  # fmt: skip
    for source in MAIN:
        tensorfile.save({k: make(source, v) for k, v in values.items()}, tmp_path / source)
        back = tensorfile.load(tmp_path / source, framework=target)
        for k, v in values.items():
            got = tensorfile.frameworks.adapter_for(back[k]).to_numpy(back[k], k)
            assert got.dtype == v.dtype and got.tobytes() == v.tobytes(), (source, target, k)


def test_gluon_mlp_in_torch_gives_the_same_outputs(exchange):
    import torch

    from frameworks_support import torch_mlp

    net = torch_mlp()
    report = tensorfile.load_parameters(net, exchange / "gluon_mlp.params")
    assert report.ok
    io = tensorfile.load(exchange / "gluon_io", framework="torch")
    Y = net(io["X"].float())
    assert torch.allclose(Y, io["Y"].float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", ["numpy", "jax", "torch"])
def test_gluon_mlp_model_file_is_rebuilt_without_mxnet(exchange, target):
    """The chapter's Gluon MLP saved with save_model under real MXNet, rebuilt here, where MXNet cannot even be
    imported (issue 13)."""
    import importlib.util

    from tensorfile.model import load_model

    if importlib.util.find_spec(f"tensorfile.model.build_{target}") is None:
        pytest.skip(f"model graphs are not built in {target} in this tree")
    stored = tensorfile.load(exchange / "gluon_mlp.model", framework="numpy")
    plain = tensorfile.load(exchange / "gluon_mlp.params", framework="numpy")
    assert sorted(stored) == sorted(plain) and all(stored[k].tobytes() == plain[k].tobytes() for k in plain)
    io = tensorfile.load(exchange / "gluon_io", framework="numpy")
    model = load_model(exchange / "gluon_mlp.model", target)
    x = io["X"].astype(np.float32)
    if target == "torch":
        import torch

        x = torch.from_numpy(x)
    out = model(x)
    got = out.detach().numpy() if hasattr(out, "detach") else np.asarray(out)
    np.testing.assert_allclose(got, io["Y"], atol=1e-5, rtol=0)
