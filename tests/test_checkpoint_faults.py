"""CheckpointManager faults people hit (issue 11, first part): NaN metrics, deleting a step, folder names,
a renamed step, exiting without close()."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import tensorfile
from tensorfile import CheckpointManager
from tensorfile.checkpoint import commit as commit_module
from tensorfile.errors import CheckpointNotFoundError, IntegrityError


def _state(step: int) -> dict:
    return {"w": np.full(4, step, np.float32), "step": step}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_is_never_best(tmp_path, bad):
    with CheckpointManager(tmp_path, max_to_keep=1, keep_best=1, best_metric="loss") as m:
        m.save(1, _state(1), metrics={"loss": 0.5})
        m.save(2, _state(2), metrics={"loss": bad})
        m.save(3, _state(3), metrics={"loss": 0.9})
        assert m.best_step == 1
        assert m.steps == [1, 3]  # the true best is kept, the diverged step is not
    with CheckpointManager(tmp_path, best_metric="loss", best_mode="max") as m:
        assert m.best_step == 3


def test_a_step_is_deleted_by_renaming_it_out_first(tmp_path, monkeypatch):
    with CheckpointManager(tmp_path, max_to_keep=1) as m:
        m.save(0, _state(0))
        monkeypatch.setattr(commit_module.shutil, "rmtree", lambda *a, **k: None)  # "killed" after the rename
        m.save(1, _state(1))
        monkeypatch.undo()
        assert m.steps == [1]
    leftovers = [e for e in os.listdir(tmp_path) if e.startswith(".tmp-trash-")]
    assert leftovers  # the half-deleted step is out of the namespace
    with CheckpointManager(tmp_path) as m:
        assert m.steps == [1] and m.restore()["step"] == 1
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".tmp-")]


def test_only_ascii_digits_name_a_step(tmp_path):
    with CheckpointManager(tmp_path) as m:
        m.save(1, _state(1))
    os.mkdir(tmp_path / "step_\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0662")  # Arabic-Indic digits
    with CheckpointManager(tmp_path) as m:
        assert m.steps == [1]


def test_a_renamed_step_is_refused_and_restore_falls_back(tmp_path):
    with CheckpointManager(tmp_path) as m:
        m.save(0, _state(0))
        m.save(1, _state(1))
    os.rename(tmp_path / "step_00000001", tmp_path / "step_00000009")
    with CheckpointManager(tmp_path) as m:
        with pytest.raises(IntegrityError, match="says step 9.*records step 1"):
            m.restore(step=9)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert m.restore()["step"] == 0
        assert any("step 9" in str(w.message) for w in caught)
    os.rename(tmp_path / "step_00000000", tmp_path / "step_00000005")
    with CheckpointManager(tmp_path) as m, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointNotFoundError):
            m.restore()


_NO_CLOSE = """
import sys, numpy as np, tensorfile
m = tensorfile.CheckpointManager(sys.argv[1], async_save=True)
for step in range(3):
    m.save(step, {"w": np.full(1 << 20, step, np.float32), "step": step})
# no close(), no wait(): the script just ends
"""


def test_an_async_save_is_committed_when_the_script_ends_without_close(tmp_path):
    out = subprocess.run([sys.executable, "-c", _NO_CLOSE, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with CheckpointManager(tmp_path) as m:
        assert m.steps == [0, 1, 2]
        assert m.restore()["w"][0] == 2


_FAILS_AT_EXIT = """
import sys, numpy as np, tensorfile
from tensorfile.checkpoint import manager
m = tensorfile.CheckpointManager(sys.argv[1], async_save=True)
def broken(*a, **k):
    raise OSError(28, "No space left on device")
