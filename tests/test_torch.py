"""PyTorch: the chapter's cells, parameters, sharing, devices, and the reference library as oracle."""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import tensorfile  # noqa: E402
from strategies import assert_same, torch_tensors, trees  # noqa: E402
from tensorfile import UnsupportedTypeError  # noqa: E402
from frameworks_support import torch_mlp as MLP  # noqa: E402  (the chapter's MLP)
from tests_support import rewrite_record  # noqa: E402

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- the chapter


def test_chapter_tensor_list_dict(tmp_path):
    os.chdir(tmp_path)
    x = torch.arange(4)
    tensorfile.save(x, "x-file")
    x2 = tensorfile.load("x-file")
    assert isinstance(x2, torch.Tensor) and torch.equal(x2, x) and x2.dtype == torch.int64

    y = torch.zeros(4)
    tensorfile.save([x, y], "x-files")
    x2, y2 = tensorfile.load("x-files")
    assert torch.equal(x2, x) and torch.equal(y2, y)

    mydict = {"x": x, "y": y}
    tensorfile.save(mydict, "mydict")
    mydict2 = tensorfile.load("mydict")
    assert list(mydict2) == ["x", "y"] and torch.equal(mydict2["x"], x) and torch.equal(mydict2["y"], y)


def test_chapter_mlp_clone_gives_same_outputs(tmp_path):
    torch.manual_seed(0)
    net = MLP()
    X = torch.randn(size=(2, 20))
    Y = net(X)
    tensorfile.save(net.state_dict(), tmp_path / "mlp.params")
    clone = MLP()
    clone.load_state_dict(tensorfile.load(tmp_path / "mlp.params"))
    clone.eval()
    Y_clone = clone(X)
    assert torch.equal(Y_clone, Y)
    # other safetensors tools see the state_dict's own names
    from safetensors.torch import load_file

    ref = load_file(str(tmp_path / "mlp.params"))
    assert sorted(ref) == sorted(net.state_dict())
    for k, v in net.state_dict().items():
        assert torch.equal(ref[k], v)


