"""tensorfile.open maps only the bytes around each tensor and reads slices of rows with pread (issue 12, item 3).

Under an address-space limit smaller than the file (``ulimit -v``), mapping the whole
file fails with ENOMEM before one byte is read (safetensors#528).
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys

import numpy as np
import pytest

import tensorfile
from tensorfile.format import ranges
from tensorfile.format.header import build_header

ROWS_BIG, ROWS_HUGE, WIDTH = 96 << 10, 160 << 10, 1024  # float32 rows of 4 KiB: 384 MiB and 640 MiB
KNOWN = np.arange(10 * WIDTH, dtype=np.float32).reshape(10, WIDTH) + 0.5  # rows 10:20 of "big"
SMALL = np.array([1.5, -2.0, 3.25, 4.0], np.float32)


def _sparse_safetensors(path) -> None:
    """A 1 GiB safetensors file that takes a few KiB of disk: zeros except rows 10:20 of "big" and "small"."""
    tensors = [("big", "F32", [ROWS_BIG, WIDTH], ROWS_BIG * WIDTH * 4), ("huge", "F32", [ROWS_HUGE, WIDTH], ROWS_HUGE * WIDTH * 4),
               ("small", "F32", [4], 16)]  # fmt: skip
    head = build_header(tensors, {"format": "np"}, align=8)
    with open(path, "wb") as f:
        f.write(head)
        f.seek(len(head) + 10 * WIDTH * 4)
        f.write(KNOWN.tobytes())
        f.seek(len(head) + tensors[0][3] + tensors[1][3])
        f.write(SMALL.tobytes())


def _sparse_gguf(path) -> None:
    """The same tensors in a GGUF file (ggml dims reversed), zeros but for "small" and rows 10:20 of "big"."""
    gguf = pytest.importorskip("gguf")
    from tensorfile.formats.gguf import read_header

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor_info("big", (ROWS_BIG, WIDTH), np.dtype(np.float32), ROWS_BIG * WIDTH * 4)
    w.add_tensor_info("huge", (ROWS_HUGE, WIDTH), np.dtype(np.float32), ROWS_HUGE * WIDTH * 4)
    w.add_tensor_info("small", (4,), np.dtype(np.float32), 16)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_ti_data_to_file()
    w.close()
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) + (ROWS_BIG + ROWS_HUGE) * WIDTH * 4 + 256)
    tensors = read_header(str(path)).tensors
    with open(path, "r+b") as f:
        f.seek(tensors["big"].offset + 10 * WIDTH * 4)
        f.write(KNOWN.tobytes())
        f.seek(tensors["small"].offset)
        f.write(SMALL.tobytes())


CHILD = """
import json, mmap, os, resource, sys
import numpy as np
import tensorfile

paths = sys.argv[1:]
resource.setrlimit(resource.RLIMIT_AS, (512 << 20, resource.getrlimit(resource.RLIMIT_AS)[1]))
fd = os.open(paths[0], os.O_RDONLY)
try:
    mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
    whole = "mapped"
except OSError as exc:
    whole = exc.strerror
report = {"whole file": whole}
for path in paths:
    got = report[os.path.basename(path)] = {}
    with tensorfile.open(path, framework="numpy") as f:
        small, rows = f["small"], f.slice("big")[10:20]
        column = f.slice("big")[12:14, 3]
        try:
            f["huge"]
            got["huge"] = "read"
        except tensorfile.LimitError as exc:
            got["huge"] = "LimitError: " + str(exc)[:200]
        got["edge"] = f.slice("huge")[-1].tolist()[:2]
    got["small"], got["rows"], got["column"] = small.tolist(), rows.tolist(), column.tolist()  # valid after close
print(json.dumps(report))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS counts maps as on Linux")
def test_reads_under_an_address_space_limit_smaller_than_the_file(tmp_path):
    """RLIMIT_AS of 512 MiB, a 1 GiB file: one 16-byte tensor and a slice of rows read; a tensor larger
    than the limit is a LimitError (safetensors, a sharded index of it, GGUF)."""
    plain = tmp_path / "model.safetensors"
    _sparse_safetensors(plain)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {k: plain.name for k in ("big", "huge", "small")}}))
    paths = [plain, index]
    try:
        _sparse_gguf(tmp_path / "model.gguf")
        paths.append(tmp_path / "model.gguf")
    except pytest.skip.Exception:
        pass
    assert os.path.getsize(plain) > 1 << 30
    source = os.path.dirname(os.path.dirname(tensorfile.__file__))  # this tensorfile, in the child too
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }  # each BLAS thread's stack counts against the limit
    run = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["whole file"] == "Cannot allocate memory"  # the limit bites: a map of the whole file fails
    for path in paths:
        got = report[path.name]
        assert got["small"] == SMALL.tolist()
        assert got["rows"] == KNOWN.tolist()
        assert got["column"] == KNOWN[2:4, 3].tolist()
        assert got["edge"] == [0.0, 0.0]
        assert got["huge"].startswith("LimitError: ") and "'huge'" in got["huge"]
        assert "Cannot allocate memory" in got["huge"]


def _mmap_of(array):
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return base


