"""The ring of reusable host buffers behind loads onto a GPU (format/pipeline.py), checked with a fake device.

The fake device copies a slot's bytes *later*, on its own thread, as a CUDA copy on a stream does: a slot
refilled before its fence was waited for would hand the device the next piece's bytes, and these tests
would see them. The CUDA side itself runs in tests_gpu/ (`make test-gpu`).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tensorfile.format.checksums import checksum
from tensorfile.format.pipeline import stream_pieces


def _data(sizes: list[int]) -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    return {f"t{i}": rng.integers(0, 256, n, dtype=np.uint8).tobytes() for i, n in enumerate(sizes)}


class FakeDevice:
    """Copies a piece ``delay`` seconds after it is sent, on its own thread; ``fence.wait()`` waits for it."""

    def __init__(self, data: dict[str, bytes], delay: float = 0.002) -> None:
        self.out = {name: bytearray(len(b)) for name, b in data.items()}
        self.delay = delay
        self.copies: list[tuple[float, float]] = []  # (start, end) of each copy
        self.pending = 0
        self.most_pending = 0
        self.lock = threading.Lock()

    def send(self, piece):
        done = threading.Event()
        with self.lock:
            self.pending += 1
            self.most_pending = max(self.most_pending, self.pending)

        def copy():
            start = time.perf_counter()
            time.sleep(self.delay)
            self.out[piece.item][piece.start : piece.start + len(piece.data)] = piece.data.tobytes()  # read late
            with self.lock:
                self.pending -= 1
                self.copies.append((start, time.perf_counter()))
            done.set()

        threading.Thread(target=copy, daemon=True).start()
        return type("Fence", (), {"wait": lambda self: done.wait()})()


def _reader(data: dict[str, bytes], log: list | None = None, delay: float = 0.0):
    def read(item, start, out):
        begin = time.perf_counter()
        if delay:
            time.sleep(delay)
        out[:] = np.frombuffer(data[item], np.uint8, len(out), start)
        if log is not None:
            log.append((begin, time.perf_counter()))

    return read


@pytest.mark.parametrize("readers", [1, 2])
def test_every_byte_arrives_through_reused_slots_never_overwritten_early(readers):
    sizes = [0, 1, 999, 1000, 1001, 3005, 7, 2500]
    data = _data(sizes)
    device = FakeDevice(data)
    checks: dict[str, str | None] = {}
    starts: dict[str, list[int]] = {}
    allocated: list[int] = []

    def send(piece):
        starts.setdefault(piece.item, []).append(piece.start)
        if piece.last:
            checks[piece.item] = piece.checksum
        return device.send(piece)

    def allocate(n):
        allocated.append(n)
        return np.zeros(n, np.uint8)

    stats = stream_pieces([(k, len(v)) for k, v in data.items()], _reader(data), send, slots=3, chunk=1000,
                          readers=readers, hash=True, allocate=allocate)  # fmt: skip
    assert {k: bytes(v) for k, v in device.out.items()} == data  # every piece copied after its slot was safe
    assert checks == {k: checksum(v) for k, v in data.items()}
    assert {k: s for k, s in starts.items()} == {k: list(range(0, max(len(v), 1), 1000)) for k, v in data.items()}
    assert stats.pieces == sum(max(1, -(-n // 1000)) for n in sizes) == 14
    assert allocated == [1000] * 3 and stats.slots == 3 and stats.allocated_bytes == 3000  # bounded, then reused
    assert device.pending == 0 and device.most_pending <= 3  # every fence waited for before returning


def test_slots_are_sized_by_the_largest_tensor_when_smaller_than_a_chunk():
    data = _data([10, 300, 40])
    stats = stream_pieces([(k, len(v)) for k, v in data.items()], _reader(data), lambda p: None, slots=4,
                          chunk=1 << 20)  # fmt: skip
    assert stats.slot_bytes == 300 and stats.allocated_bytes <= 4 * 300 and stats.bytes == 350


def test_the_read_of_one_piece_overlaps_the_copy_of_the_one_before():
    data = _data([4000])
    reads: list[tuple[float, float]] = []
    device = FakeDevice(data, delay=0.03)
    began = time.perf_counter()
    stream_pieces([("t0", 4000)], _reader(data, reads, delay=0.03), device.send, slots=2, chunk=1000)
    took = time.perf_counter() - began
    assert bytes(device.out["t0"]) == data["t0"]
    overlapping = [(r, c) for r in reads for c in device.copies if r[0] < c[1] and c[0] < r[1]]
    assert overlapping, (reads, device.copies)
    assert took < 0.9 * (sum(e - s for s, e in reads) + sum(e - s for s, e in device.copies))


def test_a_failed_read_stops_everything_and_is_raised():
    data = _data([1000] * 20)
    sent: list[str] = []

    def read(item, start, out):
        if item == "t5":
            raise OSError("disk gone")
        out[:] = 1

    def send(piece):
        sent.append(piece.item)

    before = {t.name for t in threading.enumerate()}
    with pytest.raises(OSError, match="disk gone"):
        stream_pieces([(k, len(v)) for k, v in data.items()], read, send, slots=2, chunk=1000)
    assert "t5" not in sent and len(sent) <= 5
    assert not [t for t in threading.enumerate() if t.name.startswith("tensorfile-ring") and t.name not in before]


def test_a_failed_copy_stops_the_readers_and_is_raised():
    data = _data([1000] * 50)
    reads: list[tuple[float, float]] = []

    def send(piece):
        if piece.item == "t2":
            raise RuntimeError("device lost")

    with pytest.raises(RuntimeError, match="device lost"):
        stream_pieces([(k, len(v)) for k, v in data.items()], _reader(data, reads), send, slots=2, chunk=1000)
    assert len(reads) <= 3 + 2  # the readers stopped: at most the slots' worth read past the failure
    assert not [t for t in threading.enumerate() if t.name.startswith("tensorfile-ring")]


def test_a_failed_fence_is_raised_once_the_ring_drained():
    data = _data([100, 100])

    class Broken:
        def wait(self):
            raise RuntimeError("copy failed")

    with pytest.raises(RuntimeError, match="copy failed"):
        stream_pieces([(k, len(v)) for k, v in data.items()], _reader(data), lambda p: Broken(), slots=4, chunk=1000)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        stream_pieces([], _reader({}), lambda p: None, slots=0)
    assert stream_pieces([], _reader({}), lambda p: None).pieces == 0
