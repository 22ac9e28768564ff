"""The kernel's write tracking (tensorfile.checkpoint.written) and its use by incremental checkpoints: a tensor no
one wrote is shared without a hash, every kind of write behind torch's version counter is still seen (so every
step restores bit-identically), and where the kernel cannot track (a forked child, shared or small tensors,
tracking turned off) every tensor is hashed as before.

Every test checks the values restored, whatever the kernel offers; the counts of tensors shared without a hash
are checked against what ``written.tracker()`` says this kernel does (Linux 6.7+ with userfaultfd: tracked).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from tensorfile import CheckpointManager
from tensorfile.checkpoint import written

torch = pytest.importorskip("torch")

KERNEL = written.tracker() is not None


def _model(seed: int = 0):
    """A frozen backbone of 4 Linear(128, 128) (64 KiB weights: tracked) and a trained head (small: hashed)."""
    torch.manual_seed(seed)
    backbone = torch.nn.Sequential(*[torch.nn.Linear(128, 128) for _ in range(4)]).requires_grad_(False)
    head = torch.nn.Linear(128, 2)
    model = torch.nn.Sequential(backbone, head)
    return model, torch.optim.SGD(head.parameters(), lr=0.1)


def _train(model, opt) -> None:
    model(torch.randn(4, 128)).square().mean().backward()
    opt.step()
    opt.zero_grad()


def _check(m, step, model) -> None:
    fresh, _ = _model(seed=99)
    m.restore(step, {"model": fresh})
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), (step, name)


def _buffer(t):
    """A NumPy view of a tensor's memory (writes to it are invisible to torch's version counter)."""
    return t.detach().numpy()


WRITES = {
    ".data.add_()": lambda t: t.data.add_(1.0),
    "a NumPy view": lambda t: _buffer(t).__setitem__((5, 7), 42.0),
    "the untyped storage": lambda t: t.untyped_storage().copy_(torch.full_like(t, 3.0).untyped_storage()),
    "ctypes.memmove": lambda t: ctypes.memmove(t.data_ptr() + 4 * 1000, (ctypes.c_float * 1)(7.5), 4),
    "a read() into its memory": lambda t: _readinto(t),
}


def _readinto(t) -> None:
    r, w = os.pipe()
    os.write(w, np.full(8, 9.0, np.float32).tobytes())
    os.close(w)
    os.readv(r, [memoryview(_buffer(t).reshape(-1)[100:108]).cast("B")])
    os.close(r)


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_unwritten_tensors_are_shared_without_a_hash_and_every_step_restores(tmp_path, async_save):
    model, opt = _model()
    with CheckpointManager(tmp_path, incremental=True, async_save=async_save) as m:
        for step in range(5):
            _train(model, opt)
            m.save(step, {"model": model})
            m.wait()
            if step >= 2:  # step 1 is the first whose base the tracking had already seen
                assert m._incremental.unhashed == (4 if KERNEL else 0)
            _check(m, step, model)


@pytest.mark.parametrize("how", list(WRITES))
@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_a_write_behind_the_version_counter_is_seen_whatever_made_it(tmp_path, async_save, how):
    model, opt = _model()
    frozen = model[0][1].weight
    with CheckpointManager(tmp_path, incremental=True, async_save=async_save) as m:
        for step in range(3):
            _train(model, opt)
            m.save(step, {"model": model})
            m.wait()
        version = frozen._version
        WRITES[how](frozen)
        assert frozen._version == version  # torch's counter did not see it
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m.save(3, {"model": model})
            m.wait()
        if KERNEL:  # seen in the stall: copied and written at once, the step committed
            assert m.steps[-1] == 3 and not [w for w in caught if issubclass(w.category, RuntimeWarning)]
        elif async_save:  # seen by the background hash: that step is not committed, the next one is
            assert m.steps[-1] == 2
            m.save(4, {"model": model})
            m.wait()
        assert m._incremental.written_bytes >= frozen.numel() * 4
        _check(m, m.steps[-1], model)


def test_two_tracked_ranges_sharing_a_page_both_see_a_write_to_it():
    tracker = written.tracker()
    if tracker is None:
        assert written.tracker() is None  # the fallback: callers hash every tensor
        return
    page = os.sysconf("SC_PAGE_SIZE")
    buf = np.zeros(8 * page, np.uint8)
    base = buf.ctypes.data
    start = base - base % page + page  # inside buf, page-aligned
    first = tracker.track(start, 2 * page + 100)  # its last page is the second one's first
    second = tracker.track(start + 2 * page + 200, page)
    try:
        tracker.poll()
        g1, g2 = tracker.generation(first), tracker.generation(second)
        offset = start - base + 2 * page + 50  # in the shared page, in the first range's bytes
        buf[offset] = 1
        tracker.poll()
        h1, h2 = tracker.generation(first), tracker.generation(second)
        assert h1 not in (None, g1) and h2 not in (None, g2)  # both moved
        tracker.poll()
        assert (tracker.generation(first), tracker.generation(second)) == (h1, h2)  # no write since
        buf[start - base + 3 * page + 10] = 1  # the second range's own page
        tracker.poll()
        assert tracker.generation(first) == h1 and tracker.generation(second) not in (None, h2)
    finally:
        tracker.release(first)
        tracker.release(second)
    assert tracker.generation(first) is None and tracker.generation(second) is None
    buf[:] = 2  # unregistered: plain memory again


def test_tracking_a_range_that_shares_a_page_does_not_swallow_a_write_to_it():
    """A new range is protected by a scan that reports, to the ranges already tracked, what was written in the
    pages they share since the last poll (protecting them blindly would lose that write)."""
    tracker = written.tracker()
    if tracker is None:
        return
    page = os.sysconf("SC_PAGE_SIZE")
    buf = np.zeros(8 * page, np.uint8)
    base = buf.ctypes.data
    start = base - base % page + page
    first = tracker.track(start, 2 * page)
    try:
        tracker.poll()
        g1 = tracker.generation(first)
        buf[start - base + page + 5] = 1  # the page the next range will share
        second = tracker.track(start + page, 2 * page)
        try:
            tracker.poll()
            assert tracker.generation(first) not in (None, g1)
        finally:
            tracker.release(second)
    finally:
        tracker.release(first)


def test_a_range_whose_memory_is_mapped_anew_is_dropped_and_never_repeats_a_generation():
    import mmap

    tracker = written.tracker()
    if tracker is None:
        return
    size = 1 << 20
    first = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = (ctypes.c_char * size).from_buffer(first)
    address = ctypes.addressof(view)
    key = tracker.track(address, size)
    tracker.poll()
    old = tracker.generation(key)
    del view
    first.close()  # unmapped; a new map may take the same addresses, unregistered
    second = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = (ctypes.c_char * size).from_buffer(second)
    view[7] = b"x"  # a write the kernel cannot report (if the same addresses: not registered)
    tracker.poll()  # does not raise: the range is dropped
    if ctypes.addressof(view) == address:
        assert tracker.generation(key) is None
    again = tracker.track(ctypes.addressof(view), size)
    try:
        assert tracker.generation(again) != old  # a consumer's old mark can never match
        tracker.poll()
        stable = tracker.generation(again)
        view[9] = b"y"
        tracker.poll()
        assert tracker.generation(again) not in (None, stable)
    finally:
        tracker.release(again)
        del view
        second.close()


def test_shared_small_and_trained_tensors_are_not_tracked(tmp_path):
    shared = torch.randn(256, 256).share_memory_()  # another process may write it through its own map
    small = torch.randn(8, 8)
    plain = torch.randn(256, 256)
    moving = torch.randn(256, 256)  # trained: its counter moves at every step (tracking it would only cost faults)
    with CheckpointManager(tmp_path, incremental=True) as m:
        for step in range(3):
            moving.add_(1.0)
            m.save(step, {"shared": shared, "small": small, "plain": plain, "moving": moving})
        assert m._incremental.unhashed == (1 if KERNEL else 0)  # plain only
        assert set(m._incremental._tracked) == ({"plain"} if KERNEL else set())
        tracker = written.tracker()
        where = m._incremental._tracked["plain"][1] if KERNEL else None
        shared.data.add_(1.0)  # behind the counter, in shared memory: found by its hash
        m.save(3, {"shared": shared, "small": small, "plain": plain, "moving": moving})
        back = m.restore(3)
        assert torch.equal(back["shared"], shared) and torch.equal(back["moving"], moving)
    if KERNEL:  # closing the manager stops tracking its tensors
        assert tracker.generation(where) is None and m._incremental._tracked == {}


def test_a_forked_child_does_not_track_and_hashes_everything(tmp_path):
    model, opt = _model()
    with CheckpointManager(tmp_path / "parent", incremental=True) as m:
        m.save(0, {"model": model})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copies of the parent's ranges are not protected
        try:
            ok = written.tracker() is None
            with CheckpointManager(tmp_path / "child", incremental=True) as c:
                c.save(0, {"model": model})
                model[0][0].weight.data.add_(1.0)
                c.save(1, {"model": model})
                ok = ok and c._incremental.unhashed == 0
                back = c.restore(1)["model"]
                ok = ok and all(torch.equal(v, model.state_dict()[k]) for k, v in back.items())
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)


def test_tracking_turned_off_by_the_environment():
    code = ("import tensorfile.checkpoint.written as w; import sys; sys.exit(0 if w.tracker() is None else 1)")
    env = {**os.environ, "TENSORFILE_WRITE_TRACKING": "0"}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_a_replaced_tensor_of_the_same_shape_is_not_taken_for_the_old_one(tmp_path):
    """A parameter replaced by another tensor (other memory, or a view at another offset) is hashed and written."""
    model, opt = _model()
    with CheckpointManager(tmp_path, incremental=True) as m:
        for step in range(3):
            m.save(step, {"model": model})
        layer = model[0][2]
        layer.weight = torch.nn.Parameter(layer.weight.detach() + 1.0, requires_grad=False)
        m.save(3, {"model": model})
        _check(m, 3, model)
        storage = torch.randn(128 * 128 + 1)
        layer.weight = torch.nn.Parameter(storage[:-1].view(128, 128), requires_grad=False)
        m.save(4, {"model": model})
        layer.weight = torch.nn.Parameter(storage[1:].view(128, 128), requires_grad=False)  # same pages, shifted
        m.save(5, {"model": model})
        _check(m, 5, model)


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_a_lazy_neg_view_written_behind_its_counter_is_read_afresh(tmp_path, async_save):
    """``c.conj().imag`` is stored from a copy (its neg bit): neither that copy's pages are tracked nor is the copy
    of an earlier save reused, so a change to ``c`` behind the counter reaches the step."""
    c = torch.randn(128, 128, dtype=torch.complex64)  # 128 KiB
    view = c.conj().imag
    assert view.is_neg()
    with CheckpointManager(tmp_path, incremental=True, async_save=async_save) as m:
        for step in range(3):
            m.save(step, {"v": view})
            m.wait()
        version = view._version
        c.data.add_(1j)  # .data: a counter of its own
        assert view._version == version
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # async without tracking: that step is skipped
            m.save(3, {"v": view})
            m.wait()
            m.save(4, {"v": view})
            m.wait()
        assert torch.equal(m.restore(m.steps[-1])["v"], view.resolve_neg())
        assert "v" not in m._incremental._tracked


def test_memory_another_map_can_write_is_never_tracked(tmp_path):
    """A tensor over a MAP_SHARED map (Python's default ``mmap.mmap(-1, n)``) is written by a forked child through
    its own page tables: the kernel cannot report that to us, so such memory is hashed, never tracked."""
    import mmap

    shared = mmap.mmap(-1, 1 << 20)  # MAP_SHARED | MAP_ANONYMOUS
    t = torch.frombuffer(shared, dtype=torch.float32)
    t.fill_(1.0)
    assert not t.is_shared()  # torch does not know
    with CheckpointManager(tmp_path, incremental=True) as m:
        for step in range(4):
            m.save(step, {"w": t})
            expected = t.clone()
            assert torch.equal(m.restore(step)["w"], expected)
            pid = os.fork()
            if pid == 0:
                np.frombuffer(shared, np.float32)[:] = step + 2
                os._exit(0)
            os.waitpid(pid, 0)
        m.save(4, {"w": t})
        assert torch.equal(m.restore(4)["w"], torch.full_like(t, 5.0)) and m._incremental.unhashed == 0
        assert "w" not in m._incremental._tracked


def test_a_scan_that_fails_part_way_moves_the_ranges_it_shares_pages_with(tmp_path):
    """Two tracked views of one map share pages; a write lands in a shared page, then part of the first view's
    pages are mapped anew: its scan protects the shared page, then fails. The second view must not be taken
    for unwritten."""
    import mmap

    page = os.sysconf("SC_PAGE_SIZE")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    memory = mmap.mmap(-1, 64 * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = torch.frombuffer(memory, dtype=torch.float32)
    whole.fill_(1.0)
    per_page = page // 4
    state = {"A": whole[: 48 * per_page], "B": whole[16 * per_page : 40 * per_page]}
    with CheckpointManager(tmp_path, incremental=True) as m:
        for step in range(3):
            m.save(step, state)
        _buffer(state["B"])[4 * per_page] = 42.0  # page 20, in A and in B, behind the counter
        MAP_FIXED = 0x10
        at = whole.data_ptr() + 44 * page  # pages 44-47: in A only
        assert libc.mmap(at, 4 * page, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED, -1, 0) == at
        expected = {k: v.clone() for k, v in state.items()}
        m.save(3, state)
        back = m.restore(3)
        assert torch.equal(back["B"], expected["B"]) and torch.equal(back["A"], expected["A"])
