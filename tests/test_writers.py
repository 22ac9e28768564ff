"""save(format="torch" | "npz") and max_shard_size=, checked by the real tools that read them.

torch.load(weights_only=True), np.load(allow_pickle=False), the reference
safetensors library and huggingface_hub's sharded loader are the oracles.
MXNet's writer is checked under real MXNet in tests/mxnet/test_writers_mxnet.py.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorfile
from tensorfile.errors import UnsupportedTypeError

torch = pytest.importorskip("torch")
nn = torch.nn

TORCH_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16, torch.int32,
                torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128, torch.uint16, torch.uint32,
                torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz]  # fmt: skip


def _same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.requires_grad) == (b.dtype, b.shape, b.requires_grad)
        assert torch.equal(a.detach().contiguous().view(-1).view(torch.uint8), b.detach().contiguous().view(-1).view(torch.uint8))
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert a == b


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
def test_torch_every_dtype_loads_in_torch(tmp_path, dtype):
    values = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.float64)
    t = values.to(dtype) if dtype not in (torch.uint32, torch.uint64, torch.uint16) else torch.tensor([[0, 1, 2], [3, 4, 65000 if dtype == torch.uint16 else 2**31 + 5]], dtype=dtype)
    path = tmp_path / "t.pt"
    tensorfile.save({"t": t, "scalar": t[1, 2].clone(), "empty": t[:0]}, path, format="torch")
    back = torch.load(path, weights_only=True)
    assert back["t"].dtype == dtype and back["t"].shape == (2, 3)
    assert torch.equal(back["t"].view(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))
    assert back["scalar"].shape == () and back["empty"].shape == (0, 3)


def test_torch_checkpoint_structure(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    checkpoint = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 7, "loss": float("nan"),
                  "big": 2**80, "neg": -(2**40), "name": "run ü", "flags": (True, False, None),
                  "params": [nn.Parameter(torch.ones(2)), nn.Parameter(torch.zeros(1), requires_grad=False)],
                  "leaf": torch.ones(3, requires_grad=True), "od": collections.OrderedDict([(1, torch.zeros(1)), ((2, "x"), 3.5)])}  # fmt: skip
    path = tmp_path / "ck.pt"
    tensorfile.save(checkpoint, path, format="torch")
    back = torch.load(path, weights_only=True)
    _same(back, checkpoint)
    assert isinstance(back["params"][0], nn.Parameter) and back["params"][0].requires_grad
    assert not back["params"][1].requires_grad and back["leaf"].requires_grad
    fresh = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    fresh.load_state_dict(back["model"])
    x = torch.randn(2, 4)
    assert torch.equal(fresh(x), model(x))
    opt2 = torch.optim.Adam(fresh.parameters(), lr=0.01)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_torch_tied_and_views_share_storage(tmp_path):
    base = torch.arange(24, dtype=torch.float32)
    emb = nn.Embedding(5, 3)
    obj = {"a": base[2:10].view(2, 4), "b": base[4:8], "t": base.view(4, 6).t(), "emb": emb.weight, "head": emb.weight}
    path = tmp_path / "tied.pt"
    tensorfile.save(obj, path, format="torch")
    back = torch.load(path, weights_only=True)
    assert back["a"].untyped_storage().data_ptr() == back["b"].untyped_storage().data_ptr() == back["t"].untyped_storage().data_ptr()
    assert back["t"].stride() == (1, 6) and torch.equal(back["t"], obj["t"])
    back["b"][0] = -1
    assert back["a"][0, 2] == -1  # really one storage
    assert back["emb"] is back["head"] or back["emb"].data_ptr() == back["head"].data_ptr()
    with zipfile.ZipFile(path) as zf:
        assert sum(n.split("/")[-2] == "data" for n in zf.namelist()) == 2  # one storage each for base and emb


def test_torch_archive_records_aligned(tmp_path):
    path = tmp_path / "a.pt"
    tensorfile.save({f"w{i}": torch.ones(i + 1, dtype=torch.float64) for i in range(7)}, path, format="torch")
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names[0] == "archive/data.pkl" and names[-1] == "archive/version"
        assert zf.read("archive/byteorder") == b"little" and zf.read("archive/version") == b"3\n"
        for info in zf.infolist():
            name_len, extra_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little"), int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
            start = info.header_offset + 30 + name_len + extra_len
            assert start % 64 == 0, info.filename
            assert info.compress_type == zipfile.ZIP_STORED
    torch.load(path, weights_only=True, mmap=True)  # mmap needs the alignment


def test_torch_written_without_torch(tmp_path):
    """A torch.save file written where torch cannot be imported loads in torch."""
    path = tmp_path / "np.pt"
    code = ("import sys; sys.modules['torch'] = None\nimport numpy as np, ml_dtypes, tensorfile\n"
            f"tensorfile.save({{'w': np.arange(6, dtype=np.float32).reshape(2, 3), 'h': np.ones(2, ml_dtypes.bfloat16), "
            f"'be': np.arange(3, dtype='>i4'), 'step': 3}}, {str(path)!r}, format='torch')\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)
    back = torch.load(path, weights_only=True)
    assert torch.equal(back["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert back["h"].dtype == torch.bfloat16 and torch.equal(back["h"], torch.ones(2, dtype=torch.bfloat16))
    assert back["be"].dtype == torch.int32 and back["be"].tolist() == [0, 1, 2] and back["step"] == 3


def test_torch_big_endian_views(tmp_path):
    base = np.arange(12, dtype=">f8")
    path = tmp_path / "be.pt"
    tensorfile.save({"a": base[:6].reshape(2, 3), "b": base[3:]}, path, format="torch")
    back = torch.load(path, weights_only=True)
    assert back["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and back["b"].tolist() == list(range(3, 12))


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), hnp.arrays(
    st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_, np.complex64, np.float16]),
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)), max_size=5))
def test_torch_round_trip_hypothesis(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("h") / "h.pt"
    tensorfile.save(arrays, path, format="torch")
    back = torch.load(path, weights_only=True)
    assert list(back) == list(arrays)
    for k, a in arrays.items():
        assert back[k].numpy().dtype == a.dtype and back[k].numpy().tobytes() == a.tobytes()
    again = tensorfile.load(path, framework="numpy")
    for k, a in arrays.items():
        assert np.array_equal(again[k], a, equal_nan=True) and again[k].dtype == a.dtype


NPY_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
              "float32", "float64", "complex64", "complex128"]  # fmt: skip


@pytest.mark.parametrize("dtype", NPY_DTYPES)
def test_npz_every_dtype_loads_in_numpy(tmp_path, dtype):
    a = (np.arange(6) % 2 if dtype == "bool" else np.arange(6)).astype(dtype).reshape(2, 3)
    path = tmp_path / "a.npz"
    tensorfile.save({"a": a, "f": np.asfortranarray(a), "s": a[1, 1].copy(), "e": a[:0]}, path, format="npz")
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["a", "e", "f", "s"]
        for k, v in {"a": a, "f": a, "s": a[1, 1], "e": a[:0]}.items():
            assert z[k].dtype == a.dtype and z[k].shape == np.shape(v) and np.array_equal(z[k], v)
    assert tensorfile.load(path)["f"].tolist() == a.tolist()


def test_npz_list_and_torch_tensors(tmp_path):
    path = tmp_path / "l.npz"
    tensorfile.save([torch.arange(3), torch.ones(2, 2)], path, format="npz")
    with np.load(path, allow_pickle=False) as z:
        assert z.files == ["arr_0", "arr_1"] and z["arr_0"].tolist() == [0, 1, 2] and z["arr_1"].dtype == np.float32
    tensorfile.save(torch.zeros(2), path, format="npz")
    assert list(np.load(path)) == ["arr_0"]


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: "/" not in s and "\x00" not in s), hnp.arrays(
    st.sampled_from(NPY_DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)), max_size=5))
def test_npz_round_trip_hypothesis(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("h") / "h.npz"
    tensorfile.save(arrays, path, format="npz")
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(arrays)
        for k, a in arrays.items():
            assert z[k].dtype == a.dtype and z[k].tobytes() == a.tobytes()


@pytest.mark.parametrize("format", ["npz", "mxnet", "mxnet-np"])
@pytest.mark.parametrize("obj, message", [
    ({"a": {"b": np.zeros(2)}}, "holds only tensors, not dict"),
    ({1: np.zeros(2)}, "names arrays by str"),
    ({"a": 3}, "holds only tensors, not int"),
    ([np.zeros(2), "x"], "holds only tensors, not str"),
    ({"a": np.zeros(2, np.complex64)}, "complex64"),
])  # fmt: skip
def test_flat_formats_refuse_what_they_cannot_hold(tmp_path, format, obj, message):
    if format == "npz" and message == "complex64":
        obj = {"a": np.zeros(2, ml_dtypes.bfloat16)}
        message = "bfloat16"
    path = tmp_path / "out"
    path.write_bytes(b"old")
    with pytest.raises(UnsupportedTypeError, match=message):
        tensorfile.save(obj, path, format=format)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("format", ["npz", "mxnet", "torch"])
def test_foreign_formats_refuse_metadata(tmp_path, format):
    with pytest.raises(UnsupportedTypeError, match="no place for metadata"):
        tensorfile.save({"a": np.zeros(2, np.float32)}, tmp_path / "m", format=format, metadata={"k": "v"})


def test_mxnet_v2_refuses_0d_and_empty(tmp_path):
    with pytest.raises(UnsupportedTypeError, match="mxnet-np"):
        tensorfile.save({"s": np.float32(1.0) * np.ones(())}, tmp_path / "m", format="mxnet")
    with pytest.raises(UnsupportedTypeError, match="MXNet 1.9.1 cannot load uint16"):
        tensorfile.save({"s": np.ones(2, np.uint16)}, tmp_path / "m", format="mxnet")


def test_mxnet_files_read_back(tmp_path):
    d = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "m": np.array([True, False]), "h": np.ones(2, ml_dtypes.bfloat16)}
    tensorfile.save(d, tmp_path / "d.params", format="mxnet")
    back = tensorfile.load(tmp_path / "d.params", framework="numpy")
    assert list(back) == list(d) and all(np.array_equal(back[k], d[k]) and back[k].dtype == d[k].dtype for k in d)
    tensorfile.save(d["w"], tmp_path / "one", format="mxnet")
    one = tensorfile.load(tmp_path / "one", framework="numpy")
    assert isinstance(one, list) and np.array_equal(one[0], d["w"])  # as nd.save / nd.load do
    tensorfile.save({"s": np.ones((), np.float64), "e": np.zeros((0, 2), np.float32)}, tmp_path / "np", format="mxnet-np")
    back = tensorfile.load(tmp_path / "np", framework="numpy")
    assert back["s"].shape == () and back["s"] == 1 and back["e"].shape == (0, 2)


def test_unknown_format_and_shard_conflicts(tmp_path):
    with pytest.raises(ValueError, match="unknown format 'onnx'"):
        tensorfile.save({"a": np.zeros(1)}, tmp_path / "x", format="onnx")
    with pytest.raises(ValueError, match="no sharded layout"):
        tensorfile.save({"a": np.zeros(1)}, tmp_path / "x", format="npz", max_shard_size=10)
    for bad in (0, -5, "5XB", "GB", True, 1.5):
        with pytest.raises(ValueError, match="max_shard_size"):
            tensorfile.save({"a": np.zeros(1)}, tmp_path / "x", max_shard_size=bad)
    with pytest.raises(UnsupportedTypeError, match="flat dict"):
        tensorfile.save([np.zeros(1)], tmp_path / "x", max_shard_size=10)


def _state(n=10, side=100):
    g = torch.Generator().manual_seed(1)
    return {f"layers.{i}.weight": torch.randn(side, side, generator=g) for i in range(n)} | {"head.bias": torch.zeros(7)}


@pytest.mark.parametrize("format", [None, "safetensors"])
def test_sharded_layout_matches_huggingface_hub(tmp_path, format):
    hub = pytest.importorskip("huggingface_hub")
    sd = _state()
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir(), theirs.mkdir()
    tensorfile.save(sd, ours / "model.safetensors", max_shard_size="100KB", format=format, metadata={"format": "pt"})
    hub.save_torch_state_dict(sd, theirs, max_shard_size="100KB")
    assert sorted(os.listdir(ours)) == sorted(os.listdir(theirs))
    index, reference = (json.loads((d / "model.safetensors.index.json").read_text()) for d in (ours, theirs))
    assert index["weight_map"] == reference["weight_map"]
    assert index["metadata"]["total_size"] == reference["metadata"]["total_size"] == sum(t.nbytes for t in sd.values())
    for shard in set(index["weight_map"].values()):
        assert sum(t.nbytes for k, t in sd.items() if index["weight_map"][k] == shard) <= 100_000 or \
            sum(1 for v in index["weight_map"].values() if v == shard) == 1  # fmt: skip
    model = nn.ModuleDict({"layers": nn.ModuleList(nn.Linear(100, 100, bias=False) for _ in range(10)), "head": nn.Linear(2, 7)})
    del model.head.weight
    model.head.register_parameter("weight", None)
    result = hub.load_torch_model(model, ours)  # huggingface_hub's own sharded loader
    assert not getattr(result, "missing_keys", []) and torch.equal(model.layers[3].weight, sd["layers.3.weight"])
    back = tensorfile.load(ours / "model.safetensors", framework="torch")  # no such file: read through its index
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    assert tensorfile.load(ours / "model.safetensors.index.json").keys() == sd.keys()


def test_sharded_resave_removes_stale_shards(tmp_path):
    sd = _state()
    path = tmp_path / "model.safetensors"
    tensorfile.save(sd, path, max_shard_size=100_000)
    assert len(os.listdir(tmp_path)) == 6  # 5 shards (the small bias joins the last) + index
    tensorfile.save(sd, path, max_shard_size=250_000)
    names = sorted(os.listdir(tmp_path))
    assert names == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    tensorfile.save(sd, path, max_shard_size="1GB")
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert all(torch.equal(tensorfile.load(path)[k], sd[k]) for k in sd)
    tensorfile.save({"big": torch.zeros(1000)}, path, max_shard_size=10)  # larger than the limit: a shard of its own
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_sharded_save_touches_only_its_own_shards(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {"x": "config.json", "y": "model.safetensors.index.json"}}')
    tensorfile.save({"a": torch.zeros(10)}, tmp_path / "model.safetensors", max_shard_size=1000)  # one file
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    (tmp_path / "model-00007-of-00009.safetensors").write_bytes(b"left by a crash")
    (tmp_path / "other-00001-of-00002.safetensors").write_bytes(b"another checkpoint")
    tensorfile.save({"a": torch.ones(10), "b": torch.ones(10)}, tmp_path / "model.safetensors", max_shard_size=40)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model-00001-of-00002.safetensors",
                                            "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                                            "other-00001-of-00002.safetensors"]  # fmt: skip
    back = tensorfile.load(tmp_path / "model.safetensors")  # the new shards, not a stale single file
    assert list(back) == ["a", "b"] and torch.equal(back["a"], torch.ones(10))


def test_shard_plan_as_huggingface_hub_with_a_big_tensor_in_the_middle(tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    sd = {"a": torch.zeros(1), "b": torch.zeros(25), "c": torch.zeros(1), "d": torch.zeros(9), "e": torch.zeros(2)}
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir(), theirs.mkdir()
    tensorfile.save(sd, ours / "model.safetensors", max_shard_size=40)
    hub.save_torch_state_dict(sd, theirs, max_shard_size=40)
    index, reference = (json.loads((d / "model.safetensors.index.json").read_text()) for d in (ours, theirs))
    assert index["weight_map"] == reference["weight_map"] and list(index["weight_map"]) == list(reference["weight_map"])
    model = nn.ParameterDict({k: nn.Parameter(torch.ones_like(v)) for k, v in sd.items()})
    hub.load_torch_model(model, ours)  # shards carry {"format": "pt"}, which huggingface_hub requires
    assert all(torch.equal(model[k], sd[k]) for k in sd)


@pytest.mark.parametrize("path", ["", "folder", "folder/"])
def test_sharded_save_needs_a_file_name(tmp_path, path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="needs a file name"):
        tensorfile.save({"a": torch.zeros(10), "b": torch.zeros(10)}, path, max_shard_size=40)
    assert os.listdir(tmp_path / "folder") == [] and sorted(os.listdir(tmp_path)) == ["folder"]


def test_torch_tied_parameter_stays_one_object_and_huge_ints_are_refused(tmp_path):
    p = nn.Parameter(torch.ones(2))
    tensorfile.save({"a": p, "b": p, "l": [p]}, tmp_path / "t.pt", format="torch")
    back = torch.load(tmp_path / "t.pt", weights_only=True)
    assert back["a"] is back["b"] is back["l"][0] and isinstance(back["a"], nn.Parameter)
    tensorfile.save({"n": -(2**2039), "m": 2**2039 - 1}, tmp_path / "n.pt", format="torch")
    assert torch.load(tmp_path / "n.pt", weights_only=True)["n"] == -(2**2039)
    with pytest.raises(UnsupportedTypeError, match=r"reads -2\*\*2039 to 2\*\*2039 - 1"):
        tensorfile.save({"n": 10**700}, tmp_path / "big.pt", format="torch")


@pytest.mark.parametrize("format", ["npz", "mxnet"])
def test_names_the_target_would_confuse_are_refused(tmp_path, format):
    with pytest.raises(UnsupportedTypeError, match="NUL"):
        tensorfile.save({"a\x00b": np.ones(2, np.float32), "a": np.ones(2, np.float32)}, tmp_path / "x", format=format)
    if format == "npz":
        with pytest.raises(UnsupportedTypeError, match="np.load cannot tell them apart"):
            tensorfile.save({"a": np.ones(2), "a.npy": np.zeros(2)}, tmp_path / "x", format=format)
    assert not os.listdir(tmp_path)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"x\.pt: cannot write in .*nope: no such folder"):
        tensorfile.save({"a": np.ones(2)}, tmp_path / "nope" / "x.pt", format="torch")
