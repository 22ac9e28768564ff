"""Files written by torch.save and NumPy load without their frameworks and without running their code."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import tensorfile
from conftest import FIXTURES, assert_matches, expected
from tensorfile.errors import UnsafeFileError



@pytest.mark.parametrize("name", ["plain.npy", "v2.npy", "fortran.npy", "bigendian.npy", "arrays.npz", "compressed.npz", "positional.npz"])
def test_numpy_fixtures(name):
    value = tensorfile.load(FIXTURES / "numpy" / name)
    reference = np.load(FIXTURES / "numpy" / name, allow_pickle=False)  # NumPy itself as the oracle
    if name.endswith(".npz"):
        assert sorted(value) == sorted(reference.files)
        for k in reference.files:
            assert value[k].dtype == reference[k].dtype.newbyteorder("=") and np.array_equal(value[k], reference[k])
    else:
        assert value.dtype == reference.dtype.newbyteorder("=") and np.array_equal(value, reference)
        assert value.flags.c_contiguous


def test_torch_sharing_and_parameters():
    torch = pytest.importorskip("torch")
    views = tensorfile.load(FIXTURES / "torch" / "views.pt")
    reference = torch.load(FIXTURES / "torch" / "views.pt", weights_only=True)
    assert sorted(views) == sorted(reference)
    for k, v in reference.items():
        assert torch.equal(views[k], v) and views[k].stride() == v.stride()
    views["base"].fill_(-7)  # every tensor of the file is a view of this one storage, as with torch.load
    reference["base"].fill_(-7)
    for k, v in reference.items():
        assert torch.equal(views[k], v), k
    params = tensorfile.load(FIXTURES / "torch" / "parameters.pt")
    assert all(type(p) is torch.nn.Parameter for p in params)


def test_round_trip_against_torch_load(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {
        "base": base, "t": base.t(), "row": base[2], "bf": torch.ones(3, dtype=torch.bfloat16),
        "ints": {0: torch.arange(3), 1: (torch.zeros(2, dtype=torch.uint8), 2.5, None)},
        "p": torch.nn.Parameter(torch.ones(2)), "scalar": torch.tensor(7), "empty": torch.zeros(0, 3),
    }  # fmt: skip
    for legacy in (False, True):
        path = tmp_path / f"x{legacy}.pt"
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        ours = tensorfile.load(path)
        theirs = torch.load(path, weights_only=True)
        assert type(ours["p"]) is torch.nn.Parameter and ours["ints"][1][1:] == (2.5, None)
        for k in ("base", "t", "row", "bf", "scalar", "empty"):
            assert ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k])
            assert ours[k].stride() == theirs[k].stride() or ours[k].numel() == 0
        ours["base"][2, 0] = -1
        assert ours["row"][0] == -1 and ours["t"][0, 2] == -1


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "ts.pt"))
    with pytest.raises(tensorfile.UnsupportedTypeError, match="TorchScript"):
        tensorfile.load(tmp_path / "ts.pt")


HOSTILE = {k.split("/", 1)[1]: v for k, v in expected("hostile")["files"].items() if k.startswith("hostile/") and
           k.split("/")[1].split("_")[0] in ("pickle", "npy", "npz")}  # fmt: skip


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pickles_and_numpy_files_refused(name):
    marker = expected("hostile")["marker"]
    start = time.perf_counter()
    with pytest.raises((tensorfile.FormatError, UnsafeFileError, tensorfile.UnsupportedTypeError)) as info:
        tensorfile.load(FIXTURES / "hostile" / name)
    assert time.perf_counter() - start < 1.0
    assert str(FIXTURES / "hostile" / name) in str(info.value)
    assert not os.path.exists(marker)
    if name.startswith("pickle"):
        assert isinstance(info.value, UnsafeFileError) and "system" in str(info.value)


def test_sharded_index_loads_all_shards_as_one_dict():
    from conftest import assert_matches as check

    name = "safetensors/sharded/model.safetensors.index.json"
    value = tensorfile.load(FIXTURES / name)
    check(value, expected("safetensors")[name]["value"], name)
    assert list(value) == [f"layers.{i}.{k}" for i in range(6) for k in ("bias", "weight")]


def test_index_escaping_its_folder_is_refused():
    with pytest.raises(tensorfile.FormatError, match="not a file in the index's folder"):
        tensorfile.load(FIXTURES / "hostile" / "escape_index" / "model.safetensors.index.json")


def test_index_with_a_tensor_in_the_wrong_shard(tmp_path):
    tensorfile.save({"a": np.ones(2), "b": np.zeros(2)}, tmp_path / "s1.safetensors")
    (tmp_path / "index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors"}}))
    with pytest.raises(tensorfile.FormatError, match=r"holds \['b'\]"):
        tensorfile.load(tmp_path / "index.json")
    (tmp_path / "index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s1.safetensors"}}))
    with pytest.raises(tensorfile.FormatError, match=r"lacks \['c'\]"):
        tensorfile.load(tmp_path / "index.json")


def test_a_safetensors_header_of_123_bytes_is_not_taken_for_an_index(tmp_path):
    import struct

    header = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    header += b" " * (123 - len(header))
    (tmp_path / "f").write_bytes(struct.pack("<Q", 123) + header + b"\x05")
    assert (tmp_path / "f").read_bytes()[:1] == b"{"
    assert tensorfile.load(tmp_path / "f")["a"].tolist() == [5]


MXNET = expected("mxnet")


@pytest.mark.parametrize("name", sorted(MXNET))
def test_mxnet_fixtures_handed_to_torch(name):
    """(tests/test_fixtures.py checks every fixture as NumPy; this hands MXNet's to another framework.)"""
    framework = "torch"
    pytest.importorskip("torch")
    assert_matches(tensorfile.load(FIXTURES / name, framework=framework), MXNET[name]["value"], name)


def test_mxnet_file_into_the_torch_mlp():
    torch = pytest.importorskip("torch")
    from frameworks_support import torch_mlp

    net = torch_mlp()
    report = tensorfile.load_parameters(net, FIXTURES / "mxnet" / "mlp.params")  # Gluon Dense weight is (out, in)
    assert report.ok
    io = tensorfile.load(FIXTURES / "mxnet" / "mlp-io", framework="torch")
    assert torch.allclose(net(io["X"].float()), io["Y"].float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(k.split("/")[1] for k in expected("hostile")["files"] if k.startswith("hostile/mx_")))
def test_hostile_mxnet_files_refused(name):
    start = time.perf_counter()
    with pytest.raises(tensorfile.FormatError, match=str(FIXTURES / "hostile" / name).replace(".", r"\.")):
        tensorfile.load(FIXTURES / "hostile" / name)
    assert time.perf_counter() - start < 1.0


def test_object_arrays_as_numpy_writes_them(tmp_path):
    value = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "names": ["a", "b"], "n": 3, "f": np.float64(2.5)}
    np.save(tmp_path / "d.npy", value, allow_pickle=True)
    back = tensorfile.load(tmp_path / "d.npy")
    assert back["names"] == ["a", "b"] and back["n"] == 3 and back["f"] == 2.5
    assert back["w"].dtype == np.float32 and back["w"].tolist() == value["w"].tolist()
    np.save(tmp_path / "l.npy", np.array(["x", "yz"], dtype=object), allow_pickle=True)
    assert tensorfile.load(tmp_path / "l.npy") == ["x", "yz"]