def test_state_dict_keeps_order_and_ordered_dict(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    sd = net.state_dict()
    tensorfile.save(sd, tmp_path / "sd")
    back = tensorfile.load(tmp_path / "sd")
    assert type(back) is OrderedDict and list(back) == list(sd)
    assert back["1.num_batches_tracked"].dtype == torch.int64
    net2 = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net2.load_state_dict(back)


# ---------------------------------------------------------------- types


@SETTINGS
@given(trees(torch_tensors()))
def test_torch_tree_roundtrip(obj):
    with tempfile.TemporaryDirectory() as d:
        tensorfile.save(obj, os.path.join(d, "t"))
        assert_same(obj, tensorfile.load(os.path.join(d, "t")))


@pytest.mark.parametrize(
    "dtype",
    [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32,
     torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
     torch.float8_e4m3fn, torch.float8_e5m2],
)  # fmt: skip
def test_every_dtype_matches_reference_library(tmp_path, dtype):
    from safetensors.torch import load_file

    base = torch.arange(-3, 9, dtype=torch.float32).reshape(3, 4) / 2
    t = base.to(dtype) if dtype != torch.bool else base > 0
    tensorfile.save({"t": t}, tmp_path / "d")
    back = tensorfile.load(tmp_path / "d")["t"]
    assert back.dtype == dtype and back.shape == t.shape
    assert torch.equal(back.view(torch.uint8), t.view(torch.uint8)) if t.element_size() == 1 else torch.equal(back, t)
    if dtype != torch.complex128:  # no safetensors code: stored as float64 (..., 2)
        ref = load_file(str(tmp_path / "d"))["t"]
        assert ref.dtype == dtype and torch.equal(ref.view(torch.uint8), t.contiguous().view(torch.uint8))
    else:
        ref = load_file(str(tmp_path / "d"))["t"]
        assert ref.dtype == torch.float64 and ref.shape == (3, 4, 2) and torch.equal(torch.view_as_complex(ref), t)


def test_parameters_and_requires_grad(tmp_path):
    p = nn.Parameter(torch.ones(3))
    q = nn.Parameter(torch.zeros(2), requires_grad=False)
    g = torch.ones(2, requires_grad=True)
    tensorfile.save({"p": p, "q": q, "g": g, "plain": torch.ones(1)}, tmp_path / "p")
    back = tensorfile.load(tmp_path / "p")
    assert type(back["p"]) is nn.Parameter and back["p"].requires_grad
    assert type(back["q"]) is nn.Parameter and not back["q"].requires_grad
    assert type(back["g"]) is torch.Tensor and back["g"].requires_grad
    assert type(back["plain"]) is torch.Tensor and not back["plain"].requires_grad


def test_tied_weights_stay_tied(tmp_path):
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    tensorfile.save(dict(model.named_parameters(remove_duplicate=False)), tmp_path / "tied")
    back = tensorfile.load(tmp_path / "tied")
    assert back["emb.weight"] is back["head.weight"]
    # state_dict holds two tensor objects over one storage: stored under both names, loaded as one tensor
    sd = model.state_dict()
    tensorfile.save(sd, tmp_path / "sd")
    with tensorfile.open(tmp_path / "sd") as f:
        assert f.keys() == ["emb.weight", "head.weight"]
    back = tensorfile.load(tmp_path / "sd")
    assert back["emb.weight"].data_ptr() == back["head.weight"].data_ptr()
    assert torch.equal(back["head.weight"], emb.weight.detach())


def test_views_of_one_base_share_again(tmp_path):
    base = torch.arange(24.0).reshape(4, 6)
    obj = {"base": base, "row": base[1], "col": base[:, 2], "t": base.t(), "flat": base.view(-1)[5:11]}
    tensorfile.save(obj, tmp_path / "v")
    back = tensorfile.load(tmp_path / "v")
    for k, v in obj.items():
        assert torch.equal(back[k], v), k
    assert back["col"].stride() == (6,) and back["t"].stride() == (1, 6)
    back["base"][1, 2] = -1
    assert back["row"][2] == -1 and back["col"][1] == -1 and back["t"][2, 1] == -1 and back["flat"][3] == -1
    # loaded as NumPy, the sharing is kept too
    nb = tensorfile.load(tmp_path / "v", framework="numpy")
    nb["base"][0, 0] = 42
    assert nb["t"][0, 0] == 42 and np.shares_memory(nb["row"], nb["base"])


def test_views_without_base_store_only_what_is_needed(tmp_path):
    big = torch.zeros(1000, 1000)
    tensorfile.save({"a": big[0], "b": big[1]}, tmp_path / "rows")
    assert (tmp_path / "rows").stat().st_size < 20_000
    back = tensorfile.load(tmp_path / "rows")
    assert back["a"].untyped_storage().data_ptr() == back["b"].untyped_storage().data_ptr()
    assert back["a"].untyped_storage().nbytes() == 8000


def test_numpy_views_share_again(tmp_path):
    base = np.arange(12.0).reshape(3, 4)
    tensorfile.save([base, base[::-1, ::2], base[1]], tmp_path / "nv")
    a, b, c = tensorfile.load(tmp_path / "nv")
    assert np.array_equal(b, base[::-1, ::2])
    a[2, 0] = 100
    assert b[0, 0] == 100
    assert np.shares_memory(a, c)


def test_optimizer_state_dict(tmp_path):
    torch.manual_seed(0)
    net = MLP()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 20)).sum().backward()
    opt.step()
    sd = opt.state_dict()
    tensorfile.save({"model": net.state_dict(), "optimizer": sd, "epoch": 3}, tmp_path / "ckpt")
    back = tensorfile.load(tmp_path / "ckpt")
    assert back["epoch"] == 3
    assert list(back["optimizer"]["state"]) == [0, 1, 2, 3]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert_same(sd, back["optimizer"])
    opt2 = torch.optim.Adam(MLP().parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])


# ---------------------------------------------------------------- map_location and framework


