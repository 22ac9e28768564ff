"""Checks that need a CUDA device: run with `make test-gpu` on a machine that has one.

Kept out of `make test` (tests/), which must pass, unskipped, on CPU-only machines. Without a device this
module fails at import, loudly, rather than skipping. The same code paths run on the CPU in
tests/test_device_pipeline.py and tests/test_device_torch.py; here they run on CUDA: pinned host buffers,
copies on a side stream, events, device-to-host staging.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import tensorfile
from tensorfile import IntegrityError
from tensorfile.checkpoint.staging import Staging
from tensorfile.format import pipeline
from tensorfile.frameworks import torch_device

assert torch.cuda.is_available(), "tests_gpu/ needs a CUDA device"

MiB = 1 << 20


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).view(torch.uint8).cpu()


def _state(big_mib: int = 40) -> dict:
    g = torch.Generator().manual_seed(5)
    return {
        "big": torch.randn(big_mib * MiB // 4, generator=g),  # several pieces of pipeline.CHUNK
        "w": torch.nn.Parameter(torch.randn(300, 200, generator=g)),
        "b": torch.randn(200, generator=g).requires_grad_(),
        "half": torch.randn(1000, generator=g).to(torch.float16),
        "bf16": torch.randn(1000, generator=g).to(torch.bfloat16),
        "f8": torch.randn(64, generator=g).to(torch.float8_e4m3fn),
        "c64": torch.randn(33, dtype=torch.complex64, generator=g),
        "c128": torch.randn(9, dtype=torch.complex128, generator=g),
        "mask": torch.rand(77, generator=g) > 0.5,
        "ids": torch.arange(1000, dtype=torch.int64),
        "u8": torch.arange(255, dtype=torch.uint8),
        "scalar": torch.tensor(1.25),
        "empty": torch.zeros(0, 8),
        "step": 12,
    }


def test_cuda_tensors_saved_from_host_copies(tmp_path):
    t = torch.arange(6.0, device="cuda").reshape(2, 3)
    tensorfile.save({"t": t, "v": t[1]}, tmp_path / "c")
    back = tensorfile.load(tmp_path / "c")
    assert back["t"].device.type == "cuda" and torch.equal(back["t"].cpu(), t.cpu())
    assert back["v"].data_ptr() == back["t"].data_ptr() + 12
    assert tensorfile.load(tmp_path / "c", map_location="cpu")["t"].device.type == "cpu"


@pytest.mark.parametrize("where", ["cuda", "cuda:0", torch.device("cuda"), {"cpu": "cuda:0"}],
                         ids=["cuda", "cuda:0", "torch.device", "dict"])  # fmt: skip
def test_load_to_cuda_is_bit_identical_to_torch_load(tmp_path, where):
    state = _state()
    torch.save(state, tmp_path / "s.pt")
    tensorfile.save(state, tmp_path / "s.tf")
    theirs = torch.load(tmp_path / "s.pt", map_location=where, weights_only=True)
    torch_device.LAST_STATS.clear()
    ours = tensorfile.load(tmp_path / "s.tf", map_location=where)
    (stats,) = torch_device.LAST_STATS  # the pinned, overlapped path
    assert stats.bytes == sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))
    assert stats.allocated_bytes <= pipeline.SLOTS * pipeline.CHUNK and stats.pieces > len(state)
    assert ours.keys() == theirs.keys() and ours["step"] == theirs["step"] == 12
    for name, value in theirs.items():
        if isinstance(value, torch.Tensor):
            mine = ours[name]
            assert type(mine) is type(value) and mine.device == value.device == torch.device("cuda", 0), name
            assert mine.dtype == value.dtype and mine.shape == value.shape and mine.requires_grad == value.requires_grad
            assert torch.equal(_bits(mine), _bits(value)), name


def test_state_saved_on_cuda_goes_back_to_cuda_through_the_ring(tmp_path):
    state = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in _state(8).items()}
    tensorfile.save(state, tmp_path / "s")
    torch_device.LAST_STATS.clear()
    back = tensorfile.load(tmp_path / "s")
    assert torch_device.LAST_STATS and all(v.is_cuda for v in back.values() if isinstance(v, torch.Tensor))
    assert all(torch.equal(_bits(back[k]), _bits(v)) for k, v in state.items() if isinstance(v, torch.Tensor))


def test_the_ring_slots_are_pinned():
    slot = torch_device.pinned_bytes(MiB)
    assert isinstance(slot.base, torch.Tensor) and slot.base.is_pinned()
    array = torch_device.pinned_array((3, 5), np.dtype("f4"))
    assert torch.from_numpy(array).is_pinned() and array.shape == (3, 5)


def test_a_corrupt_tensor_stops_a_cuda_load(tmp_path):
    tensorfile.save({"a": torch.ones(10 * MiB), "b": torch.zeros(3)}, tmp_path / "s")
    with tensorfile.open(tmp_path / "s") as f:
        offset = f.info("a").offset
    raw = bytearray((tmp_path / "s").read_bytes())
    raw[offset + 9 * MiB] ^= 1
    (tmp_path / "s").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="tensor 'a' is corrupt"):
        tensorfile.load(tmp_path / "s", map_location="cuda")
    torch.cuda.synchronize()  # nothing left running on the side stream


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.LayerNorm(1024), torch.nn.Linear(1024, 256),
                               torch.nn.BatchNorm1d(256))  # fmt: skip


def test_load_parameters_fills_a_cuda_model_in_place(tmp_path):
    torch.manual_seed(0)
    source = _model()
    tensorfile.save_parameters(source, tmp_path / "m.params")
    model = _model().cuda()
    pointers = {k: v.data_ptr() for k, v in model.state_dict().items()}
    torch_device.LAST_STATS.clear()
    report = tensorfile.load_parameters(model, tmp_path / "m.params")
    assert report.loaded == list(model.state_dict())
    assert torch_device.LAST_STATS[0].bytes == sum(v.numel() * v.element_size() for v in source.state_dict().values())
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == pointers
    for (name, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert b.is_cuda and torch.equal(_bits(a), _bits(b)), name
    x = torch.randn(8, 512)
    source.eval(), model.eval()
    assert torch.allclose(source(x), model(x.cuda()).cpu(), atol=1e-4)


def test_staging_copies_cuda_tensors_into_reused_pinned_buffers():
    state = {"w": torch.randn(1000, 300, device="cuda"), "h": torch.randn(64).to(torch.bfloat16).cuda(),
             "t": torch.randn(300, 1000, device="cuda").t(), "host": torch.ones(3)}  # fmt: skip
    staging = Staging()
    first = staging.snapshot(state)
    pointers = {k: v.data_ptr() for k, v in first.items()}
    for name in ("w", "h", "t"):
        assert first[name].device.type == "cpu" and first[name].is_pinned(), name
        assert torch.equal(first[name], state[name].cpu()), name
    assert not first["host"].is_pinned()
    for _ in range(3):
        state["w"].mul_(2)  # queued on the current stream, before the snapshot's copies
        again = staging.snapshot(state)
        assert {k: v.data_ptr() for k, v in again.items()} == pointers  # the same pinned buffers every time
        assert torch.equal(again["w"], state["w"].cpu())
    spare = Staging()
    spare.prefault(staging)
    pinned = [b for k, b in spare._buffers.items() if k[-1] is torch_device.pinned_array]
    assert len(pinned) == 3 and all(torch.from_numpy(b.reshape(-1).view(np.uint8)).is_pinned() for b in pinned)


def test_async_saves_of_cuda_training_restore_bit_identical(tmp_path):
    torch.manual_seed(1)
    model = _model().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    expected = {}
    with tensorfile.CheckpointManager(tmp_path / "ck", async_save=True, max_to_keep=None) as manager:
        for step in range(6):
            model(torch.randn(32, 512, device="cuda")).square().mean().backward()
            opt.step()
            opt.zero_grad()
            manager.save(step, {"model": model, "optim": opt})
            expected[step] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            with torch.no_grad():  # changes queued right after save returned must not reach the checkpoint
                for p in model.parameters():
                    p.add_(1000)
        manager.wait()
        for step, values in expected.items():
            fresh = _model().cuda()
            fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
            manager.restore(step, {"model": fresh, "optim": fresh_opt})
            for name, value in fresh.state_dict().items():
                assert value.is_cuda and torch.equal(_bits(value), _bits(values[name])), (step, name)
            assert fresh_opt.state_dict()["state"][0]["step"] == step + 1


MEMORY = """
import json, sys, torch, tensorfile
torch.empty(1, device="cuda"); torch.cuda.synchronize()
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
tensorfile.load(sys.argv[2], map_location="cuda")  # a tiny file first: imports and first-call costs
torch.cuda.synchronize()
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to VmRSS
before = rss()
out = (torch.load(sys.argv[1], map_location="cuda", weights_only=True) if sys.argv[3] == "torch"
       else tensorfile.load(sys.argv[1], map_location="cuda"))
