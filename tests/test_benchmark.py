"""The benchmark script runs (its numbers are read by people, not asserted here)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_save_load_benchmark_small_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "save_load.py"), "--size", "small", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for row in ("raw write+fsync", "tensorfile save", "torch.load", "safetensors open+touch", "np.load"):
        assert row in out.stdout
    assert "save vs raw write" in out.stdout and "peak extra memory while saving" in out.stdout


def test_checkpoint_stall_benchmark_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "checkpoint_stall.py"), "--repeat", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT / "benchmarks",
    )
    assert out.returncode == 0, out.stderr
    assert "ratio async/sync" in out.stdout


def test_torch_read_benchmark_small_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "torch_read.py"), "--size", "small", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for row in ("tensorfile, no torch, first load", "torch.load, warm", "torch.load in this process", "raw readinto, warm buffer"):
        assert row in out.stdout
    assert "first load: no torch vs torch.load" in out.stdout and "warm: no torch vs torch.load" in out.stdout
