"""The fast paths of issue 10 keep every guarantee: private memory, parallel reads, one header build, batched
writes, the paused collector."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import safetensors.numpy

import tensorfile
from tensorfile.errors import FormatError
from tensorfile.format import reader as reader_module
from tensorfile.format import writer as writer_module
from tensorfile.format.dtypes import code_of, name_of
from tensorfile.format.memory import MAP_MIN_BYTES, empty_array
from tensorfile.format.reader import SafetensorsReader


_FORK_CHECK = """
import os
import numpy as np
from tensorfile.format.memory import MAP_MIN_BYTES, empty_array
big = empty_array((MAP_MIN_BYTES // 4 + 3,), np.dtype("<f4"))
big[:] = 1.0
pid = os.fork()
if pid == 0:  # the child writes to its copy; private memory keeps it from the parent
    big[:] = 2.0
    os._exit(0)
os.waitpid(pid, 0)
print(big.min(), big.max())
"""


def test_large_buffers_are_private_maps_that_a_forked_child_cannot_change():
    # In a fresh interpreter: this one has threads (JAX), which fork() must not meet.
    out = subprocess.run([sys.executable, "-c", _FORK_CHECK], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1.0", "1.0"]
    small = empty_array((2, 3), np.dtype("<i8"))
    assert small.shape == (2, 3) and small.dtype == np.dtype("<i8") and small.flags.writeable
    big = empty_array((MAP_MIN_BYTES,), np.dtype("<f8"))
    assert big.flags.writeable and big.flags.c_contiguous and big.shape == (MAP_MIN_BYTES,)
    assert empty_array((0, 5), np.dtype("<f8")).shape == (0, 5)


def test_load_gives_writable_private_arrays_equal_to_the_reference(tmp_path):
    rng = np.random.default_rng(0)
    state = {f"big{i}": rng.random((700, 1000)).astype(np.float32) for i in range(4)}  # 2.8 MB each: read in parallel
    state.update({f"small{i}": rng.integers(0, 9, (3, i + 1)) for i in range(20)})
    state["empty"] = np.zeros((0, 4), np.float16)
    tensorfile.save(state, tmp_path / "s.tensorfile")
    back = tensorfile.load(tmp_path / "s.tensorfile", framework="numpy")
    reference = safetensors.numpy.load_file(str(tmp_path / "s.tensorfile"))
    assert list(back) == list(state)  # the order of the structure, not of the threads
    for name, value in state.items():
        np.testing.assert_array_equal(back[name], value)
        np.testing.assert_array_equal(reference[name], value)
        assert back[name].flags.writeable and back[name].flags.c_contiguous


def test_read_all_keeps_order_reports_checksums_and_fails_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(reader_module, "PARALLEL_MIN", 64)
    monkeypatch.setattr(reader_module, "READERS", 3)
    arrays = {f"t{i}": np.full((i + 1) * 40, i, np.float32) for i in range(12)}
    safetensors.numpy.save_file(arrays, str(tmp_path / "a.safetensors"))
    with SafetensorsReader(tmp_path / "a.safetensors") as r:
        got = list(r.read_all(r.entries.values(), hash=True))
        assert [e.name for e, _, _ in got] == list(r.entries)
        for entry, array, digest in got:
            np.testing.assert_array_equal(array, arrays[entry.name])
            assert digest == r.read(entry, hash=True)[1]
        first = next(r.read_all(r.entries.values()))  # stopping early is fine
        assert first[0].name == next(iter(r.entries))
    # A file that shrinks after it was opened: a helper thread's short read is a FormatError here.
    r = SafetensorsReader(tmp_path / "a.safetensors")
    os.truncate(tmp_path / "a.safetensors", r.header.data_start + 100)
    with pytest.raises(FormatError, match="expected .* bytes"):
        list(r.read_all(r.entries.values()))
    r.close()


def test_one_header_build_and_a_colliding_placeholder_falls_back(tmp_path, monkeypatch):
    state = {"a": np.arange(10.0), "b": np.ones((3, 3), np.float32)}
    calls = []
    real_build = writer_module.build_header
    monkeypatch.setattr(writer_module, "build_header", lambda *a, **k: calls.append(1) or real_build(*a, **k))
    tensorfile.save(state, tmp_path / "one.tensorfile")
    assert len(calls) == 1
    monkeypatch.setattr(writer_module.secrets, "token_hex", lambda n: "abcdef01")
    calls.clear()
    tensorfile.save(state, tmp_path / "two.tensorfile", metadata={"note": "abcdef0100000000"})  # looks like slot 0
    assert len(calls) == 2  # found twice: the header is built again with the real checksums
    for name in ("one", "two"):
        with tensorfile.open(tmp_path / f"{name}.tensorfile", verify=True) as f:
            np.testing.assert_array_equal(f["a"], state["a"])
    assert tensorfile.open(tmp_path / "two.tensorfile").metadata["note"] == "abcdef0100000000"


def test_batched_small_writes_account_every_byte_and_match_the_reference(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {f"s{i}": rng.random(i % 7) for i in range(3000)}  # 3000 small tensors, some empty
    arrays["big"] = rng.random(300_000)  # 2.4 MB: written on its own
    arrays["strided"] = rng.random((50, 40))[:, ::2]
    arrays["swapped"] = rng.random(33).astype(">f8")
    seen = []
    with open(tmp_path / "w.safetensors", "wb", buffering=0) as f:
        tensors = writer_module.layout_order([writer_module.Tensor(k, v) for k, v in arrays.items()])
        writer_module.write_tensors(f, tensors, lambda sums: None, progress=seen.append, align=8)
    assert sum(seen) == sum(v.nbytes for v in arrays.values())
    back = safetensors.numpy.load_file(str(tmp_path / "w.safetensors"))
    for name, value in arrays.items():
        np.testing.assert_array_equal(back[name], value)


def test_dtype_caches_keep_byte_orders_apart():
    assert code_of(np.dtype(">f4")) == code_of(np.dtype("<f4")) == "F32"
    assert name_of(np.dtype(">i2")) == "int16" and name_of(np.dtype("<c16")) == "complex128"
    with pytest.raises(tensorfile.UnsupportedTypeError, match="obj.x"):
        code_of(np.dtype("U3"), "obj.x")


def test_the_collector_is_paused_during_save_and_load_and_restored_after(tmp_path, monkeypatch):
    states = []
    real = tensorfile.files.flatten
    monkeypatch.setattr(tensorfile.files, "flatten", lambda obj: states.append(gc.isenabled()) or real(obj))
    tensorfile.save({"a": np.ones(3)}, tmp_path / "g.tensorfile")
    assert states == [False] and gc.isenabled()
    gc.disable()
    try:
        tensorfile.load(tmp_path / "g.tensorfile")
        assert not gc.isenabled()  # a user's choice is kept
    finally:
        gc.enable()
    errors = []

    def work(i):
        try:
            for _ in range(20):
                tensorfile.save({"a": np.arange(i)}, tmp_path / f"t{i}.tensorfile")
                tensorfile.load(tmp_path / f"t{i}.tensorfile")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and gc.isenabled()
    (tmp_path / "junk.tensorfile").write_bytes(b"\x05" + b"\x00" * 7 + b"{}")
    with pytest.raises(FormatError):
        tensorfile.load(tmp_path / "junk.tensorfile")
    assert gc.isenabled()  # also after an error


def test_memory_the_machine_cannot_give_is_a_limit_error(tmp_path, monkeypatch):
    from tensorfile.format import memory

    tensorfile.save({"big": np.zeros(MAP_MIN_BYTES // 4, np.float32)}, tmp_path / "m.tensorfile")
    np.save(tmp_path / "m.npy", np.zeros(MAP_MIN_BYTES // 4, np.float32))

    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(memory.mmap, "mmap", refuse)
    for name in ("m.tensorfile", "m.npy"):
        with pytest.raises(tensorfile.LimitError):
            tensorfile.load(tmp_path / name)
    with tensorfile.open(tmp_path / "m.npy") as f:  # the header only: the array's memory is asked for when it is read
        with pytest.raises(tensorfile.LimitError, match="cannot be had"):
            f["tensor"]


def test_a_background_thread_does_not_pause_the_collector(tmp_path):
    seen = []
    real = tensorfile.files.flatten

    def spy(obj):
        seen.append(gc.isenabled())
        return real(obj)

    tensorfile.files.flatten = spy
    try:
        t = threading.Thread(target=tensorfile.save, args=({"a": np.ones(2)}, tmp_path / "bg.tensorfile"))
        t.start()
        t.join()
    finally:
        tensorfile.files.flatten = real
    assert seen == [True]  # the training thread keeps collecting while a checkpoint is written


def test_a_plain_safetensors_file_cannot_hold_a_tensor_named_metadata(tmp_path):
    with pytest.raises(tensorfile.UnsupportedTypeError, match="__metadata__"):
        tensorfile.save({"__metadata__": np.ones(2)}, tmp_path / "x.safetensors", format="safetensors")
    assert not (tmp_path / "x.safetensors").exists()
