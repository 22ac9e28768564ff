"""tensorfile.open() on every readable file: sharded indexes and GGUF lazily, other tools' files read once."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import tensorfile
from conftest import FIXTURES, assert_matches, expected
from tensorfile.errors import IntegrityError, UnsupportedTypeError

INDEX = FIXTURES / "safetensors" / "sharded" / "model.safetensors.index.json"


def test_sharded_index_opens_lazily():
    spec = expected("safetensors")["safetensors/sharded/model.safetensors.index.json"]["value"]["items"]
    with tensorfile.open(INDEX) as f:
        assert f.keys() == [f"layers.{i}.{k}" for i in range(6) for k in ("bias", "weight")]
        assert not f.has_record and f.format == "sharded" and f.title == "sharded safetensors index"
        info = f.info("layers.3.weight")
        assert info.dtype == spec["layers.3.weight"]["dtype"] and list(info.shape) == spec["layers.3.weight"]["shape"]
        assert info.offset > 8  # inside its shard
        for name, tensor in spec.items():
            assert_matches(f[name], tensor, name)
        rows = f.slice("layers.3.weight")[1:3]
        assert np.array_equal(rows, np.asarray(f["layers.3.weight"])[1:3])
        assert f.load().keys() == spec.keys()
        with pytest.raises(KeyError, match="no tensor named 'nope'"):
            f["nope"]


def test_sharded_save_opens_by_its_base_name_and_verifies(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {f"w{i}": torch.full((100,), float(i)) for i in range(6)}
    tensorfile.save(sd, tmp_path / "model.safetensors", max_shard_size=800)
    with tensorfile.open(tmp_path / "model.safetensors") as f:  # only the index and shards exist
        assert f.keys() == list(sd) and isinstance(f["w4"], torch.Tensor) and torch.equal(f["w4"], sd["w4"])
        assert f.metadata["total_size"] == "2400"
    shard = tmp_path / "model-00002-of-00003.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with tensorfile.open(tmp_path / "model.safetensors", verify=True) as f:
        f["w0"]
        with pytest.raises(IntegrityError, match="w3"):
            f["w3"]


def test_gguf_opens_lazily(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.name", "tiny")
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b"])
    weights = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    w.add_tensor("blk.0.w", weights)
    w.add_tensor("h", np.array([1.5, -2], np.float16))
    w.add_tensor("q", np.zeros((2, 34), np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file()
    w.close()
    with tensorfile.open(path, framework="numpy") as f:
        assert f.keys() == ["blk.0.w", "h", "q"] and f.format == "gguf" and f.title == "GGUF"
        assert f.metadata["general.name"] == "tiny" and f.metadata["tokenizer.ggml.tokens"] == '["<s>", "a", "b"]'
        assert f.info("q").dtype == "Q8_0" and f.info("q").shape == (2, 32) and f.info("q").nbytes == 68
        w0 = f["blk.0.w"]
        assert isinstance(w0.base, np.memmap) or isinstance(w0, np.memmap) or w0.base is not None
        assert np.array_equal(w0, weights) and f["h"].dtype == np.float16
        w0[0, 0, 0] = 99  # copy-on-write: the file is unchanged
        assert f.slice("blk.0.w")[1].tolist() == weights[1].tolist()
        with pytest.raises(UnsupportedTypeError, match="'q' has type Q8_0"):
            f["q"]
    assert tensorfile.open(path, framework="numpy")["blk.0.w"][0, 0, 0] == 0


@pytest.mark.parametrize("name", ["torch/checkpoint.pt", "torch/mlp_legacy.pt", "mxnet/mlp.params", "tensorflow/mlp.weights.h5",
                                  "tensorflow/seq.keras", "numpy/arrays.npz", "numpy/plain.npy"])  # fmt: skip
def test_other_tools_files_open_by_dotted_name(name):
    value = tensorfile.load(FIXTURES / name, framework="numpy")
    with tensorfile.open(FIXTURES / name, framework="numpy") as f:
        assert not f.has_record and f.metadata == {}
        flat = tensorfile.tree.flat_arrays(value)
        assert f.keys() == list(flat)
        for key, array in flat.items():
            info = f.info(key)
            assert (info.dtype, info.shape, info.nbytes, info.checksum) == (array.dtype.name, array.shape, array.nbytes, None)
            assert np.array_equal(f[key], array) and f[key].dtype == array.dtype
        assert type(f.load()) is type(value)


def test_torch_file_opens_as_torch_when_installed():
    torch = pytest.importorskip("torch")
    with tensorfile.open(FIXTURES / "torch" / "checkpoint.pt") as f:
        assert isinstance(f["model.hidden.weight"], torch.Tensor)
        assert f.slice("model.hidden.weight")[:2].shape == (2, 20)


HOSTILE = sorted(k.split("/", 1)[1] for k in expected("hostile")["files"] if k.startswith("hostile/") and "/" not in k.split("/", 1)[1])


@pytest.mark.parametrize("name", HOSTILE)
def test_open_refuses_every_hostile_file(name):
    start = time.perf_counter()
    with pytest.raises(tensorfile.TensorFileError) as info:
        with tensorfile.open(FIXTURES / "hostile" / name) as f:
            for key in f.keys():
                f[key]
    assert time.perf_counter() - start < 1.0 and str(FIXTURES / "hostile" / name) in str(info.value)
    assert not os.path.exists(expected("hostile")["marker"])


def test_open_refuses_an_index_that_leaves_its_folder():
    with pytest.raises(tensorfile.FormatError, match="not a file in the index's folder"):
        tensorfile.open(FIXTURES / "hostile" / "escape_index" / "model.safetensors.index.json")