def _files(tmp_path):
    """The same tensors as a tensorfile file, a sharded save (index + 3 shards) and a GGUF file."""
    tensors = {"a": np.arange(300, dtype=np.float32).reshape(30, 10), "b": np.arange(20000, dtype=np.float64).reshape(200, 100),
               "c": np.arange(6, dtype=np.int16), "z": (np.arange(12) + 1j * np.arange(12)).reshape(4, 3)}  # fmt: skip
    tensorfile.save(tensors, tmp_path / "t.tensorfile")
    tensorfile.save(tensors, tmp_path / "s.safetensors", max_shard_size=100_000)
    files = [tmp_path / "t.tensorfile", tmp_path / "s.safetensors.index.json"]
    try:
        gguf = pytest.importorskip("gguf")
        for name, order in (("le", gguf.GGUFEndian.LITTLE), ("be", gguf.GGUFEndian.BIG)):
            w = gguf.GGUFWriter(str(tmp_path / f"{name}.gguf"), "llama", endianess=order)
            for key in "abc":
                w.add_tensor(key, tensors[key])  # the writer swaps bytes for a big-endian file
            w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
            w.close()
            files.append(tmp_path / f"{name}.gguf")
    except pytest.skip.Exception:
        pass
    return tensors, files


def test_each_tensor_maps_only_the_bytes_around_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ranges, "WINDOW", 64 << 10)
    tensors, files = _files(tmp_path)
    for path in files:
        with tensorfile.open(path, framework="numpy") as f:
            got = {key: f[key] for key in "abc"}
            if path.name == "t.tensorfile":  # "a" and "c" lie in the file's last window (shorter): one map
                assert 2 * (64 << 10) < os.path.getsize(path) < 3 * (64 << 10)
                window = _mmap_of(got["a"])
                assert window is _mmap_of(got["c"]) and len(window) == os.path.getsize(path) - (128 << 10)
            if path.name != "be.gguf":  # a big-endian file gives copies in the machine's byte order
                for key in "ac":
                    assert len(_mmap_of(got[key])) <= 64 << 10
                nbytes = tensors["b"].nbytes  # larger than a window: a map of its own, from a page boundary
                assert nbytes <= len(_mmap_of(got["b"])) < nbytes + mmap.ALLOCATIONGRANULARITY
            got["b"][0, 0] = -1.0  # copy-on-write: the file does not change
        for key in "abc":  # valid after close
            expect = tensors[key].copy()
            expect.reshape(-1)[0] = -1.0 if key == "b" else expect.reshape(-1)[0]
            assert np.array_equal(got[key], expect), (path, key)
        with tensorfile.open(path, framework="numpy") as f:
            assert f["b"][0, 0] == 0.0


def _rows_of(index) -> int:
    first = index[0] if isinstance(index, tuple) else index
    return len(range(*first.indices(200))) if isinstance(first, slice) else 1


def test_slices_of_rows_read_only_those_rows(tmp_path, monkeypatch):
    tensors, files = _files(tmp_path)
    b = tensors["b"]
    reads = []
    real = ranges.pread_exact
    spy = lambda fd, buf, offset, *a: (reads.append(len(buf)), real(fd, buf, offset, *a))  # noqa: E731
    monkeypatch.setattr(ranges, "pread_exact", spy)
    refuse = lambda *a, **k: pytest.fail("mapped the tensor")  # noqa: E731
    for path in files:
        with tensorfile.open(path, framework="numpy") as f, monkeypatch.context() as m:
            m.setattr(ranges.RangeMaps, "array", refuse)
            for index in (slice(10, 20), 3, -1, (slice(2, 4), 7), (5, slice(None, None, 2)), slice(150, 10**9),
                          slice(7, 3), (slice(-3, None), Ellipsis), np.int64(199)):  # fmt: skip
                reads.clear()
                got = f.slice("b")[index]
                assert np.array_equal(got, b[index]) and got.shape == b[index].shape, (path, index)
                assert sum(reads) == _rows_of(index) * 100 * 8, (path, index)  # those rows' bytes, no more
            if path.suffix != ".gguf":
                assert np.array_equal(f.slice("z")[1:3], tensors["z"][1:3])  # complex128, stored as pairs of F64
            with pytest.raises(IndexError, match="index 200 is out of bounds for axis 0 with size 200"):
                f.slice("b")[200]
        with tensorfile.open(path, framework="numpy") as f:  # any other index selects from the map
            for index in (slice(None, None, 3), [4, 1, 4], (Ellipsis, 2), b > 19000):
                assert np.array_equal(f.slice("b")[index], b[index]), (path, index)


def test_a_slice_is_charged_to_the_budget(tmp_path):
    tensors, files = _files(tmp_path)
    limits = tensorfile.Limits(max_bytes=64 << 10)  # the header fits; 100 rows of "b" (80 000 bytes) do not
    for path in files:
        with tensorfile.open(path, framework="numpy", limits=limits) as f:
            assert np.array_equal(f.slice("b")[:50], tensors["b"][:50])
            with pytest.raises(tensorfile.LimitError, match="rows 0:100 of tensor 'b' needs 80000 bytes"):
                f.slice("b")[:100]
