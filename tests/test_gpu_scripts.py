"""The GPU checks and benchmark, which need CUDA to run for real, at least compile and run their CPU dry run here."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import pytest

from conftest import ROOT

GPU_FILES = sorted((ROOT / "tests_gpu").glob("*.py")) + [ROOT / "benchmarks" / "gpu.py"]


@pytest.mark.parametrize("path", GPU_FILES, ids=lambda p: p.name)
def test_gpu_files_compile_and_import_only_what_exists(path):
    tree = ast.parse(path.read_text(), str(path))
    compile(tree, str(path), "exec")
    assert ast.get_docstring(tree)
    for node in ast.walk(tree):  # tensorfile names they import exist (tests_gpu/ cannot be imported without CUDA)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tensorfile"):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name) and not _submodule(node.module, a.name)]
            assert not missing, (path.name, node.module, missing)


def _submodule(package: str, name: str) -> bool:
    try:
        importlib.import_module(f"{package}.{name}")
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("path", sorted((ROOT / "tests_gpu").glob("test_*.py")), ids=lambda p: p.name)
def test_tests_gpu_fail_loudly_without_cuda(path):
    """Each module asserts CUDA when it is imported, before any test: without a device `make test-gpu` fails, never
    skips."""
    tree = ast.parse(path.read_text(), str(path))
    checks = [n for n in tree.body if isinstance(n, ast.Assert) and "torch.cuda.is_available()" in ast.unparse(n.test)]
    first_test = next(i for i, n in enumerate(tree.body) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"))
    assert checks and tree.body.index(checks[0]) < first_test


def test_gpu_benchmark_without_cuda_says_so_and_its_cpu_dry_run_runs(capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    script = str(ROOT / "benchmarks" / "gpu.py")
    if not torch.cuda.is_available():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        try:
            gpu = importlib.import_module("gpu")
        finally:
            sys.path.remove(str(ROOT / "benchmarks"))
        assert gpu.main(["--size", "tiny"]) == 2 and "no CUDA device" in capsys.readouterr().err
    done = subprocess.run([sys.executable, script, "--device", "cpu", "--size", "tiny", "--repeat", "1", "--train", "0",
                           "--in-process"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "the pinned path moved every byte" in out and "tensorfile.load(map_location='cpu')" in out
    rows = [line for line in out.splitlines() if line.startswith(("| tensorfile async_save", "| DCP async_save"))]
    assert len(rows) == 3 and all(row.rstrip().endswith("| yes |") for row in rows), out
    assert "stall ratio DCP async_save / tensorfile" in out
