"""tensorfile.open() of torch zips, .npy, .npz, MXNet, HDF5 and .keras files reads headers only; each tensor is
read when f[name] asks for it, with the same checks and charges as load (issue 12)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import tensorfile
from conftest import FIXTURES
from tensorfile.errors import IntegrityError, LimitError
from tensorfile.formats._opened import ForeignFile
from tensorfile.tree import flat_arrays

LAZY = ["torch/checkpoint.pt", "torch/dtypes.pt", "torch/mlp-io", "torch/mydict", "torch/parameters.pt", "torch/tied.pt",
        "torch/views.pt", "torch/x-files", "numpy/arrays.npz", "numpy/compressed.npz", "numpy/positional.npz",
        "numpy/bigendian.npy", "numpy/fortran.npy", "numpy/nested.npy", "numpy/plain.npy", "numpy/strings.npy",
        "numpy/v2.npy", "mxnet/dtypes.nd", "mxnet/list.nd", "mxnet/mlp.params", "mxnet/np_shapes", "mxnet/sparse.nd",
        "mxnet/seq_bn.params", "mxnet/bool.nd", "tensorflow/mlp.weights.h5", "tensorflow/seq.keras",
        "tensorflow/mydict.npy", "tensorflow/seq-io.npz"]  # fmt: skip
#: The budget of a small file: 64 MiB of slack is what lets these open at all.
TINY = tensorfile.Limits(max_bytes=256 << 10)


def _same(got: np.ndarray, want: np.ndarray, name: str) -> None:
    got = np.asarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape, name
    assert got.tobytes() == np.ascontiguousarray(want).tobytes(), name


@pytest.mark.parametrize("name", LAZY)
def test_every_fixture_opens_lazily_and_reads_what_load_reads(name):
    value = tensorfile.load(FIXTURES / name, framework="numpy")
    flat = flat_arrays(value)
    with tensorfile.open(FIXTURES / name, framework="numpy") as f:
        assert isinstance(f, ForeignFile) and f.structure is not None
        assert f.keys() == list(flat)
        for key, array in flat.items():
            info = f.info(key)
            assert (info.dtype, info.shape, info.nbytes) == (array.dtype.name, array.shape, array.nbytes), key
        for key in reversed(list(flat)):  # any order; a tensor twice
            _same(f[key], flat[key], key)
        for key in list(flat)[:1]:
            _same(f[key], flat[key], key)


def _checkpoint(torch, path):
    g = torch.Generator().manual_seed(0)
    big = torch.randn(1024, 1024, generator=g)  # 4 MiB
    small = torch.arange(6.0).reshape(2, 3)
    state = {"big": big, "rows": big[10:13], "cols": big[:, 5], "small": small, "t": small.t(), "tied": small,
             "half": torch.tensor([1.5, -2.0], dtype=torch.bfloat16), "p": torch.nn.Parameter(torch.ones(2)),
             "epoch": 3, "opt": {"lr": 0.1, "betas": (0.9, 0.999)}}  # fmt: skip
    torch.save(state, path)
    return state


def test_a_torch_checkpoint_is_listed_without_reading_its_storages(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "c.pt"
    _checkpoint(torch, path)
    loaded = flat_arrays(tensorfile.load(path, framework="numpy"))
    assert path.stat().st_size > 4 << 20
    with tensorfile.open(path, framework="numpy", limits=TINY) as f:  # load needs 8 MiB: open needs the pickle
        assert sorted(f.keys()) == sorted(loaded)
        assert f.info("big").nbytes == 4 << 20 and f.info("rows").shape == (3, 1024) and f.info("half").dtype == "bfloat16"
        for key in ("rows", "small", "t", "tied", "half", "p"):  # reads only the bytes each reaches
            _same(f[key], loaded[key], key)
        with pytest.raises(LimitError, match="tensor 'big'"):
            f["big"]
        values = f.structure
        assert values["epoch"] == 3 and values["opt"]["betas"] == (0.9, 0.999)
    with pytest.raises(LimitError):
        tensorfile.load(path, framework="numpy", limits=TINY)
    with tensorfile.open(path, framework="numpy") as f:
        for _ in range(12):  # each read charged; a tensor read again does not use up the file's budget
            _same(f["big"], loaded["big"], "big")
        assert f["cols"].strides == (4096,)  # a view of the bytes it reaches, as load's is of the storage
    with tensorfile.open(path) as f:
        assert isinstance(f["p"], torch.Tensor) and torch.equal(f["tied"], torch.arange(6.0).reshape(2, 3))


def _rezip(src, dst, method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", method) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info), method)


def test_compressed_members_are_inflated_in_pieces_and_crc_checked(tmp_path):
    torch = pytest.importorskip("torch")
    _checkpoint(torch, tmp_path / "c.pt")
    _rezip(tmp_path / "c.pt", tmp_path / "z.pt")
    loaded = flat_arrays(tensorfile.load(tmp_path / "c.pt", framework="numpy"))
    with tensorfile.open(tmp_path / "z.pt", framework="numpy") as f:
        for key in ("cols", "rows", "big", "half"):
            _same(f[key], loaded[key], key)
    raw = bytearray((tmp_path / "z.pt").read_bytes())
    with zipfile.ZipFile(tmp_path / "z.pt") as zf:
        names = [i for i in zf.infolist() if "/data/" in i.filename]
        target = max(names, key=lambda i: i.compress_size)  # the big storage
        start = zf.open(target)._orig_compress_start  # where its deflated data starts
    raw[start + target.compress_size - 9] ^= 0xFF  # near the end: the range of 'rows' reads fine, the CRC does not
    (tmp_path / "bad.pt").write_bytes(bytes(raw))
    with tensorfile.open(tmp_path / "bad.pt", framework="numpy") as f:
        _same(f["small"], loaded["small"], "small")
        with pytest.raises((IntegrityError, tensorfile.FormatError), match="bad.pt"):
            f["rows"]


def test_npz_members_read_one_at_a_time_within_the_budget(tmp_path):
    big = np.arange(1 << 20, dtype=np.float64)  # 8 MiB
    small = np.asfortranarray(np.arange(12, dtype=">i4").reshape(3, 4))
    np.savez(tmp_path / "a.npz", big=big, small=small, text=np.array(["a", "bc"]))
    np.savez_compressed(tmp_path / "c.npz", big=big, small=small)
    for name in ("a.npz", "c.npz"):
        with tensorfile.open(tmp_path / name, limits=TINY) as f:
            assert f.keys()[:2] == ["big", "small"] and f.info("big").nbytes == 8 << 20
            got = f["small"]
            assert got.dtype == np.dtype("int32") and got.tolist() == small.tolist() and got.flags.c_contiguous
            with pytest.raises(LimitError, match="'big.npy'"):
                f["big"]
        with tensorfile.open(tmp_path / name) as f:
            assert np.array_equal(f["big"], big)
    with tensorfile.open(tmp_path / "a.npz") as f:
        assert f["text"].tolist() == ["a", "bc"]


def test_a_truncated_npz_member_is_refused_when_opened(tmp_path):
    np.savez(tmp_path / "a.npz", w=np.arange(1000.0))
    with zipfile.ZipFile(tmp_path / "a.npz") as zin, zipfile.ZipFile(tmp_path / "b.npz", "w") as zout:
        data = zin.read("w.npy")
        zout.writestr("w.npy", data[:-800])  # a consistent zip whose .npy promises more than it holds
    with pytest.raises(tensorfile.FormatError, match=r"'w.npy'.*promises 8000 bytes"):
        tensorfile.open(tmp_path / "b.npz")


def test_mxnet_records_are_stepped_over_and_read_on_demand(tmp_path):
    arrays = {"w": np.arange(1 << 19, dtype=np.float32), "b": np.ones(3, np.int64)}  # 2 MiB, 24 bytes
    tensorfile.save(arrays, tmp_path / "m.params", format="mxnet")
    with tensorfile.open(tmp_path / "m.params", framework="numpy", limits=tensorfile.Limits(max_bytes=64 << 10)) as f:
        assert f.keys() == ["w", "b"] and f.info("w").shape == (1 << 19,)
        assert f["b"].tolist() == [1, 1, 1]
        with pytest.raises(LimitError):
            f["w"]
    raw = (tmp_path / "m.params").read_bytes()
    (tmp_path / "cut.params").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(tensorfile.FormatError, match="expected 2097152 bytes"):
        tensorfile.open(tmp_path / "cut.params")


def test_a_compressed_keras_archive_is_still_read(tmp_path):
    src = FIXTURES / "tensorflow" / "seq.keras"
    _rezip(src, tmp_path / "z.keras")
    flat = flat_arrays(tensorfile.load(src, framework="numpy"))
    with tensorfile.open(tmp_path / "z.keras", framework="numpy") as f:
        assert f.keys() == list(flat)
        for key, array in flat.items():
            _same(f[key], array, key)


def test_a_closed_file_refuses_reads(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(3))
    f = tensorfile.open(tmp_path / "x.npy")
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f["tensor"]
