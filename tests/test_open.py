"""tensorfile.open: lazy, zero-copy access by name."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

import tensorfile
from tensorfile.format.reader import SafetensorsReader


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "f"
    obj = {
        "w": np.arange(60, dtype=np.float32).reshape(10, 6),
        "c": np.array([[1 + 2j, 3 - 4j]], dtype=np.complex128),
        "flag": np.bool_(True),
        "step": 7,
    }
    tensorfile.save(obj, path, metadata={"author": "me", "epoch": "3"})
    return path, obj


def _mmap_base(array):
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return base


def test_keys_info_metadata_without_reading(saved, monkeypatch):
    path, obj = saved
    monkeypatch.setattr(SafetensorsReader, "read", lambda *a, **k: pytest.fail("read data"))
    monkeypatch.setattr(SafetensorsReader, "map", lambda *a, **k: pytest.fail("mapped data"))
    with tensorfile.open(path) as f:
        assert sorted(f.keys()) == ["c", "flag", "w"] and len(f) == 3 and "w" in f and "step" not in f
        assert f.metadata == {"author": "me", "epoch": "3"}
        w = f.info("w")
        assert (w.dtype, w.shape, w.nbytes, w.code) == ("float32", (10, 6), 240, "F32")
        c = f.info("c")
        assert (c.dtype, c.shape, c.nbytes, c.code) == ("complex128", (1, 2), 32, "F64")
        assert f.info("flag").shape == ()
        with pytest.raises(KeyError, match="no tensor named 'nope'"):
            f.info("nope")


def test_getitem_is_memory_mapped_and_copy_on_write(saved):
    path, obj = saved
    before = path.read_bytes()
    with tensorfile.open(path) as f:
        w = f["w"]
        assert np.array_equal(w, obj["w"]) and isinstance(_mmap_base(w), mmap.mmap)
        w[0, 0] = 123.0  # private copy-on-write page: the file does not change
        assert np.array_equal(f["c"], obj["c"])
        assert f["flag"] == np.bool_(True) and type(f["flag"]) is np.bool_
    assert path.read_bytes() == before
    assert w[0, 0] == 123.0  # still valid after close


def test_slice_reads_only_requested_rows(saved, monkeypatch):
    path, obj = saved
    monkeypatch.setattr(SafetensorsReader, "read", lambda *a, **k: pytest.fail("read the whole tensor"))
    with tensorfile.open(path) as f:
        s = f.slice("w")
        assert s.shape == (10, 6) and s.dtype == "float32"
        assert np.array_equal(s[2:4], obj["w"][2:4])
        assert np.array_equal(s[-1], obj["w"][-1])
        assert np.array_equal(s[::3, 1], obj["w"][::3, 1])
        assert np.array_equal(f.slice("c")[0, 1], obj["c"][0, 1])
        assert _mmap_base(s[2:4]) is None  # a copy, not a view of the mapping


def test_open_torch_zero_copy(tmp_path):
    torch = pytest.importorskip("torch")
    t = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    tensorfile.save({"t": t, "p": torch.nn.Parameter(torch.ones(2))}, tmp_path / "t")
    with tensorfile.open(tmp_path / "t") as f:
        got = f["t"]
        assert isinstance(got, torch.Tensor) and got.dtype == torch.bfloat16 and torch.equal(got, t)
        assert isinstance(f["p"], torch.nn.Parameter)
        assert isinstance(f.slice("t")[1:2], torch.Tensor) and torch.equal(f.slice("t")[1:2], t[1:2])
    with tensorfile.open(tmp_path / "t", framework="numpy") as f:
        assert f["t"].dtype.name == "bfloat16"
        assert f.load()["t"].shape == (3, 4)


def test_open_reference_file(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    st.save_file({"a": np.arange(5, dtype=np.int16)}, str(tmp_path / "r"), metadata={"format": "np"})
    with tensorfile.open(tmp_path / "r") as f:
        assert f.metadata == {"format": "np"} and not f.has_record
        assert f["a"].tolist() == [0, 1, 2, 3, 4] and f.info("a").checksum is None


def test_metadata_validation(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        tensorfile.save(np.ones(1), tmp_path / "m", metadata={"tensorfile": "x"})
    with pytest.raises(TypeError, match="str to str"):
        tensorfile.save(np.ones(1), tmp_path / "m", metadata={"epoch": 3})


def test_closed_and_shrunk_files(tmp_path):
    path = tmp_path / "c"
    tensorfile.save({"a": np.arange(1000.0)}, path)
    f = tensorfile.open(path)
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f["a"]
    with tensorfile.open(path) as f:
        with open(path, "r+b") as raw:
            raw.truncate(100)
        with pytest.raises(tensorfile.FormatError, match="'a'"):
            f["a"]
    with pytest.raises(tensorfile.FormatError):
        tensorfile.load(path)


def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch):
    import io

    from tensorfile import files

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(files, "PROGRESS_MIN_BYTES", 1 << 20)
    monkeypatch.setattr(files, "PROGRESS_DELAY", 0.0)
    big = {"w": np.ones((512, 1024), np.float32)}
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    tensorfile.save(big, tmp_path / "big")
    tensorfile.load(tmp_path / "big")
    assert "saving big" in screen.getvalue() and "loading big" in screen.getvalue()
    pipe = io.StringIO()  # not a terminal: nothing
    monkeypatch.setattr("sys.stderr", pipe)
    tensorfile.save(big, tmp_path / "big")
    assert pipe.getvalue() == ""
