"""The examples run as `make demo` runs them, and print the chapter's results."""

from __future__ import annotations

import subprocess
import sys

from conftest import MXNET_PYTHON, ROOT


def _run(*args: str) -> str:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_chapter_demo_prints_the_chapter_in_every_framework():
    assert MXNET_PYTHON.exists(), "make test builds .venv-mxnet first"
    text = _run(str(ROOT / "examples" / "chapter.py"))
    for framework in ("NumPy", "PyTorch", "TensorFlow", "JAX", "MXNet"):
        assert f"File I/O in {framework}" in text
    assert "x2 = [0 1 2 3]" in text and "x2 = tensor([0, 1, 2, 3])" in text
    assert "x2 = tf.Tensor([0 1 2 3], shape=(4,), dtype=int32)" in text
    assert "(x2, y2) = (Array([0, 1, 2, 3], dtype=int32), Array([0., 0., 0., 0.], dtype=float32))" in text
    assert "mydict2 = {'x': array([0., 1., 2., 3.]), 'y': array([0., 0., 0., 0.])}" in text  # MXNet
    assert "(x2, y2) = (tensor([0, 1, 2, 3]), tensor([0., 0., 0., 0.]))" in text
    assert text.count("Y_clone == Y") == 5 and "False" not in text
    assert "safetensors sees hidden.weight: torch.float32 (256, 20)" in text
    assert "4 tensors, 31784 bytes" in text
    lines = [line for line in text.splitlines() if "hidden.weight is a" in line]
    assert [line.split(":")[0].strip() for line in lines] == ["torch", "tensorflow", "jax", "numpy", "mxnet"]
    assert len({line.rsplit("=", 1)[1] for line in lines}) == 1  # the same values everywhere
    sums = [line.rsplit("=", 1)[1].strip() for line in text.splitlines() if "MLP(X).sum() =" in line]
    # torch.load and Gluon load_parameters of the converted files agree (to float32 rounding: two frameworks sum the
    # same products in different orders, so the sixth printed digit may differ)
    assert len(sums) == 2 and abs(float(sums[0]) - float(sums[1])) <= 2e-6
    assert "np.load, pickles not allowed  -> ['hidden.bias', 'hidden.weight', 'output.bias', 'output.weight']" in text
    assert "killed 3 times" in text and "final weights bit-identical to the uninterrupted run: True" in text


def test_reuse_layers_example():
    text = _run(str(ROOT / "examples" / "reuse_layers.py"))
    assert "loaded: ['encoder.0.weight', 'encoder.0.bias', 'encoder.2.weight', 'encoder.2.bias']" in text
    assert "still to learn: ['head.weight', 'head.bias']" in text
    assert "loaded: ['encoder.0.kernel', 'encoder.0.bias', 'encoder.1.kernel', 'encoder.1.bias']" in text
    assert "encoder outputs agree: True" in text


def test_save_architecture_example_answers_exercise_3():
    text = _run(str(ROOT / "examples" / "save_architecture.py"))
    assert "parameters ['hidden.bias', 'hidden.weight', 'output.bias', 'output.weight']" in text
    assert "the graph: hidden(linear) -> relu(relu) -> output(linear)" in text
    for framework in ("torch", "keras", "numpy"):
        line = next(l for l in text.splitlines() if f"rebuilt in {framework}" in l)
        assert float(line.rsplit("max |diff| ", 1)[1]) <= 1e-5, line
    assert "the MLP class was never defined here: True" in text
    assert "UnsupportedArchitectureError" in text and "data-dependent control flow" in text