def test_map_location_and_framework(tmp_path):
    t = torch.arange(3.0)
    tensorfile.save({"t": t}, tmp_path / "m")
    assert tensorfile.load(tmp_path / "m", map_location="cpu")["t"].device.type == "cpu"
    assert tensorfile.load(tmp_path / "m", map_location=torch.device("cpu"))["t"].device.type == "cpu"
    assert tensorfile.load(tmp_path / "m", map_location={"cpu": "cpu"})["t"].device.type == "cpu"
    seen = []
    out = tensorfile.load(tmp_path / "m", map_location=lambda tensor, loc: seen.append(loc) or tensor * 2)
    assert seen == ["cpu"] and out["t"].tolist() == [0.0, 2.0, 4.0]
    as_np = tensorfile.load(tmp_path / "m", framework="numpy")["t"]
    assert isinstance(as_np, np.ndarray) and as_np.tolist() == [0.0, 1.0, 2.0]
    tensorfile.save({"n": np.arange(2)}, tmp_path / "n")
    assert isinstance(tensorfile.load(tmp_path / "n", framework="torch")["n"], torch.Tensor)
    with pytest.raises(ValueError, match=r"unknown framework 'pytorch'; expected one of \['jax', 'mxnet', 'numpy', 'tensorflow', 'torch'\]"):
        tensorfile.load(tmp_path / "n", framework="pytorch")


def test_device_recorded_and_restored_on_cpu_when_absent(tmp_path):
    t = torch.ones(2, device="meta")
    with pytest.raises(UnsupportedTypeError, match="meta"):
        tensorfile.save(t, tmp_path / "meta")
    tensorfile.save({"t": torch.ones(2)}, tmp_path / "d")
    rewrite_record(tmp_path / "d", lambda r: r["tensors"]["t"].update(device="cuda:3"))
    back = tensorfile.load(tmp_path / "d")
    assert back["t"].device.type == ("cuda" if torch.cuda.device_count() > 3 else "cpu")
    assert tensorfile.load(tmp_path / "d", map_location={"cuda:3": "cpu"})["t"].device.type == "cpu"


# ---------------------------------------------------------------- refused


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns when building quantized, nested, complex32 tensors
def test_unsupported_values_name_their_place(tmp_path):
    sd = {"optimizer": {"state": {0: {"step": 1, "fn": lambda x: x}}}}
    with pytest.raises(UnsupportedTypeError, match=r"obj\['optimizer'\]\['state'\]\[0\]\['fn'\]: function"):
        tensorfile.save(sd, tmp_path / "x")
    assert not (tmp_path / "x").exists() and os.listdir(tmp_path) == []
    cases = {
        "sparse": torch.eye(3).to_sparse(),
        "quantized": torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8),
        "nested": torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]),
        "complex32": torch.ones(2, dtype=torch.complex32),
    }
    for kind, value in cases.items():
        with pytest.raises(UnsupportedTypeError, match=rf"obj\['w'\]\[1\]: .*{kind.rstrip('0123456789') if kind != 'complex32' else 'complex32'}"):
            tensorfile.save({"w": [torch.ones(1), value]}, tmp_path / "x")
    for value, text in [(np.array(["a"]), "<U1"), (np.array([object()]), "object"), (np.ones(2, np.longdouble), "float128"),
                        ({1, 2}, "set"), (b"raw", "bytes"), (np.ma.array([1]), "MaskedArray")]:  # fmt: skip
        with pytest.raises(UnsupportedTypeError, match=rf"obj\[0\]: .*{text}"):
            tensorfile.save([value], tmp_path / "x")
    loop: list = []
    loop.append(loop)
    with pytest.raises(UnsupportedTypeError, match="contains itself"):
        tensorfile.save(loop, tmp_path / "x")
    assert os.listdir(tmp_path) == []


def test_expanded_and_overlapping_views(tmp_path):
    base = torch.arange(3.0)
    obj = {"base": base, "e": base.expand(4, 3), "o": base.as_strided((2, 2), (1, 1))}
    tensorfile.save(obj, tmp_path / "e")
    back = tensorfile.load(tmp_path / "e")
    for k, v in obj.items():
        assert torch.equal(back[k], v), k
    assert back["e"].stride() == (0, 1)
    back["base"][1] = 10
    assert back["e"][3, 1] == 10 and back["o"][0, 1] == 10 and back["o"][1, 0] == 10
    nb = tensorfile.load(tmp_path / "e", framework="numpy")
    assert nb["e"].strides == (0, 4) and np.shares_memory(nb["e"], nb["base"])