manager._save = broken
m.save(0, {"w": np.ones(3)})
"""


def test_a_failed_save_at_exit_is_reported(tmp_path):
    out = subprocess.run([sys.executable, "-c", _FAILS_AT_EXIT, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert "could not be committed at exit" in out.stderr and "No space left on device" in out.stderr
    with CheckpointManager(tmp_path) as m:
        assert m.steps == []


def test_a_symlinked_lock_is_not_followed_and_its_target_is_untouched(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    os.symlink(victim, folder / ".lock")
    with pytest.raises(tensorfile.CheckpointLockedError, match="symbolic link"):
        CheckpointManager(folder)
    assert victim.read_text() == "do not truncate me"
    os.remove(folder / ".lock")
    os.mkfifo(folder / ".lock")
    with pytest.raises(tensorfile.CheckpointLockedError, match="not a regular file"):
        CheckpointManager(folder)


def test_the_lock_error_names_its_holder(tmp_path):
    import json
    import socket

    with CheckpointManager(tmp_path):
        record = json.loads((tmp_path / ".lock").read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname() and record["since"].endswith("+00:00")
        with pytest.raises(tensorfile.CheckpointLockedError, match=rf"PID {os.getpid()} on host .*, since 20"):
            CheckpointManager(tmp_path)


@pytest.mark.parametrize("kind", ["folder", "torch file", "text", "hostile pickle"])
def test_a_step_file_that_is_not_ours_falls_back_with_a_warning(tmp_path, kind):
    with CheckpointManager(tmp_path) as m:
        m.save(0, _state(0))
        m.save(1, _state(1))
    state = tmp_path / "step_00000001" / "state.tensorfile"
    os.remove(state)
    if kind == "folder":
        state.mkdir()
    elif kind == "torch file":
        torch = pytest.importorskip("torch")
        torch.save({"w": torch.ones(4)}, state)
    elif kind == "text":
        state.write_text("hello")
    else:
        state.write_bytes(b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.")
    with CheckpointManager(tmp_path) as m, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert m.restore()["step"] == 0
        assert any("step 1 is corrupt or incomplete" in str(w.message) or "records step" in str(w.message) for w in caught)
        with pytest.raises(IntegrityError):
            m.restore(step=1)


def test_a_reader_follows_a_trainer_without_a_lock(tmp_path):
    with CheckpointManager(tmp_path, max_to_keep=2) as trainer:
        reader = CheckpointManager(tmp_path, read_only=True)  # beside the trainer: no CheckpointLockedError
        assert reader.latest_step is None
        for step in range(5):
            trainer.save(step, _state(step))
            assert reader.latest_step == step and reader.steps == list(range(max(0, step - 1), step + 1))
            assert reader.restore()["w"][0] == step
        with pytest.raises(PermissionError, match="read-only"):
            reader.save(9, _state(9))
        reader.close()


_TRAINER = """
import sys, time, numpy as np, tensorfile
with tensorfile.CheckpointManager(sys.argv[1], max_to_keep=3, async_save=True) as m:
    for step in range(8):
        m.save(step, {"w": np.full(1 << 18, step, np.float32), "step": step})
        time.sleep(0.15)
