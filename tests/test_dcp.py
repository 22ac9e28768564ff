"""PyTorch Distributed Checkpoint (DCP) folders written by torch's own ``dcp.save``, read by tensorfile without pickle.

torch is the oracle: every checkpoint is written here by ``torch.distributed.checkpoint`` (torch 2.13), its
expected values are the state dict flattened by DCP's own ``flatten_state_dict``; hostile checkpoints are
real ones whose ``.metadata`` is rewritten (with pickle, on the test's side only).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import tensorfile
from tensorfile.errors import FormatError, LimitError, UnsafeFileError, UnsupportedTypeError

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

EXE = os.path.join(os.path.dirname(sys.executable), "tensorfile")


def _state() -> dict:
    """A model's state dict, AdamW's state after one step, values that are not tensors, a bfloat16 tensor."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optim": opt.state_dict(), "extra": {"epoch": 7, "name": "run1", "mix": [1, 2.5]},
            "half": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)}  # fmt: skip


def _flat(state: dict) -> dict:
    """The state dict as DCP names its entries (torch's own flattening)."""
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict

    return flatten_state_dict(state)[0]


def _sharded_tensor():
    """A 4x6 tensor of three chunks on this one rank: rows 0-1 whole; rows 2-3 cut at column 4."""
    from torch.distributed._shard.sharded_tensor import Shard, ShardMetadata, init_from_local_shards

    full = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    boxes = [([0, 0], [2, 6]), ([2, 0], [2, 4]), ([2, 4], [2, 2])]
    shards = [Shard(full[o[0] : o[0] + s[0], o[1] : o[1] + s[1]].clone(), ShardMetadata(o, s, "rank:0/cpu")) for o, s in boxes]
    return full, init_from_local_shards(shards, [4, 6])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Folders written by dcp.save: torch.save items, safetensors items, Hugging Face files, chunks of a tensor."""
    import torch.distributed as dist
    from torch.distributed.checkpoint import FileSystemWriter, HuggingFaceStorageWriter
    from torch.distributed.checkpoint.filesystem import SerializationFormat

    root = tmp_path_factory.mktemp("dcp")
    state = _state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save(state, checkpoint_id=root / "torch_save")
        dcp.save(state, storage_writer=FileSystemWriter(root / "safetensors", serialization_format=SerializationFormat.SAFETENSORS))
        weights = {k: v for k, v in _flat(state).items() if isinstance(v, torch.Tensor)}
        dcp.save(weights, storage_writer=HuggingFaceStorageWriter(str(root / "hf"), save_distributed=True))
        dist.init_process_group("gloo", init_method=f"file://{root / 'store'}", rank=0, world_size=1)
        try:
            full, sharded = _sharded_tensor()
            dcp.save({"w": sharded, "b": torch.ones(3)}, checkpoint_id=root / "chunks")
        finally:
            dist.destroy_process_group()
    return {"root": root, "state": state, "full": full}


def _equal(loaded: dict, expected: dict) -> None:
    assert list(loaded) == list(expected)
    for name, want in expected.items():
        got = loaded[name]
        if isinstance(want, torch.Tensor):
            assert isinstance(got, np.ndarray), name
            assert str(got.dtype) == str(want.dtype).removeprefix("torch."), name
            assert got.shape == tuple(want.shape), name
            assert got.tobytes() == want.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(), name
        else:
            assert got == want and type(got) is type(want), name


@pytest.mark.parametrize("kind", ["torch_save", "safetensors"])
def test_dcp_save_loads_equal_as_numpy(checkpoints, kind):
    loaded = tensorfile.load(checkpoints["root"] / kind, framework="numpy")
    _equal(loaded, _flat(checkpoints["state"]))
    assert loaded["optim.state.0.exp_avg"].any()  # AdamW really stepped: its state is not zeros
    assert loaded["optim.param_groups.0.betas"] == (0.9, 0.999)


def test_dcp_loads_into_torch_from_folder_or_metadata(checkpoints):
    folder = checkpoints["root"] / "torch_save"
    for path in (folder, folder / ".metadata"):
        loaded = tensorfile.load(path)
        weight = checkpoints["state"]["model"]["0.weight"]
        assert isinstance(loaded["model.0.weight"], torch.Tensor) and torch.equal(loaded["model.0.weight"], weight)
        assert loaded["half"].dtype == torch.bfloat16 and torch.equal(loaded["half"], checkpoints["state"]["half"])


def test_hugging_face_dcp_files_load(checkpoints):
    loaded = tensorfile.load(checkpoints["root"] / "hf", framework="numpy")
    expected = {k: v for k, v in _flat(checkpoints["state"]).items() if isinstance(v, torch.Tensor)}
    _equal({k: loaded[k] for k in expected}, expected)


def test_chunks_of_one_tensor_are_assembled(checkpoints):
    folder = checkpoints["root"] / "chunks"
    loaded = tensorfile.load(folder, framework="numpy")
    np.testing.assert_array_equal(loaded["w"], checkpoints["full"].numpy())
    np.testing.assert_array_equal(loaded["b"], np.ones(3, np.float32))
    with tensorfile.open(folder, framework="numpy") as f:
        assert f.keys() == ["w", "b"] and f.info("w").shape == (4, 6) and f.info("w").nbytes == 96
        np.testing.assert_array_equal(f["w"], checkpoints["full"].numpy())
        np.testing.assert_array_equal(f.slice("w")[2:4, 3:5], checkpoints["full"].numpy()[2:4, 3:5])


def test_open_reads_metadata_first_then_chunks(checkpoints, monkeypatch):
    from tensorfile.formats import dcp as dcp_format

    reads = []
    original = dcp_format.DcpReader._chunk
    monkeypatch.setattr(dcp_format.DcpReader, "_chunk", lambda self, entry, chunk, budget: reads.append(entry.name) or original(self, entry, chunk, budget))
    with tensorfile.open(checkpoints["root"] / "torch_save", framework="numpy") as f:
        assert "optim.state.0.exp_avg" in f.keys() and "extra.epoch" not in f.keys()  # tensors only
        assert f.format == "dcp" and f.metadata["dcp_version"] == "1.0.0"
        assert reads == []
        np.testing.assert_array_equal(f["model.2.bias"], checkpoints["state"]["model"]["2.bias"].numpy())
    assert reads == ["model.2.bias"]


_BLOCKED = """
import json, sys
import numpy as np, tensorfile  # NumPy imports pickle itself (numpy/_core/_methods.py): imported first
import pickle, _pickle