def test_lazy_conj_neg_and_byteswapped_views_keep_their_values(tmp_path):
    z = torch.tensor([1 + 1j, 2 + 2j, 3 + 3j])
    obj = {"z": z, "tail_conj": z[1:].conj(), "zc": z.conj(), "neg": torch._neg_view(torch.arange(3.0))}
    tensorfile.save(obj, tmp_path / "c")
    back = tensorfile.load(tmp_path / "c")
    for k, v in obj.items():
        assert torch.equal(back[k], v.resolve_conj().resolve_neg()), k
    x = np.arange(4, dtype="<f4")
    tensorfile.save({"x": x, "y": x.view(">f4")}, tmp_path / "b")
    nb = tensorfile.load(tmp_path / "b")
    assert nb["x"].tolist() == [0, 1, 2, 3] and nb["y"].tobytes() == x.view(">f4").astype("=f4").tobytes()


@pytest.mark.parametrize("device", ["mps", "xla:1", "meta", "cuda:99", "privateuseone:0"])
def test_saved_devices_this_machine_lacks_load_on_cpu(tmp_path, device):
    tensorfile.save({"t": torch.ones(2), "p": nn.Parameter(torch.ones(1))}, tmp_path / "d")
    rewrite_record(tmp_path / "d", lambda r: [r["tensors"][k].update(device=device) for k in ("t", "p")])
    back = tensorfile.load(tmp_path / "d")
    assert back["t"].device.type == "cpu" and back["t"].tolist() == [1.0, 1.0]


def test_int_tensor_flags_from_a_file_do_not_break_loading(tmp_path):
    tensorfile.save({"i": torch.arange(3)}, tmp_path / "i")
    rewrite_record(tmp_path / "i", lambda r: r["tensors"]["i"].update(parameter=True, requires_grad=True))
    back = tensorfile.load(tmp_path / "i")
    assert isinstance(back["i"], nn.Parameter) and not back["i"].requires_grad


def test_plain_values_that_cannot_be_stored(tmp_path):
    with pytest.raises(UnsupportedTypeError, match=r"obj\['v'\]: an int of"):
        tensorfile.save({"v": 10**5000}, tmp_path / "x")
    with pytest.raises(UnsupportedTypeError, match=r"obj\[0\]: a str that is not valid Unicode"):
        tensorfile.save(["\ud800"], tmp_path / "x")
    with pytest.raises(UnsupportedTypeError, match="dict key"):
        tensorfile.save({"\udfff": 1}, tmp_path / "x")
    with pytest.raises(ValueError, match="not valid Unicode"):
        tensorfile.save([], tmp_path / "x", metadata={"k": "\ud800"})
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(UnsupportedTypeError, match="nested too deeply"):
        tensorfile.save(deep, tmp_path / "x")
    assert os.listdir(tmp_path) == []
    ok = {"v": 10**3000, "s": "\u00e9\U0001f600"}
    tensorfile.save(ok, tmp_path / "ok")
    assert tensorfile.load(tmp_path / "ok") == ok


def test_views_at_offsets_not_multiple_of_every_item_size(tmp_path):
    x = torch.arange(16, dtype=torch.uint8)
    obj = {"a": x[1:3], "b": x[4:12].view(torch.float32)}
    tensorfile.save(obj, tmp_path / "t")
    back = tensorfile.load(tmp_path / "t")
    assert torch.equal(back["a"], obj["a"]) and torch.equal(back["b"].view(torch.uint8), obj["b"].view(torch.uint8))
    assert back["a"].untyped_storage().data_ptr() == back["b"].untyped_storage().data_ptr()
    root = np.arange(16, dtype=np.uint8)
    for obj in ({"a": root[1:3], "b": root[4:12].view("<f4")}, {"r": root, "c": root[1:9].view("<f4")}):
        tensorfile.save(obj, tmp_path / "n")
        back = tensorfile.load(tmp_path / "n")
        for k, v in obj.items():
            assert back[k].tobytes() == v.tobytes() and back[k].dtype == v.dtype