"""


def test_a_reader_process_follows_a_training_process(tmp_path):
    import time

    trainer = subprocess.Popen([sys.executable, "-c", _TRAINER, str(tmp_path)])
    seen = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not os.path.isdir(tmp_path):
            time.sleep(0.01)
        reader = CheckpointManager(tmp_path, read_only=True)
        while time.monotonic() < deadline:
            step = reader.latest_step
            if step is not None and step not in seen:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a step deleted by retention while read: the previous one
                    back = reader.restore()
                assert back["w"][0] == back["step"] and float(back["w"][-1]) == back["step"]
                seen[back["step"]] = True
            if trainer.poll() is not None and reader.latest_step == 7:
                break
            time.sleep(0.02)
    finally:
        trainer.wait(timeout=60)
    assert trainer.returncode == 0 and 7 in seen and len(seen) >= 3


def test_a_read_only_manager_writes_nothing(tmp_path, monkeypatch):
    with CheckpointManager(tmp_path) as m:
        m.save(3, _state(3))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    real_open = os.open

    def no_writes(path, flags, *args, **kwargs):  # what a read-only mount would refuse
        if str(path).startswith(str(tmp_path)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_writes)
    with CheckpointManager(tmp_path, read_only=True) as reader:
        assert reader.steps == [3] and reader.restore()["step"] == 3
    monkeypatch.undo()
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
    with pytest.raises(CheckpointNotFoundError, match="no such checkpoint folder"):
        CheckpointManager(tmp_path / "missing", read_only=True)


def test_best_fn_ranks_steps_like_orbax_and_skips_what_it_cannot_score(tmp_path):
    def f1(metrics):
        p, r = metrics["precision"], metrics["recall"]
        return 2 * p * r / (p + r)

    with CheckpointManager(tmp_path, max_to_keep=1, keep_best=1, best_fn=f1, best_mode="max") as m:
        m.save(1, _state(1), metrics={"precision": 0.9, "recall": 0.8})
        m.save(2, _state(2), metrics={"precision": 0.5})  # no recall: KeyError, never best
        m.save(3, _state(3), metrics={"precision": 0.0, "recall": 0.0})  # 0/0: ZeroDivisionError, never best
        m.save(4, _state(4), metrics={"precision": 0.6, "recall": 0.6})
        assert m.best_step == 1 and m.steps == [1, 4]


def test_best_metric_and_best_fn_are_exclusive(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        CheckpointManager(tmp_path, best_metric="loss", best_fn=lambda m: m["loss"])
    with pytest.raises(ValueError, match="best_metric .* or best_fn"):
        CheckpointManager(tmp_path, keep_best=1)


_KILLED_IN_RETENTION = """
import os, signal, sys, numpy as np, tensorfile
from tensorfile.checkpoint import commit
m = tensorfile.CheckpointManager(sys.argv[1], max_to_keep=2)
for step in range(3):
    m.save(step, {"w": np.full(1000, step, np.float32), "parts": [np.full(5, i) for i in range(5)], "step": step})
real = commit.shutil.rmtree
def dies_half_way(path, *a, **k):  # removes one file of the step being deleted, then SIGKILL
    for root, _, names in os.walk(path):
        for name in names:
            os.unlink(os.path.join(root, name))
            os.kill(os.getpid(), signal.SIGKILL)
commit.shutil.rmtree = dies_half_way
m.save(3, {"w": np.full(1000, 3, np.float32), "parts": [np.full(5, i) for i in range(5)], "step": 3})
"""


def test_a_kill_inside_retention_leaves_no_half_step(tmp_path):
    """SIGKILL while retention deletes a step (after one of its files is gone): no step listed is partial,
    restore() gives the newest step bit for bit, and the next manager removes the trash."""
    out = subprocess.run([sys.executable, "-c", _KILLED_IN_RETENTION, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stderr
    assert any(e.startswith(".tmp-trash-") for e in os.listdir(tmp_path))
    with CheckpointManager(tmp_path, read_only=True) as reader:  # a reader sees only whole steps
        assert reader.steps == [2, 3]
    with CheckpointManager(tmp_path, max_to_keep=2) as m:
        assert m.steps == [2, 3]
        for step in m.steps:  # every listed step restores, and verifies
            back = m.restore(step=step)
            assert back["step"] == step and np.array_equal(back["w"], np.full(1000, step, np.float32))
    assert sorted(os.listdir(tmp_path)) == [".lock", "step_00000002", "step_00000003"]


def test_a_read_only_copy_of_the_folder_restores(tmp_path):
    """A downloaded run or a mounted dataset: the folder and its files cannot be written (checked with a
    write attempt, as root ignores permissions), and a reader restores from it."""
    import shutil
    import stat

    with CheckpointManager(tmp_path / "run", max_to_keep=2) as m:
        for step in range(3):
            m.save(step, _state(step))
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "run", copy)
    os.unlink(copy / ".lock")
    for root, dirs, files in os.walk(copy):
        for name in files:
            os.chmod(os.path.join(root, name), stat.S_IRUSR)
        os.chmod(root, stat.S_IRUSR | stat.S_IXUSR)
    try:
        with CheckpointManager(copy, read_only=True) as reader:
            assert reader.steps == [1, 2] and reader.restore()["step"] == 2
            assert np.array_equal(reader.restore(step=1)["w"], np.full(4, 1, np.float32))
        assert sorted(os.listdir(copy)) == ["step_00000001", "step_00000002"]  # nothing written, no .lock
    finally:
        for root, dirs, files in os.walk(copy):
            os.chmod(root, stat.S_IRWXU)
