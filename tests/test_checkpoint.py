"""CheckpointManager: commit protocol, retention, integrity fallback, async, lock, disk full, exact resume."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tensorfile
from conftest import ROOT
from tensorfile import CheckpointManager, CheckpointNotFoundError, IntegrityError



def _state(step: int) -> dict:
    return {"w": np.full((4, 4), step, np.float32), "step": step, "nested": {"b": np.arange(step + 1)}}


# ---------------------------------------------------------------- commit and retention


def test_steps_latest_and_restore(tmp_path):
    with CheckpointManager(tmp_path) as m:
        assert m.latest_step is None and m.steps == []
        with pytest.raises(CheckpointNotFoundError):
            m.restore()
        for step in (0, 5, 10):
            assert m.save(step, _state(step))
        assert m.steps == [0, 5, 10] and m.latest_step == 10
        back = m.restore()
        assert back["step"] == 10 and back["w"][0, 0] == 10 and back["nested"]["b"].tolist() == list(range(11))
        assert m.restore(step=5)["step"] == 5
        with pytest.raises(CheckpointNotFoundError, match="step 7"):
            m.restore(step=7)
    assert sorted(os.listdir(tmp_path)) == [".lock", "step_00000000", "step_00000005", "step_00000010"]


def test_save_interval_and_force(tmp_path):
    with CheckpointManager(tmp_path, save_interval_steps=3) as m:
        saved = [m.save(s, _state(s)) for s in range(7)]
        assert saved == [True, False, False, True, False, False, True]
        assert m.save(7, _state(7), force=True) and m.steps == [0, 3, 6, 7]


def _fill(m, steps, losses=None):
    for i, s in enumerate(steps):
        m.save(s, _state(s), metrics={"loss": losses[i]} if losses else None)


def test_retention_max_to_keep(tmp_path):
    with CheckpointManager(tmp_path, max_to_keep=2) as m:
        _fill(m, range(6))
        assert m.steps == [4, 5]


def test_retention_keep_every_n(tmp_path):
    with CheckpointManager(tmp_path, max_to_keep=1, keep_every_n_steps=3) as m:
        _fill(m, range(8))
        assert m.steps == [0, 3, 6, 7]


def test_retention_keep_best_min_and_max(tmp_path):
    losses = [5.0, 1.0, 4.0, 0.5, 3.0, 2.0]
    with CheckpointManager(tmp_path / "min", max_to_keep=1, keep_best=2, best_metric="loss") as m:
        _fill(m, range(6), losses)
        assert m.steps == [1, 3, 5] and m.best_step == 3
    with CheckpointManager(tmp_path / "max", max_to_keep=1, keep_best=1, best_metric="loss", best_mode="max") as m:
        _fill(m, range(6), losses)
        assert m.steps == [0, 5] and m.best_step == 0


def test_retention_combined(tmp_path):
    losses = [9, 8, 0.1, 7, 6, 5, 4, 3, 2, 1]
    with CheckpointManager(tmp_path, max_to_keep=2, keep_every_n_steps=4, keep_best=1, best_metric="loss") as m:
        _fill(m, range(10), losses)
        assert m.steps == [0, 2, 4, 8, 9]


def test_retention_options_checked(tmp_path):
    with pytest.raises(ValueError, match="best_metric"):
        CheckpointManager(tmp_path, keep_best=1)
    with pytest.raises(ValueError, match="best_mode"):
        CheckpointManager(tmp_path, best_mode="lowest")


def test_nothing_deleted_before_the_new_step_commits(tmp_path, monkeypatch):
    from tensorfile.checkpoint import manager as manager_module

    with CheckpointManager(tmp_path, max_to_keep=1) as m:
        m.save(0, _state(0))

        def broken_save(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(manager_module, "_save", broken_save)
        with pytest.raises(OSError, match="No space left"):
            m.save(1, _state(1))
        assert m.steps == [0] and m.restore()["step"] == 0
    assert sorted(os.listdir(tmp_path)) == [".lock", "step_00000000"]


def test_leftover_temporaries_ignored_and_cleaned(tmp_path):
    with CheckpointManager(tmp_path) as m:
        m.save(1, _state(1))
    (tmp_path / ".tmp-step_00000002-dead").mkdir()
    (tmp_path / ".tmp-step_00000002-dead" / "state.tensorfile").write_bytes(b"half")
    with CheckpointManager(tmp_path) as m:
        assert m.steps == [1]
        assert not any(p.startswith(".tmp-") for p in os.listdir(tmp_path))


# ---------------------------------------------------------------- integrity


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[-3] ^= 0x40
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_corrupt_latest_step_falls_back_with_a_warning(tmp_path, how):
    with CheckpointManager(tmp_path) as m:
        m.save(1, _state(1))
        m.save(2, _state(2))
        _damage(tmp_path / "step_00000002" / "state.tensorfile", how)
        with pytest.warns(UserWarning, match="checkpoint step 2 is corrupt"):
            assert m.restore()["step"] == 1
        with pytest.raises(IntegrityError, match="step 2|step_00000002"):
            m.restore(step=2)


def test_missing_state_file_counts_as_corrupt(tmp_path):
    with CheckpointManager(tmp_path) as m:
        m.save(1, _state(1))
        m.save(2, _state(2))
        os.unlink(tmp_path / "step_00000002" / "state.tensorfile")
        with pytest.warns(UserWarning, match="step 2"):
            assert m.restore()["step"] == 1


# ---------------------------------------------------------------- async


def test_async_snapshot_isolation(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(2, 2)
    array = np.zeros(3)
    with CheckpointManager(tmp_path, async_save=True) as m:
        with torch.no_grad():
            net.weight.fill_(1.0)
        m.save(0, {"model": net, "a": array})
        with torch.no_grad():
            net.weight.fill_(2.0)  # after save() returned: must not leak into step 0
        array[:] = 7
        m.wait()
        back = m.restore(step=0)
        assert back["model"]["weight"].tolist() == [[1.0, 1.0], [1.0, 1.0]] and back["a"].tolist() == [0, 0, 0]


def test_async_error_raised_at_next_save_wait_or_close(tmp_path, monkeypatch):
    from tensorfile.checkpoint import manager as manager_module

    def broken_save(*args, **kwargs):
        raise OSError(5, "Input/output error")

    m = CheckpointManager(tmp_path, async_save=True)
    m.save(0, _state(0))
    m.wait()
    monkeypatch.setattr(manager_module, "_save", broken_save)
    m.save(1, _state(1))
    with pytest.raises(OSError, match="Input/output error"):
        m.wait()
    m.save(2, _state(2))
    with pytest.raises(OSError, match="Input/output error"):
        m.save(3, _state(3))
    m.save(4, _state(4))
    with pytest.raises(OSError, match="Input/output error"):
        m.close()
    monkeypatch.undo()
    with CheckpointManager(tmp_path) as again:
        assert again.steps == [0]


# ---------------------------------------------------------------- lock and disk full


def test_two_processes_one_folder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import tensorfile, time; m = tensorfile.CheckpointManager({str(tmp_path)!r}); "
         "print('holding', flush=True); time.sleep(30)"],  # fmt: skip
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(tensorfile.CheckpointLockedError, match="another CheckpointManager"):
            CheckpointManager(tmp_path)
        start = time.monotonic()
        with pytest.raises(tensorfile.CheckpointLockedError):
            CheckpointManager(tmp_path, lock_timeout=0.5)
        assert time.monotonic() - start >= 0.5
    finally:
        holder.kill()
        holder.wait()
    with CheckpointManager(tmp_path, lock_timeout=5) as m:  # the lock dies with its process
        m.save(0, _state(0))


def test_disk_full_keeps_previous_steps(tmp_path):
    with CheckpointManager(tmp_path) as m:
        m.save(0, _state(0))
    script = textwrap.dedent(
        f"""
        import resource, signal, numpy as np, tensorfile
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        with tensorfile.CheckpointManager({str(tmp_path)!r}, max_to_keep=1) as m:
            try:
                m.save(1, {{"big": np.ones(1 << 20)}})
            except OSError as exc:
                print("OSError", exc.errno)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("OSError"), out.stderr
    with CheckpointManager(tmp_path) as m:
        assert m.steps == [0] and m.restore()["step"] == 0
    assert sorted(os.listdir(tmp_path)) == [".lock", "step_00000000"]


