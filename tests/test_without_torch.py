"""tensorfile works with only NumPy: torch is imported only when a torch tensor is involved."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tensorfile


def _run(code: str) -> subprocess.CompletedProcess:
    blocker = "import sys; sys.modules['torch'] = None\n"  # makes `import torch` fail
    return subprocess.run([sys.executable, "-c", blocker + textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_import_imports_no_framework():
    code = "import sys, tensorfile; print(sorted({'torch', 'tensorflow', 'jax', 'mxnet', 'keras', 'flax'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_only_numpy_installed(tmp_path):
    """With every framework blocked, the NumPy half works and asking for a framework says how to get it."""
    blocker = "import sys\nfor m in ('torch', 'tensorflow', 'jax', 'jaxlib', 'mxnet', 'keras', 'flax'): sys.modules[m] = None\n"
    code = blocker + textwrap.dedent(
        f"""
        import numpy as np, tensorfile
        tensorfile.save({{"w": np.ones(2)}}, {str(tmp_path / 'n')!r})
        print(tensorfile.load({str(tmp_path / 'n')!r})["w"].tolist())
        for framework in ("tensorflow", "jax", "mxnet"):
            try:
                tensorfile.load({str(tmp_path / 'n')!r}, framework=framework)
            except ImportError as exc:
                print(framework, "ImportError", "numpy<1.24" in str(exc) or "tensorfile[" in str(exc))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[1.0, 1.0]", "tensorflow ImportError True", "jax ImportError True", "mxnet ImportError True"]


def test_torch_file_loads_as_numpy_without_torch(tmp_path):
    torch = pytest.importorskip("torch")
    tensorfile.save({"w": torch.arange(6.0).reshape(2, 3), "bf": torch.ones(2, dtype=torch.bfloat16)}, tmp_path / "t")
    tensorfile.save({"n": np.arange(3)}, tmp_path / "n")
    out = _run(
        f"""
        import tensorfile
        print(tensorfile.load({str(tmp_path / 'n')!r})["n"].tolist())
        back = tensorfile.load({str(tmp_path / 't')!r}, framework="numpy")
        print(back["w"].tolist(), back["bf"].dtype)
        print(type(tensorfile.load({str(tmp_path / 't')!r})["w"]).__module__)  # torch not imported: NumPy
        """
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[0, 1, 2]"
    assert lines[1] == "[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] bfloat16"
    assert lines[2] == "numpy"