class Thing:
    """A class of the test module: its pickle names test_foreign.Thing."""


def test_object_array_with_a_class_is_refused(tmp_path):
    np.save(tmp_path / "t.npy", np.array([Thing()], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafeFileError, match="Thing"):
        tensorfile.load(tmp_path / "t.npy")


def test_keras_2_h5_and_bfloat16(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "k2.h5", "w") as f:
        f.create_dataset("model_weights/dense/dense/kernel:0", data=np.arange(6, dtype=np.float32).reshape(2, 3))
        bf = f.create_dataset("model_weights/dense/dense/bias:0", data=np.array([16256, 16384], np.uint16))
        bf.attrs["dtype"] = "bfloat16"
        f.attrs["model_config"] = '{"class_name": "Sequential"}'
    back = tensorfile.load(tmp_path / "k2.h5")
    assert back["model_weights/dense/dense/kernel:0"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert back["model_weights/dense/dense/bias:0"].dtype.name == "bfloat16"
    assert back["model_weights/dense/dense/bias:0"].astype(np.float32).tolist() == [1.0, 2.0]


def test_plain_safetensors_writer(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    value = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.int64)}
    tensorfile.save(value, tmp_path / "plain", format="safetensors", metadata={"format": "np"})
    ref = safetensors_numpy.load_file(str(tmp_path / "plain"))
    assert sorted(ref) == ["b", "w"] and ref["w"].tolist() == value["w"].tolist()
    with tensorfile.open(tmp_path / "plain") as f:
        assert not f.has_record and f.metadata == {"format": "np"}
    safetensors_numpy.save_file(value, str(tmp_path / "ref"), metadata={"format": "np"})
    assert (tmp_path / "plain").read_bytes() == (tmp_path / "ref").read_bytes()  # byte for byte the reference's file
    with pytest.raises(tensorfile.UnsupportedTypeError, match="flat dict"):
        tensorfile.save([np.ones(1)], tmp_path / "x", format="safetensors")
    with pytest.raises(tensorfile.UnsupportedTypeError, match="no dtype code for complex128"):
        tensorfile.save({"c": np.ones(1, np.complex128)}, tmp_path / "x", format="safetensors")
    with pytest.raises(ValueError, match="unknown format"):
        tensorfile.save(value, tmp_path / "x", format="hdf5")


def test_torch_zip_recompressed_reads_and_a_bomb_is_refused(tmp_path):
    """A torch.save file zipped again with deflate still loads; a member claiming a huge expansion is refused."""
    import zipfile

    source = FIXTURES / "torch" / "mlp.params"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    back = tensorfile.load(tmp_path / "deflated.pt", framework="numpy")
    reference = tensorfile.load(source, framework="numpy")
    assert all(np.array_equal(back[k], reference[k]) for k in reference)
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as dst:
        with zipfile.ZipFile(source) as src:
            for info in src.infolist():
                data = src.read(info)
                dst.writestr(info.filename, data + b"\0" * (300 << 20) if info.filename.endswith("data/1") else data)
    start = time.perf_counter()
    with pytest.raises(tensorfile.FormatError, match="more than 200x"):
        tensorfile.load(tmp_path / "bomb.pt")
    assert time.perf_counter() - start < 1.0


def _rezip(source, target, rename=lambda name, data: (name, data)):
    import zipfile

    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            renamed = rename(info.filename, src.read(info))
            if renamed is not None:
                dst.writestr(*renamed)


def test_torch_zip_without_byteorder_with_opaque_keys_on_cuda(tmp_path):
    """Files with no byteorder record (torch < 1.10), storage keys that are not numbers, storages on cuda:1."""
    torch = pytest.importorskip("torch")
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    torch.save({"w": t}, tmp_path / "plain.pt")

    def rename(name, data):
        if name.endswith("/byteorder"):
            return None
        if name.endswith("/data/0"):
            return name[: -len("0")] + "k-e-y", data
        if name.endswith("data.pkl"):
            assert data.count(b"X\x01\x00\x00\x000") == 1 and data.count(b"X\x03\x00\x00\x00cpu") == 1
            data = data.replace(b"X\x01\x00\x00\x000", b"X\x05\x00\x00\x00k-e-y").replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:1")
        return name, data

    _rezip(tmp_path / "plain.pt", tmp_path / "odd.pt", rename)
    back = tensorfile.load(tmp_path / "odd.pt", framework="numpy")
    assert back["w"].tolist() == t.tolist() and back["w"].dtype == np.float32
    on_cpu = tensorfile.load(tmp_path / "odd.pt")  # torch installed, no CUDA here: the tensor lands on the CPU
    assert on_cpu["w"].device.type == "cpu" and torch.equal(on_cpu["w"], t)


def test_mxnet_array_saved_on_a_gpu_loads_on_the_cpu(tmp_path):
    data = bytearray((FIXTURES / "mxnet" / "x-file").read_bytes())
    offset = 24 + 4 + 4 + 4 + 8  # file header, then magic, storage type, ndim, one dim: the context
    assert data[offset : offset + 8] == (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # cpu(0)
    data[offset : offset + 8] = (2).to_bytes(4, "little") + (1).to_bytes(4, "little")  # gpu(1)
    (tmp_path / "gpu-file").write_bytes(bytes(data))
    assert_matches(tensorfile.load(tmp_path / "gpu-file"), expected("mxnet")["mxnet/x-file"]["value"], "gpu-file")


def _torch_zip(tmp_path, name, pickled, members=(), compress=None):
    """A torch-style zip archive built by hand: data.pkl (deflated when ``compress``) and raw members."""
    import zipfile

    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickled, compress_type=compress)
        for member, data, kind in members:
            zf.writestr(f"archive/{member}", data, compress_type=kind)
        zf.writestr("archive/version", b"3\n")
    return path


def _pickle_of(value):
    from tensorfile.safepickle.write import PickleWriter

    return PickleWriter().dumps(value)


def test_torch_shared_containers_are_rebuilt_once_and_stay_shared(tmp_path):
    import pickle

    inner = [1.5]
    for _ in range(60):  # 2**60 paths through a 60-level structure
        inner = [inner, inner]
    path = _torch_zip(tmp_path, "shared.pt", pickle.dumps(inner, protocol=2))
    start = time.perf_counter()
    back = tensorfile.load(path, framework="numpy")
    assert time.perf_counter() - start < 1.0 and back[0] is back[1]
    assert tensorfile.load(path)[0][0][1] is not None  # handed to torch: the same walk, memoized
    assert len(tensorfile.tree.flat_arrays(back)) == 0
    cyclic = []
    cyclic.append(cyclic)
    back = tensorfile.load(_torch_zip(tmp_path, "cycle.pt", pickle.dumps(cyclic, protocol=2)))
    assert back[0] is back
    deep = b"\x80\x02" + b"(" * 5000 + b"K\x01" + b"l" * 5000 + b"."  # [[[...[1]...]]], 5000 deep
    with pytest.raises(tensorfile.FormatError, match=r"nested more than \d+ deep|nested too deeply"):
        tensorfile.load(_torch_zip(tmp_path, "deep.pt", deep))


def test_torch_zip_bombs_in_any_member_are_refused_before_inflating(tmp_path):
    import zipfile

    import psutil

    process = psutil.Process()
    small_pickle = _pickle_of({"a": 1})
    bombs = {
        "pickle": _torch_zip(tmp_path, "p.pt", small_pickle + b"\0" * (300 << 20), compress=zipfile.ZIP_DEFLATED),
        "byteorder": _torch_zip(tmp_path, "b.pt", small_pickle, [("byteorder", b"little" + b" " * (300 << 20), zipfile.ZIP_DEFLATED)]),
        "many": _torch_zip(tmp_path, "m.pt", small_pickle, [(f"data/{i}", b"\0" * (1 << 20), zipfile.ZIP_DEFLATED) for i in range(600)]),
    }  # fmt: skip
    for kind, path in bombs.items():
        before = process.memory_info().rss
        start = time.perf_counter()
        with pytest.raises(tensorfile.FormatError, match="200x|at most"):
            tensorfile.load(path)
        assert time.perf_counter() - start < 1.0, kind
        assert process.memory_info().rss - before < 64 << 20, kind


def test_damaged_torch_zip_records_raise_tensorfile_errors(tmp_path):
    import zipfile

    good = tmp_path / "good.pt"
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.arange(4.0)}, good)
    raw = good.read_bytes()
    _rezip(good, tmp_path / "odd.pt", lambda name, data: (name, b"\xff\xfe") if name.endswith("byteorder") else (name, data))
    with pytest.raises(tensorfile.UnsupportedTypeError, match="byteorder"):  # not "little"
        tensorfile.load(tmp_path / "odd.pt")
    with zipfile.ZipFile(good) as zf:
        pkl = next(i for i in zf.infolist() if i.filename.endswith("data.pkl"))
    bad_crc = bytearray(raw)
    name_len, extra_len = int.from_bytes(raw[pkl.header_offset + 26 : pkl.header_offset + 28], "little"), int.from_bytes(raw[pkl.header_offset + 28 : pkl.header_offset + 30], "little")  # fmt: skip
    bad_crc[pkl.header_offset + 30 + name_len + extra_len + 3] ^= 0x01
    (tmp_path / "crc.pt").write_bytes(bytes(bad_crc))
    with pytest.raises(tensorfile.TensorFileError) as info:
        tensorfile.load(tmp_path / "crc.pt")
    assert str(tmp_path / "crc.pt") in str(info.value)
    rng = np.random.default_rng(0)
    for _ in range(300):  # header bytes flipped at random: only tensorfile's own errors, or a correct load
        data = bytearray(raw)
        for at in rng.integers(0, len(raw), 3):
            data[at] ^= int(rng.integers(1, 256))
        (tmp_path / "fuzz.pt").write_bytes(bytes(data))
        try:
            tensorfile.load(tmp_path / "fuzz.pt", framework="numpy")
        except tensorfile.TensorFileError:
            pass


