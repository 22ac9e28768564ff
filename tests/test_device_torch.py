"""The torch side of the GPU path (frameworks/torch_device.py), run on the CPU.

With ``"cpu"`` added to ``STREAM_DEVICE_TYPES`` the very code that serves CUDA runs here: loads read
through the ring of host buffers into device-side byte tensors, ``load_parameters`` writes into the
parameters' own memory, async checkpoints stage through ``DeviceSource`` into reused buffers; only the
copies are synchronous ``copy_`` calls instead of copies on a stream. tests_gpu/ runs it on CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensorfile
from tensorfile import IntegrityError

torch = pytest.importorskip("torch")
from tensorfile.checkpoint.staging import Staging  # noqa: E402
from tensorfile.format import pipeline  # noqa: E402
from tensorfile.frameworks import torch_device  # noqa: E402

CHUNK = 4096


@pytest.fixture
def on_device(monkeypatch):
    """CPU tensors take the device path, through slots of CHUNK bytes."""
    monkeypatch.setattr(torch_device, "STREAM_DEVICE_TYPES", {"cuda", "cpu"})
    monkeypatch.setattr(pipeline, "CHUNK", CHUNK)
    torch_device.LAST_STATS.clear()
    return torch_device.LAST_STATS


def _state():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(64, 48, generator=g)
    return {
        "w": torch.nn.Parameter(torch.randn(100, 70, generator=g)),  # 28000 bytes: 7 pieces
        "b": torch.randn(70, generator=g).requires_grad_(),
        "half": torch.randn(33, generator=g).to(torch.bfloat16),
        "f8": torch.randn(17, generator=g).to(torch.float8_e4m3fn),
        "c128": torch.randn(9, dtype=torch.complex128, generator=g),
        "mask": torch.rand(13, generator=g) > 0.5,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 5),
        "steps": torch.arange(5, dtype=torch.int64),
        "base": base,
        "row": base[3],  # shares base's storage: rebuilt on the host path, as a view again
        "epoch": 7,
    }


def _bits(t):
    return t.detach().reshape(-1).view(torch.uint8)


def _same(a, b):
    assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and a.requires_grad == b.requires_grad
    assert torch.equal(_bits(a), _bits(b))


def test_load_through_the_ring_equals_the_host_load(tmp_path, on_device):
    state = _state()
    tensorfile.save(state, tmp_path / "s")
    host = tensorfile.load(tmp_path / "s")  # map_location None, nothing recorded on a device: the host path
    assert on_device == []
    back = tensorfile.load(tmp_path / "s", map_location="cpu")
    (stats,) = on_device
    for name in state:
        if name != "epoch":
            _same(back[name], host[name])
            assert torch.equal(_bits(back[name]), _bits(state[name])), name
    assert back["epoch"] == 7
    assert back["row"].data_ptr() == back["base"].data_ptr() + 3 * 48 * 4  # the shared storage is one again
    streamed = sum(t.numel() * t.element_size() for k, t in state.items() if k not in ("epoch", "base", "row"))
    assert stats.bytes == streamed and stats.pieces > len(state)  # the large tensors in several pieces
    assert stats.slot_bytes == CHUNK and stats.allocated_bytes <= pipeline.SLOTS * CHUNK  # bounded host memory
    assert isinstance(back["w"], torch.nn.Parameter) and back["b"].requires_grad


def test_a_corrupt_tensor_is_named_on_the_device_path(tmp_path, on_device):
    tensorfile.save({"a": torch.ones(3000), "b": torch.zeros(10)}, tmp_path / "s")
    with tensorfile.open(tmp_path / "s") as f:
        offset = f.info("a").offset
    raw = bytearray((tmp_path / "s").read_bytes())
    raw[offset + 5000] ^= 1
    (tmp_path / "s").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="tensor 'a' is corrupt"):
        tensorfile.load(tmp_path / "s", map_location="cpu")


def test_a_plain_safetensors_file_streams_for_torch(tmp_path, on_device):
    st = pytest.importorskip("safetensors.torch")
    state = {"x": torch.randn(50, 40), "y": torch.arange(7, dtype=torch.int16)}
    st.save_file(state, tmp_path / "p.safetensors")
    back = tensorfile.load(tmp_path / "p.safetensors", framework="torch", map_location="cpu")
    assert list(back) == ["x", "y"] and all(torch.equal(back[k], state[k]) for k in state)
    assert on_device[0].bytes == 50 * 40 * 4 + 14
    assert isinstance(tensorfile.load(tmp_path / "p.safetensors")["x"], np.ndarray)  # NumPy: no device path


def test_a_callable_map_location_keeps_the_host_path(tmp_path, on_device):
    tensorfile.save({"a": torch.ones(3)}, tmp_path / "s")
    back = tensorfile.load(tmp_path / "s", map_location=lambda t, saved: t * 2)
    assert torch.equal(back["a"], torch.full((3,), 2.0)) and on_device == []


def test_load_parameters_writes_into_the_parameters_through_the_ring(tmp_path, on_device):
    torch.manual_seed(0)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(80, 60), torch.nn.BatchNorm1d(60), torch.nn.Linear(60, 3))  # noqa: E731
    source, model = make(), make()
    tensorfile.save_parameters(source, tmp_path / "m.params")
    before = {k: v.data_ptr() for k, v in model.state_dict().items()}
    report = tensorfile.load_parameters(model, tmp_path / "m.params")
    assert report.loaded == list(model.state_dict())  # in the model's order
    for (name, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == before  # filled in place
    assert on_device[0].bytes == sum(v.numel() * v.element_size() for v in source.state_dict().values())


def test_load_parameters_takes_the_host_path_for_what_does_not_fit_as_stored(tmp_path, on_device):
    source = torch.nn.Linear(8, 4)
    tensorfile.save_parameters(source, tmp_path / "m")
    model = torch.nn.Linear(8, 4)
    model.weight = torch.nn.Parameter(torch.zeros(8, 4).t())  # not contiguous: filled through a host array
    report = tensorfile.load_parameters(model, tmp_path / "m")
    assert report.loaded == ["weight", "bias"]
    assert torch.equal(model.weight, source.weight) and torch.equal(model.bias, source.bias)
    assert on_device[0].bytes == 4 * 4  # the bias alone went through the ring


def test_async_staging_copies_device_tensors_into_reused_buffers(on_device, monkeypatch):
    copies: list[tuple[int, ...]] = []
    real = torch_device.DeviceSource.copy_to
    monkeypatch.setattr(torch_device.DeviceSource, "copy_to", lambda self, buf: copies.append(self.shape) or real(self, buf))
    state = {"model": {"w": torch.randn(30, 20), "b": torch.randn(20).to(torch.bfloat16)}, "step": 1,
             "host": np.arange(4.0)}  # fmt: skip
    staging = Staging()
    first = staging.snapshot(state)
    pointers = (first["model"]["w"].data_ptr(), first["model"]["b"].data_ptr())
    assert sorted(copies) == [(20,), (30, 20)]
    state["model"]["w"].add_(1)
    second = staging.snapshot(state)
    assert (second["model"]["w"].data_ptr(), second["model"]["b"].data_ptr()) == pointers  # the same buffers
    assert torch.equal(second["model"]["w"], state["model"]["w"]) and torch.equal(second["model"]["b"], state["model"]["b"])
    assert isinstance(second["host"], np.ndarray) and len(copies) == 4
    allocators = {key[-1] for key in staging._buffers}
    assert allocators == {torch_device.pinned_array, Staging.__init__.__globals__["empty_array"]}
    spare = Staging()
    spare.prefault(staging)  # the manager's second staging: device places pinned there too
    assert {k: k[-1] for k in spare._buffers} == {k: k[-1] for k in staging._buffers}


def test_async_checkpoints_of_device_state_restore_bit_identical(tmp_path, on_device):
    model = torch.nn.Linear(16, 8)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    saved = {}
    with tensorfile.CheckpointManager(tmp_path / "ck", async_save=True) as manager:
        for step in range(3):
            model(torch.randn(4, 16)).sum().backward()
            opt.step()
            manager.save(step, {"model": model.state_dict(), "optim": opt.state_dict()})
            saved[step] = {k: v.clone() for k, v in model.state_dict().items()}
            with torch.no_grad():
                model.weight.add_(100)  # changed right after the save returned: must not leak into the checkpoint
        manager.wait()
        for step in range(3):
            state = manager.restore(step)
            for name, value in saved[step].items():
                assert torch.equal(state["model"][name], value), (step, name)


def test_model_params_of_a_device_model_read_no_values():
    from tensorfile.parameters import models

    adapter = torch_device.ADAPTER
    shape_only = models._shape_only(adapter, torch.ones(3, 4, dtype=torch.bfloat16), "w")
    assert shape_only.shape == (3, 4) and shape_only.dtype.name == "bfloat16" and shape_only.strides == (0, 0)
    assert not shape_only.flags.writeable
    with pytest.raises(tensorfile.UnsupportedTypeError, match="meta device"):
        models._shape_only(adapter, torch.ones(2, device="meta"), "w")
    with torch.inference_mode():
        frozen = torch.ones(3)
    with pytest.raises(RuntimeError, match="inference tensor"):
        models._rewrite(frozen)
    models._rewrite(torch.nn.Linear(2, 2).weight)  # an ordinary parameter: no error, no change