# ---------------------------------------------------------------- exact resume


def test_rng_state_round_trip(tmp_path):
    import random

    torch = pytest.importorskip("torch")
    gen = np.random.default_rng(3)
    state = tensorfile.rng_state(generators={"data": gen})
    tensorfile.save(state, tmp_path / "rng")
    expected = (random.random(), np.random.rand(), gen.random(), torch.rand(1).item())
    random.random(), np.random.rand(), gen.random(), torch.rand(1)
    tensorfile.set_rng_state(tensorfile.load(tmp_path / "rng"), generators={"data": gen})
    assert (random.random(), np.random.rand(), gen.random(), torch.rand(1).item()) == expected


def test_keras_fit_resumes_bit_identical(tmp_path):
    pytest.importorskip("sklearn")
    script = str(ROOT / "examples" / "train_with_checkpoints.py")

    def run(folder, epochs):
        out = subprocess.run([sys.executable, script, "keras", str(folder), "--epochs", str(epochs)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]

    run(tmp_path / "straight", 4)
    run(tmp_path / "resumed", 2)  # interrupted after two epochs...
    run(tmp_path / "resumed", 4)  # ...and resumed: epochs 2 and 3 only
    a = tensorfile.load(tmp_path / "straight" / "final.tensorfile", framework="numpy")
    b = tensorfile.load(tmp_path / "resumed" / "final.tensorfile", framework="numpy")
    assert list(a) == list(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_jax_flax_params_optax_state_and_key(tmp_path):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    nnx = pytest.importorskip("flax.nnx")
    import jax.numpy as jnp

    class Net(nnx.Module):
        def __init__(self, seed):
            self.lin = nnx.Linear(3, 2, rngs=nnx.Rngs(seed))

        def __call__(self, x):
            return self.lin(x)

    def loss_fn(model, x):
        return (model(x) ** 2).mean()

    def train(model, tx, opt_state, key, steps):
        for _ in range(steps):
            key, sub = jax.random.split(key)
            x = jax.random.normal(sub, (4, 3))
            grads = nnx.grad(loss_fn)(model, x)
            params = nnx.state(model, nnx.Param)
            updates, opt_state = tx.update(grads, opt_state, params)
            nnx.update(model, optax.apply_updates(params, updates))
        return opt_state, key

    tx = optax.adam(1e-2)
    straight = Net(0)
    s_opt, s_key = train(straight, tx, tx.init(nnx.state(straight, nnx.Param)), jax.random.PRNGKey(0), 6)

    model = Net(0)
    opt_state, key = train(model, tx, tx.init(nnx.state(model, nnx.Param)), jax.random.PRNGKey(0), 3)
    with CheckpointManager(tmp_path) as m:
        m.save(3, {"model": model, "opt_state": opt_state, "key": key})
    fresh = Net(7)
    template = tx.init(nnx.state(fresh, nnx.Param))
    with CheckpointManager(tmp_path) as m:
        back = m.restore(state={"model": fresh, "opt_state": template})
    opt_state, key = train(fresh, tx, back["opt_state"], jnp.asarray(back["key"]), 3)
    assert np.array_equal(np.asarray(fresh.lin.kernel.get_value()), np.asarray(straight.lin.kernel.get_value()))
    assert np.array_equal(np.asarray(key), np.asarray(s_key))


def test_replacing_a_step_that_fails_keeps_the_old_one(tmp_path, monkeypatch):
    with CheckpointManager(tmp_path) as m:
        m.save(1, {"x": 1})
        real = os.rename

        def failing(a, b):
            if os.path.basename(str(a)).startswith(".tmp-step"):
                raise KeyboardInterrupt
            return real(a, b)

        monkeypatch.setattr(os, "rename", failing)
        with pytest.raises(KeyboardInterrupt):
            m.save(1, {"x": 111})
        monkeypatch.undo()
        assert m.steps == [1] and m.restore()["x"] == 1
    # a crash between the two renames: the old step, moved aside, is put back on the next start
    os.rename(tmp_path / "step_00000001", tmp_path / ".tmp-old-step_00000001-dead")
    with CheckpointManager(tmp_path) as m:
        assert m.steps == [1] and m.restore()["x"] == 1


def test_misuse_gets_clear_errors(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(2, 2)
    m = CheckpointManager(tmp_path)
    with pytest.raises(ValueError, match="step must be an int"):
        m.save(1.5, {"x": 1})
    with pytest.raises(ValueError, match="step must be an int"):
        m.save(True, {"x": 1})
    assert m.save(np.int64(3), {"net": net, "opt": type("MySGD", (torch.optim.SGD,), {})(net.parameters(), lr=0.1)})
    with pytest.raises(KeyError, match="no 'model'"):
        m.restore(state={"model": net})
    with pytest.raises(ValueError, match="'net' was saved as torch.module"):
        m.restore(state={"net": torch.optim.SGD(net.parameters(), lr=0.1)})
    with pytest.raises(tensorfile.UnsupportedTypeError, match=r"obj\['a'\]\[1\]"):
        m.save(4, {"a": [1, object()]})
    m.close()
    with pytest.raises(RuntimeError, match="closed"):
        m.save(5, {"x": 1})


def test_async_unsupported_value_fails_at_save(tmp_path):
    with CheckpointManager(tmp_path, async_save=True) as m:
        with pytest.raises(tensorfile.UnsupportedTypeError, match=r"state\['a'\]\[1\]"):
            m.save(0, {"a": [1, object()]})


def test_only_eight_digit_step_folders_count(tmp_path):
    (tmp_path / "step_5").mkdir()
    with CheckpointManager(tmp_path, max_to_keep=2) as m:
        m.save(1, {"x": 1})
        assert m.steps == [1]


def test_keras_fit_resumes_in_mid_epoch_bit_identical(tmp_path):
    """A run killed after 13 batches (in the middle of epoch 1 of 4; 5 batches an epoch, dropout, Adam), resumed
    with CheckpointCallback.resume + checkpoint.keras.batches, ends with the uninterrupted run's weights, bit for
    bit; the checkpoint holds the optimizer's iterations and Dropout's seed generator state."""
    keras = pytest.importorskip("keras")
    from tensorfile.checkpoint.keras import CheckpointCallback, batches, steps_per_epoch

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((150, 8)).astype(np.float32), rng.integers(0, 3, 150)
    per_epoch = steps_per_epoch(len(X), 32)

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.layers.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dropout(0.3), keras.layers.Dense(3)])  # fmt: skip
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
        return model

    class Kill(Exception):
        pass

    class Killed(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 13:
                raise Kill  # the process dies after batch 13: nothing more is saved

    def fit(folder, extra=()):
        model = build()
        with CheckpointManager(folder, max_to_keep=2) as m:
            callback = CheckpointCallback(m, every_n_batches=4)
            done = callback.resume(model)
            model.fit(batches(X, y, 32, seed=1, start=done), steps_per_epoch=per_epoch, epochs=4,
                      initial_epoch=done // per_epoch, shuffle=False, verbose=0, callbacks=[callback, *extra])  # fmt: skip
        return model, done

    straight, _ = fit(tmp_path / "straight")
    with pytest.raises(Kill):
        fit(tmp_path / "resumed", [Killed()])  # batches 13 trained, the last checkpoint at 12
    names = set(tensorfile.open(tmp_path / "resumed" / "step_00000012" / "state.tensorfile").keys())
    assert any("_seed_generators.0.state" in n for n in names) and any(n.startswith("optimizer.") for n in names)
    resumed, done = fit(tmp_path / "resumed")
    assert done == 12 and done % per_epoch  # resumed inside an epoch
    assert int(resumed.optimizer.iterations.numpy()) == 4 * per_epoch
    for a, b in zip(straight.weights, resumed.weights):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), a.path
