"""save() is atomic: a crash or an error mid-save never damages the file already there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tensorfile
from tensorfile.format import writer

CHILD = textwrap.dedent(
    """
    import sys, numpy as np, tensorfile
    path = sys.argv[1]
    big = {"w%d" % i: np.full((1024, 1024), i, dtype=np.float64) for i in range(48)}  # 384 MiB
    while True:
        tensorfile.save(big, path)
    """
)


def _old(path):
    tensorfile.save({"old": np.arange(1000.0)}, path)
    return path.read_bytes()


def _temps(folder, name):
    return [p for p in os.listdir(folder) if p.startswith(f".{name}.tmp-")]


@pytest.mark.parametrize("kill_after_bytes", [0, 1 << 20, 64 << 20, 200 << 20])
def test_sigkill_mid_save_leaves_old_file_intact(tmp_path, kill_after_bytes):
    target = tmp_path / "model.params"
    old = _old(target)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            temps = _temps(tmp_path, target.name)
            sizes = [os.stat(tmp_path / t).st_size for t in temps if (tmp_path / t).exists()]
            if sizes and max(sizes) >= kill_after_bytes:
                break
            time.sleep(0.001)
        else:
            pytest.fail("the child never started writing")
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert target.read_bytes() == old, "the file at the target changed"
    back = tensorfile.load(target)
    assert back["old"].tolist() == list(np.arange(1000.0))
    # at most a hidden stray temporary is left; nothing else carries a visible name
    assert [n for n in os.listdir(tmp_path) if not n.startswith(".")] == ["model.params"]
    assert set(os.listdir(tmp_path)) - {"model.params"} <= set(_temps(tmp_path, "model.params"))


def test_error_mid_write_removes_temporary_and_keeps_old(tmp_path, monkeypatch):
    target = tmp_path / "x"
    old = _old(target)
    calls = []

    def failing_write_all(f, data):
        calls.append(len(data))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        f.write(data)

    monkeypatch.setattr(writer, "_write_all", failing_write_all)
    with pytest.raises(OSError, match="No space left"):
        tensorfile.save({"a": np.ones(10), "b": np.zeros(10)}, target)
    assert target.read_bytes() == old
    assert os.listdir(tmp_path) == ["x"]


def test_disk_full_in_subprocess_keeps_old_file(tmp_path):
    target = tmp_path / "x"
    old = _old(target)
    script = textwrap.dedent(
        f"""
        import resource, signal, sys, numpy as np, tensorfile
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            tensorfile.save({{"big": np.ones(1 << 20)}}, {str(target)!r})
        except OSError as exc:
            print("OSError", exc.errno)
            sys.exit(0)
        sys.exit(3)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OSError")
    assert target.read_bytes() == old
    assert os.listdir(tmp_path) == ["x"]


def test_missing_folder_is_an_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        tensorfile.save(np.ones(2), tmp_path / "no" / "such" / "file")


def test_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        tensorfile.save(np.ones(2), tmp_path / "m")
    finally:
        os.umask(old)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o644


def test_any_name_and_pathlike(tmp_path):
    for name in ("x-file", "mydict", "mlp.params", "weird name.ü", "noext"):
        tensorfile.save({"a": np.arange(3)}, tmp_path / name)
        assert tensorfile.load(str(tmp_path / name))["a"].tolist() == [0, 1, 2]


def test_long_names_symlinks_modes_and_special_targets(tmp_path):
    long_name = "n" * 250
    tensorfile.save(np.ones(2), tmp_path / long_name)
    assert tensorfile.load(tmp_path / long_name).tolist() == [1.0, 1.0]
    # through a symlink: the file it points to is replaced, the link stays
    real = tmp_path / "real"
    tensorfile.save(np.zeros(1), real)
    os.chmod(real, 0o600)
    (tmp_path / "link").symlink_to(real)
    tensorfile.save(np.arange(3), tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and tensorfile.load(real).tolist() == [0, 1, 2]
    assert real.stat().st_mode & 0o777 == 0o600
    # a FIFO (or a device) is not replaced
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FileExistsError, match="not a regular file"):
        tensorfile.save(np.ones(1), tmp_path / "fifo")
    with pytest.raises(IsADirectoryError):
        tensorfile.save(np.ones(1), tmp_path)
    with pytest.raises(IsADirectoryError):
        tensorfile.save(np.ones(1), str(tmp_path / "x") + os.sep)
    assert sorted(os.listdir(tmp_path)) == sorted([long_name, "real", "link", "fifo"])


# ---------------------------------------------------------------- leftovers of killed writers (issue 11)

_KILLED = """
import os, sys
from tensorfile.atomic import atomic_write
with atomic_write(sys.argv[1]) as f:
    f.write(b"half a file")
    os.kill(os.getpid(), 9)
"""


def _age(path, seconds=3600):
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_a_later_save_removes_what_killed_writers_left_and_only_that(tmp_path):
    import fcntl

    import numpy as np

    import tensorfile

    target = tmp_path / "model.tensorfile"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", _KILLED, str(target)], timeout=60)
    dead = sorted(p.name for p in tmp_path.iterdir())
    assert len(dead) == 2 and all(n.startswith(".model.tensorfile.tmp-") for n in dead)
    for name in dead:
        _age(tmp_path / name)
    alive = tmp_path / ".model.tensorfile.tmp-0123456789ab"  # a writer still at work: it holds the lock
    alive.write_bytes(b"in progress")
    _age(alive)
    holder = os.open(alive, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    young = tmp_path / ".model.tensorfile.tmp-ba9876543210"  # just created: its writer may not have locked it yet
    young.write_bytes(b"new")
    other = tmp_path / ".other.tensorfile.tmp-0123456789ab"  # another file's temporary
    other.write_bytes(b"x")
    _age(other)
    odd = tmp_path / ".model.tensorfile.tmp-notours"  # not our name pattern
    odd.write_bytes(b"x")
    _age(odd)
    link = tmp_path / ".model.tensorfile.tmp-aaaaaaaaaaaa"
    os.symlink(other, link)
    try:
        tensorfile.save({"a": np.arange(3)}, target)
    finally:
        os.close(holder)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([alive.name, young.name, other.name, odd.name, link.name, "model.tensorfile"])
    assert other.read_bytes() == b"x"
    np.testing.assert_array_equal(tensorfile.load(target)["a"], np.arange(3))
