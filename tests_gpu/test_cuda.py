"""Checks that need a CUDA device: run with `make test-gpu` on a machine that has one.

Kept out of `make test` (tests/), which must pass, unskipped, on CPU-only machines.
"""

from __future__ import annotations

import torch

import tensorfile

assert torch.cuda.is_available(), "tests_gpu/ needs a CUDA device"


def test_cuda_tensors_saved_from_host_copies(tmp_path):
    t = torch.arange(6.0, device="cuda").reshape(2, 3)
    tensorfile.save({"t": t, "v": t[1]}, tmp_path / "c")
    back = tensorfile.load(tmp_path / "c")
    assert back["t"].device.type == "cuda" and torch.equal(back["t"].cpu(), t.cpu())
    assert back["v"].data_ptr() == back["t"].data_ptr() + 12
    assert tensorfile.load(tmp_path / "c", map_location="cpu")["t"].device.type == "cpu"