torch.cuda.synchronize()
print(json.dumps({"peak": hwm() - before, "device": torch.cuda.max_memory_allocated()}))
"""


def test_a_cuda_load_holds_a_few_slots_of_host_memory_not_the_state(tmp_path):
    size = 512 * MiB
    state = {f"t{i}": torch.randn(size // 8 // 4) for i in range(8)}
    tensorfile.save(state, tmp_path / "big")
    tensorfile.save({"a": torch.ones(4)}, tmp_path / "tiny")
    torch.save(state, tmp_path / "big.pt")
    del state
    runs = {}
    for who in ("tensorfile", "torch"):
        done = subprocess.run([sys.executable, "-c", MEMORY, str(tmp_path / ("big.pt" if who == "torch" else "big")),
                               str(tmp_path / "tiny"), who], capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        runs[who] = json.loads(done.stdout.strip().splitlines()[-1])
    slots = pipeline.SLOTS * pipeline.CHUNK
    assert runs["tensorfile"]["peak"] < slots + 96 * MiB, runs  # the ring, plus room for the allocator
    assert runs["tensorfile"]["device"] <= size + 8 * MiB, runs  # every byte lands in its tensor, no device copy
    print(f"host peak above baseline: tensorfile {runs['tensorfile']['peak'] / MiB:.0f} MiB, torch.load "
          f"{runs['torch']['peak'] / MiB:.0f} MiB, for a {size // MiB} MiB state")


def test_load_parameters_into_an_inference_model_on_cuda_changes_nothing(tmp_path):
    tensorfile.save_parameters(_model(), tmp_path / "m.params")
    with torch.inference_mode():
        model = _model().cuda()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(tensorfile.TensorFileError, match="cannot be written"):
        tensorfile.load_parameters(model, tmp_path / "m.params")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