def refused(*args, **kwargs):
    raise RuntimeError("pickle is blocked")

for module in (pickle, _pickle):  # every unpickler, including ones already imported elsewhere
    for name in ("load", "loads", "Unpickler", "_load", "_loads", "_Unpickler"):
        if hasattr(module, name):
            setattr(module, name, refused)
sys.modules["pickle"] = sys.modules["_pickle"] = None  # and no new import of it
try:
    pickle.loads(b"\\x80\\x04K\\x01.")
    raise SystemExit("pickle still works")
except RuntimeError:
    pass
value = tensorfile.load(sys.argv[1], framework="numpy")
assert "torch" not in sys.modules
print(json.dumps({k: [v.dtype.name, list(v.shape), v.tobytes().hex()] if isinstance(v, np.ndarray) else repr(v)
                  for k, v in value.items()}))
"""


@pytest.mark.parametrize("kind", ["torch_save", "safetensors"])
def test_loads_with_pickle_blocked(checkpoints, kind):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_BLOCKED), str(checkpoints["root"] / kind)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout)
    expected = _flat(checkpoints["state"])
    assert list(loaded) == list(expected)
    for name, want in expected.items():
        if isinstance(want, torch.Tensor):
            raw = want.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes().hex()
            assert loaded[name] == [str(want.dtype).removeprefix("torch."), list(want.shape), raw], name
        else:
            assert loaded[name] == repr(want), name


def _copy(checkpoints, tmp_path, kind="torch_save"):
    folder = tmp_path / kind
    shutil.copytree(checkpoints["root"] / kind, folder)
    return folder


def _rewrite(folder, change):
    """Rewrite the checkpoint's .metadata after ``change(metadata)`` (pickle used here, on the test's side)."""
    path = folder / ".metadata"
    with open(path, "rb") as f:
        metadata = pickle.load(f)
    change(metadata)
    path.write_bytes(pickle.dumps(metadata))


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        import builtins

        return builtins.eval, (self.code,)


@pytest.mark.parametrize("payload", ["os.system", "planted eval", "protocol 0 by hand"])
def test_metadata_with_a_payload_is_refused_and_never_runs(checkpoints, tmp_path, payload):
    folder = _copy(checkpoints, tmp_path)
    marker = tmp_path / "ran"
    if payload == "os.system":
        (folder / ".metadata").write_bytes(pickle.dumps(_System(f"touch {marker}")))
    elif payload == "planted eval":  # a real Metadata, with a call hidden in planner_data
        _rewrite(folder, lambda md: setattr(md, "planner_data", _Eval(f"open({str(marker)!r}, 'w')")))
    else:
        (folder / ".metadata").write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    for path in (folder, folder / ".metadata"):
        with pytest.raises(UnsafeFileError, match=r"\.metadata: refuses the global (posix|os)\.system|builtins\.eval"):
            tensorfile.load(path, framework="numpy")
        with pytest.raises(UnsafeFileError):
            tensorfile.open(path)
    assert not marker.exists()


def _chunk(md, name, index=0):
    return md.state_dict_metadata[name].chunks[index]


def _storage(md, name):
    return next(info for index, info in md.storage_data.items() if index.fqn == name)


def _resize(md, name, shape):
    md.state_dict_metadata[name].size = _chunk(md, name).sizes = torch.Size(shape)


def _hostile_cases():
    size = torch.Size
    return {
        "chunk outside its shape": ("torch_save", lambda md: setattr(_chunk(md, "model.0.weight"), "sizes", size([4, 4])),
                                    FormatError, "'model.0.weight': a chunk at .* lies outside its shape"),
        "overlapping chunks": ("chunks", lambda md: setattr(_chunk(md, "w", 1), "sizes", size([2, 5])),
                               FormatError, "'w': chunks at .* overlap"),
        "a hole": ("chunks", lambda md: md.state_dict_metadata["w"].chunks.pop(),
                   FormatError, "'w': its chunks hold 20 of its 24 elements"),
        "offset past the file": ("torch_save", lambda md: setattr(_storage(md, "model.0.bias"), "offset", 10**9),
                                 FormatError, r"'model.0.bias': bytes 1000000000 to .* of '__0_0.distcp', which holds"),
        "huge shape": ("torch_save", lambda md: _resize(md, "model.0.weight", [1 << 30, 1 << 30]),
                       FormatError, "'model.0.weight': a chunk of 4611686018427387904 bytes .* is stored in 1577 bytes"),
        "impossible shape": ("torch_save", lambda md: _resize(md, "model.0.weight", [1 << 40, 1 << 40]),
                             LimitError, r"'model.0.weight': shape \(1099511627776, 1099511627776\) of 4-byte items is too large for any array"),
        "a file outside the folder": ("torch_save", lambda md: setattr(_storage(md, "model.0.bias"), "relative_path", "../x.distcp"),
                                      FormatError, "'../x.distcp' is not a file name in the checkpoint's folder"),
        "compressed items": ("torch_save", lambda md: setattr(_storage(md, "model.0.bias"), "transform_descriptors", ["stream.zstd/1"]),
                             UnsupportedTypeError, r"'model.0.bias' is stored through the transforms \['stream.zstd/1'\]"),
        "a wrong dtype": ("torch_save", lambda md: setattr(md.state_dict_metadata["model.0.bias"].properties, "dtype", torch.float64),
                          FormatError, r"'model.0.bias' \(bytes .*\): a chunk of shape \(3,\) \(float32\); the metadata says \(3,\) \(float64\)"),
    }  # fmt: skip


@pytest.mark.parametrize("case", list(_hostile_cases()))
def test_hostile_metadata_is_refused_naming_the_file(checkpoints, tmp_path, case):
    kind, change, error, message = _hostile_cases()[case]
    folder = _copy(checkpoints, tmp_path, kind)
    _rewrite(folder, change)
    with pytest.raises(error, match=message) as caught:
        tensorfile.load(folder, framework="numpy")
    assert str(folder) in str(caught.value)


def test_missing_data_file_is_named(checkpoints, tmp_path):
    folder = _copy(checkpoints, tmp_path)
    os.remove(folder / "__0_0.distcp")
    with pytest.raises(FormatError, match=r"\.metadata: 'model.0.weight': its data file '__0_0.distcp' is missing"):
        tensorfile.open(folder)


def test_cli_ls_info_and_convert_to_one_file(checkpoints, tmp_path):
    folder = checkpoints["root"] / "torch_save"
    ls = subprocess.run([EXE, "ls", "--json", str(folder)], capture_output=True, text=True, timeout=120)
    assert ls.returncode == 0, ls.stderr
    doc = json.loads(ls.stdout)
    rows = {t["name"]: t for t in doc["tensors"]}
    assert rows["half"] == {"name": "half", "dtype": "bfloat16", "shape": [2, 3], "nbytes": 12}
    assert rows["model.0.weight"]["shape"] == [3, 4] and doc["total"]["tensors"] == 17
    info = subprocess.run([EXE, "info", str(folder)], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "format:    PyTorch Distributed Checkpoint (DCP)" in info.stdout, info.stderr
    out = tmp_path / "one.tensorfile"
    convert = subprocess.run([EXE, "convert", str(folder), str(out)], capture_output=True, text=True, timeout=120)
    assert convert.returncode == 0, convert.stderr
    ls = subprocess.run([EXE, "ls", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert {t["name"] for t in json.loads(ls.stdout)["tensors"]} == set(rows)
    converted = tensorfile.load(out, framework="numpy")
    _equal(converted, _flat(checkpoints["state"]))  # values other than tensors too, checksummed now


def _blank(value):
    """The structure of ``value`` with zero tensors and no plain values: what dcp.load fills in."""
    if isinstance(value, torch.Tensor):
        return torch.zeros_like(value)
    if isinstance(value, dict):
        return {k: _blank(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_blank(v) for v in value]
    return None


def _same(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b and type(a) is type(b), where


def test_saved_as_dcp_loads_in_dcp_load(tmp_path):
    state = _state()
    folder = tmp_path / "ours"
    tensorfile.save(state, folder, format="dcp")
    assert sorted(p.suffix or p.name for p in folder.iterdir()) == [".distcp", ".metadata"]
    target = _blank(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no process group: DCP assumes one process
        dcp.load(target, checkpoint_id=folder)
    _same(state, target)  # model, AdamW state and param groups, plain values, bfloat16
    _equal(tensorfile.load(folder, framework="numpy"), _flat(state))  # and tensorfile reads its own


def test_dcp_overwrite_commits_metadata_last(tmp_path, monkeypatch):
    from tensorfile.formats import dcp_write

    folder = tmp_path / "ckpt"
    tensorfile.save({"w": torch.ones(3)}, folder, format="dcp")
    monkeypatch.setattr(dcp_write, "_metadata", lambda *args: 1 / 0)  # killed after the data, before the commit
    with pytest.raises(ZeroDivisionError):
        tensorfile.save({"w": torch.full((3,), 2.0)}, folder, format="dcp")
    np.testing.assert_array_equal(tensorfile.load(folder, framework="numpy")["w"], np.ones(3, np.float32))
    monkeypatch.undo()
    tensorfile.save({"w": torch.full((3,), 2.0)}, folder, format="dcp")
    np.testing.assert_array_equal(tensorfile.load(folder, framework="numpy")["w"], np.full(3, 2.0, np.float32))
    assert len([p for p in folder.iterdir() if p.suffix == ".distcp"]) == 1  # the earlier saves' data removed


def test_cli_converts_a_torch_file_to_dcp(tmp_path):
    model = torch.nn.Linear(4, 3)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    out = subprocess.run([EXE, "convert", str(tmp_path / "model.pt"), str(tmp_path / "dcp"), "--format", "dcp"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    other = torch.nn.Linear(4, 3)
    state = other.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(state, checkpoint_id=tmp_path / "dcp")
    _same(model.state_dict(), state)
