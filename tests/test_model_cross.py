"""The four torch models of the acceptance (test_model_torch) rebuilt in every other framework, each in a
fresh process that never imports the models' classes: outputs within 1e-5 of torch's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from test_model_torch import saved  # noqa: F401  (the module-scoped fixture: the four models saved)

_CHILD = r"""
import json, sys
import numpy as np
from tensorfile.model import load_model
folder, names, framework = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
io = np.load(f"{folder}/io.npz", allow_pickle=False)
report = {}
for name in names:
    x, expected = io[name + ".x"], io[name + ".y"]
    model = load_model(f"{folder}/{name}.tf", framework)
    if framework == "mxnet":
        import mxnet as mx

        got = model(mx.nd.array(x, dtype=x.dtype))
    else:
        got = model(x)
    got = np.asarray(got.asnumpy() if hasattr(got, "asnumpy") else got)
    report[name] = {"error": float(np.abs(got - expected).max()), "shape": list(got.shape) == list(expected.shape)}
report["imported"] = sorted(m for m in sys.modules if m.startswith(("test_", "conftest", "tests", "torch")))
print(json.dumps(report))
"""


def _child(python: str, folder, names, framework: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([python, "-c", _CHILD, str(folder), json.dumps(names), framework], capture_output=True,
                         text=True, timeout=600, env=env, cwd=folder, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("framework", ["keras", "jax"])
def test_the_four_torch_models_rebuilt_in(saved, framework):  # noqa: F811
    pytest.importorskip({"keras": "keras", "jax": "jax"}[framework])
    folder, models = saved
    report = _child(sys.executable, folder, list(models), framework)
    assert report.pop("imported") == []  # neither the test modules nor torch
    for name in models:
        assert report[name]["shape"] and report[name]["error"] <= 1e-5, (framework, name, report[name])


def test_the_four_torch_models_rebuilt_in_real_mxnet(saved):  # noqa: F811
    python = ROOT / ".venv-mxnet" / "bin" / "python"
    if not python.exists():
        pytest.skip("MXNet lives in .venv-mxnet (make test builds it)")
    folder, models = saved
    report = _child(str(python), folder, list(models), "mxnet")
    assert report.pop("imported") == []
    for name in models:
        assert report[name]["shape"] and report[name]["error"] <= 1e-5, ("mxnet", name, report[name])
