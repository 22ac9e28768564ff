"""Async checkpoints' host memory: staging buffers reused, bounded by async_buffers, prefaulted, freed."""

from __future__ import annotations

import numpy as np
import pytest

from tensorfile import CheckpointManager
from tensorfile.checkpoint.staging import Staging
from tensorfile.errors import UnsupportedTypeError


def _state(step: int, n: int = 3 << 20) -> dict:
    return {"big": np.full(n // 4, step, np.float32), "small": np.arange(5) + step, "step": step}


def _buffers(m: CheckpointManager) -> set[int]:
    stagings = list(m._free) + [s for _, s in m._inflight]
    return {b.ctypes.data for s in stagings for b in s._buffers.values()}


@pytest.mark.parametrize("buffers", [1, 2])
def test_buffers_are_allocated_once_and_reused(tmp_path, buffers):
    with CheckpointManager(tmp_path, async_save=True, async_buffers=buffers, max_to_keep=2) as m:
        m.save(0, _state(0))
        m.wait()
        first = _buffers(m)
        assert m._stagings == buffers  # the second staging is made by the first save, not later
        assert len(first) == 2 * buffers  # "big" and "small" in each staging, faulted in
        for step in range(1, 6):
            m.save(step, _state(step))
        m.wait()
        assert _buffers(m) == first  # the same memory every time
        assert m._stagings == buffers
        back = m.restore()
        assert back["step"] == 5 and back["big"][0] == 5 and back["small"].tolist() == [5, 6, 7, 8, 9]
        assert m.restore(step=4)["big"][-1] == 4
    assert _buffers(m) == set()  # close() frees them


def test_one_buffer_waits_for_the_previous_write_before_copying(tmp_path, monkeypatch):
    from tensorfile.checkpoint import manager as manager_module

    order = []
    real_save = manager_module._save

    def slow_save(tree, path, *args, **kwargs):
        order.append(("write", int(tree["step"])))
        real_save(tree, path, *args, **kwargs)

    real_snapshot = Staging.snapshot

    def snapshot(self, tree):
        order.append(("copy", int(tree["step"])))
        return real_snapshot(self, tree)

    monkeypatch.setattr(manager_module, "_save", slow_save)
    monkeypatch.setattr(Staging, "snapshot", snapshot)
    with CheckpointManager(tmp_path, async_save=True, async_buffers=1) as m:
        for step in range(3):
            m.save(step, _state(step, 1024))
    assert order == [("copy", 0), ("write", 0), ("copy", 1), ("write", 1), ("copy", 2), ("write", 2)]


def test_a_changed_layout_gets_new_buffers_and_drops_old_ones(tmp_path):
    with CheckpointManager(tmp_path, async_save=True, async_buffers=1) as m:
        m.save(0, _state(0))
        m.wait()
        m.save(1, {"other": np.ones((2, 3)), "step": 1})
        m.wait()
        (staging,) = m._free
        assert [key[0] for key in staging._buffers] == [("other",)]
        assert m.restore()["other"].tolist() == [[1, 1, 1], [1, 1, 1]]


def test_async_buffers_must_be_one_or_two(tmp_path):
    for bad in (0, 3, "2"):
        with pytest.raises(ValueError, match="async_buffers must be 1 or 2"):
            CheckpointManager(tmp_path / "x", async_save=True, async_buffers=bad)


def test_an_unsupported_value_leaves_the_staging_usable(tmp_path):
    with CheckpointManager(tmp_path, async_save=True, async_buffers=1) as m:
        with pytest.raises(UnsupportedTypeError, match=r"state\['bad'\]"):
            m.save(0, {"bad": object()})
        m.save(1, _state(1))
        m.wait()
        assert m.steps == [1] and m._stagings == 1


def test_staging_copies_big_tensors_on_threads_exactly():
    staging = Staging()
    tree = {"a": [np.random.default_rng(0).random((512, 1024)), np.arange(3.0)], "b": (np.ones(600_000, ">f4"),)}
    copy = staging.snapshot(tree)
    np.testing.assert_array_equal(copy["a"][0], tree["a"][0])
    assert copy["b"][0].dtype == np.dtype("=f4") and copy["b"][0].sum() == 600_000
    assert copy["a"][0].ctypes.data != tree["a"][0].ctypes.data
    tree["a"][0][:] = 0
    assert copy["a"][0].sum() > 0  # a copy, not a view
    again = Staging()
    again.prefault(staging)
    assert {k: (b.shape, b.dtype) for k, b in again._buffers.items()} == {k: (b.shape, b.dtype) for k, b in staging._buffers.items()}


@pytest.mark.parametrize("buffers", [1, 2])
def test_numpy_scalars_and_float8_kinds_are_snapshotted_exactly(tmp_path, buffers):
    import ml_dtypes

    kinds = [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2fnuz]
    with CheckpointManager(tmp_path, async_save=True, async_buffers=buffers) as m:
        for step, kind in enumerate(kinds):
            m.save(step, {"lr": np.float64(0.1 * (step + 1)), "n": np.int64(step), "f8": np.array([0.5, -2.0], kind)})
        m.wait()
        for step, kind in enumerate(kinds):
            back = m.restore(step=step)
            assert float(back["lr"]) == 0.1 * (step + 1) and int(back["n"]) == step  # not the previous save's
            assert back["f8"].dtype == np.dtype(kind) and back["f8"].astype(np.float32).tolist() == [0.5, -2.0]


def test_a_tensor_seen_twice_stays_one_tensor_as_in_a_sync_save(tmp_path):
    torch = pytest.importorskip("torch")
    w = torch.randn(4, 3)
    for mode in (False, True):
        with CheckpointManager(tmp_path / str(mode), async_save=mode) as m:
            m.save(0, {"embed": w, "lm_head": w})
            back = m.restore()
            assert back["embed"] is back["lm_head"] or back["embed"].data_ptr() == back["lm_head"].data_ptr()
            assert torch.equal(back["embed"], w)


def test_tensorflow_tensors_are_snapshotted_after_the_copy(tmp_path):
    tf = pytest.importorskip("tensorflow")
    with CheckpointManager(tmp_path, async_save=True, async_buffers=1) as m:
        for step in range(3):
            m.save(step, {"v": tf.fill([4], float(step + 1))})
        m.wait()
        assert [m.restore(step=s)["v"].numpy().tolist() for s in range(3)] == [[1.0] * 4, [2.0] * 4, [3.0] * 4]


def test_an_interrupted_close_keeps_the_folder_locked_until_the_write_ends(tmp_path, monkeypatch):
    from tensorfile.checkpoint.writer import Job
    from tensorfile.errors import CheckpointLockedError

    m = CheckpointManager(tmp_path, async_save=True)
    m.save(0, _state(0))
    real_join = Job.join
    calls = []

    def interrupted_join(self, *args, **kwargs):
        if not calls:
            calls.append(1)
            raise KeyboardInterrupt
        return real_join(self, *args, **kwargs)

    monkeypatch.setattr(Job, "join", interrupted_join)
    with pytest.raises(KeyboardInterrupt):
        m.close()
    monkeypatch.undo()
    with pytest.raises(CheckpointLockedError):
        CheckpointManager(tmp_path)  # the write may still run: nobody else may clean its folder
    m.close()
    with CheckpointManager(tmp_path) as again:
        assert again.steps == [0]


def test_async_buffers_must_be_a_plain_int():
    for bad in (True, 1.0, 2.0):
        with pytest.raises(ValueError, match="async_buffers"):
            CheckpointManager("unused-folder-never-made", async_save=True, async_buffers=bad)


def test_a_defaultdict_is_refused_as_in_a_sync_save(tmp_path):
    from collections import defaultdict

    for mode in (False, True):
        with CheckpointManager(tmp_path / str(mode), async_save=mode) as m:
            with pytest.raises(UnsupportedTypeError):
                m.save(0, {"d": defaultdict(list, {"a": np.ones(2)})})


def _framework_values(name: str, step: int):
    """A state of ``name``'s own tensors whose values are the step."""
    if name == "jax":
        jnp = pytest.importorskip("jax.numpy")
        return {"w": jnp.full((3,), float(step)), "big": jnp.full((600_000,), float(step))}
    if name == "tensorflow":
        tf = pytest.importorskip("tensorflow")
        return {"w": tf.fill([3], float(step)), "var": tf.Variable(tf.fill([3], float(step)))}
    torch = pytest.importorskip("torch")
    return {"w": torch.full((3,), float(step)), "p": torch.nn.Parameter(torch.full((3,), float(step)))}


@pytest.mark.parametrize("framework", ["jax", "tensorflow", "torch"])
@pytest.mark.parametrize("buffers", [1, 2])
def test_every_framework_snapshots_each_step_s_own_values(tmp_path, framework, buffers):
    with CheckpointManager(tmp_path, async_save=True, async_buffers=buffers) as m:
        for step in range(4):
            m.save(step, _framework_values(framework, step))
        m.wait()
        for step in range(4):
            back = m.restore(step=step)
            values = {k: np.asarray(v.detach() if hasattr(v, "detach") else v) for k, v in back.items()}
            assert {k: float(v.reshape(-1)[-1]) for k, v in values.items()} == {k: float(step) for k in back}


@pytest.mark.parametrize("which", ["keras", "flax"])
def test_live_models_restore_the_last_async_step(tmp_path, which):
    def make():
        if which == "keras":
            keras = pytest.importorskip("keras")
            return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        nnx = pytest.importorskip("flax.nnx")
        return nnx.Linear(4, 3, rngs=nnx.Rngs(0))

    def set_all(model, value):
        if which == "keras":
            model.set_weights([np.full_like(w, value) for w in model.get_weights()])
        else:
            model.kernel[...] = np.full(model.kernel[...].shape, value, np.float32)
            model.bias[...] = np.full(model.bias[...].shape, value, np.float32)

    net = make()
    with CheckpointManager(tmp_path, async_save=True) as m:
        for step in range(3):
            set_all(net, float(step + 1))
            m.save(step, {"model": net, "step": step})
        m.wait()
        fresh = make()
        m.restore(state={"model": fresh})
    weights = fresh.get_weights() if which == "keras" else [np.asarray(fresh.kernel[...]), np.asarray(fresh.bias[...])]
    assert all(np.all(np.asarray(w) == 3.0) for w in weights)


def test_close_ends_the_writer_thread_and_no_ended_job_holds_its_snapshot(tmp_path):
    """A daemon thread still freeing a snapshot's torch tensors while the interpreter exits aborts the process
    ("terminate called without an active exception", seen once in CI in the crash harness's last run): each job
    drops its callable (and the snapshot in it) in the thread before it is marked done, and close() returns only
    once the thread has ended."""
    import threading

    m = CheckpointManager(tmp_path, async_save=True)
    m.save(0, _state(0))
    job, _ = m._inflight[0]
    thread = m._writer._thread
    m.wait()
    assert job.run.__name__ == "_ended"  # the write's closure, and its snapshot, already dropped
    m.save(1, _state(1))
    m.close()
    assert thread is not None and not thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("tensorfile-checkpoint")]
    with CheckpointManager(tmp_path) as again:
        np.testing.assert_array_equal(again.restore()["big"], np.full((3 << 20) // 4, 1, np.float32))


def test_a_process_forked_during_an_async_save_closes_without_waiting_for_the_parents_write(tmp_path, monkeypatch):
    """A DataLoader worker forked while a save is in flight inherits the manager (and its exit hook) but not the
    writer thread: its close() must not wait for a write that only the parent runs; the parent commits it."""
    import os
    import threading

    m = CheckpointManager(tmp_path, async_save=True)
    go = threading.Event()
    real_write = m._write
    monkeypatch.setattr(m, "_write", lambda *args: (go.wait(), real_write(*args)))
    m.save(0, _state(0))
    pid = os.fork()
    if pid == 0:  # the child: close() and the exit hook must both return at once
        import signal

        signal.alarm(20)
        try:
            m.close()
            from tensorfile.checkpoint.manager import _close_at_exit
            import weakref

            _close_at_exit(weakref.ref(m))
        finally:
            os._exit(0)
    go.set()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    m.close()
    with CheckpointManager(tmp_path) as again:
        assert again.steps == [0]
