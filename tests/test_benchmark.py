"""The benchmark scripts run (their numbers are read by people, not asserted here)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def _run(script: str, *args: str, timeout: int = 300) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT / "benchmarks")  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_save_load_benchmark_small_runs():
    text = _run("save_load.py", "--size", "small", "--repeat", "1")
    for row in ("raw write+fsync", "tensorfile save", "torch.load", "safetensors open+touch", "np.load"):
        assert row in text
    assert "save vs raw write" in text and "peak extra memory while saving" in text


def test_checkpoint_stall_benchmark_runs():
    assert "ratio async/sync" in _run("checkpoint_stall.py", "--repeat", "2")


def test_torch_read_benchmark_small_runs():
    text = _run("torch_read.py", "--size", "small", "--repeat", "1", timeout=120)
    for row in ("tensorfile, no torch, first load", "torch.load, warm", "torch.load in this process", "raw readinto, warm buffer"):
        assert row in text
    assert "first load: no torch vs torch.load" in text and "warm: no torch vs torch.load" in text