def test_stride_0_views_claiming_terabytes_are_refused(tmp_path):
    from tensorfile.safepickle.write import Call, Global, PersistentId

    def tensor(shape, stride):
        pid = PersistentId(("storage", Global("torch", "FloatStorage"), "0", "cpu", 1))
        return Call(Global("torch._utils", "_rebuild_tensor_v2"), (pid, 0, shape, stride, False, Call(Global("collections", "OrderedDict"), ())))

    ok = _torch_zip(tmp_path, "ok.pt", _pickle_of({"t": tensor((1000, 1000), (0, 0))}), [("data/0", b"\0\0\x80?", None)])
    assert tensorfile.load(ok, framework="numpy")["t"].shape == (1000, 1000)  # torch's expand(): a legal view
    for shape in [(10**6, 10**6), (2**40, 2**40), (0, 2**63 - 1, 4)]:
        path = _torch_zip(tmp_path, "big.pt", _pickle_of({"t": tensor(shape, (0,) * len(shape))}), [("data/0", b"\0\0\x80?", None)])
        with pytest.raises(tensorfile.FormatError, match="view of a 4-byte storage"):
            tensorfile.load(path, framework="numpy")


def test_damaged_npz_says_what_is_wrong(tmp_path):
    import zipfile

    np.savez(tmp_path / "a.npz", w=np.arange(100.0))
    raw = bytearray((tmp_path / "a.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        info = zf.infolist()[0]
    raw[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(tensorfile.IntegrityError, match="CRC"):
        tensorfile.load(tmp_path / "bad.npz")
