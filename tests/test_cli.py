"""The command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np

import tensorfile
from conftest import FIXTURES

EXE = os.path.join(os.path.dirname(sys.executable), "tensorfile")


def run(*args):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_ls_table(tmp_path):
    tensorfile.save({"b.weight": np.zeros((256, 20), np.float32), "a": np.arange(3, dtype=np.int8)}, tmp_path / "m")
    out = run("ls", tmp_path / "m")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DTYPE", "SHAPE", "BYTES"]
    assert lines[1].split() == ["a", "int8", "(3,)", "3"]
    assert lines[2].split() == ["b.weight", "float32", "(256,", "20)", "20480"]
    assert lines[3] == "2 tensors, 20483 bytes (20.0 KiB)"
    assert len({len(line) for line in lines[:3]}) == 1  # aligned columns


def test_ls_json_reference_file():
    out = run("ls", "--json", FIXTURES / "safetensors" / "dtypes.safetensors")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert by_name["bf16"] == {"name": "bf16", "dtype": "bfloat16", "shape": [2, 2], "nbytes": 8}
    assert by_name["scalar"]["shape"] == []
    assert doc["total"]["tensors"] == len(doc["tensors"]) == 10
    assert doc["metadata"]["format"] == "pt"


def test_errors_are_one_line_exit_2(tmp_path):
    out = run("ls", tmp_path / "missing")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "no such file" in out.stderr
    out = run("ls", FIXTURES / "hostile" / "st_overlap.safetensors")
    assert out.returncode == 2 and "overlaps" in out.stderr and out.stderr.strip().count("\n") == 0
    out = run("ls", FIXTURES / "hostile" / "pickle_payload.pt")
    assert out.returncode == 2 and "refuses the global" in out.stderr and out.stderr.strip().count("\n") == 0


def test_help_and_version():
    out = run("--help")
    assert out.returncode == 0 and "ls" in out.stdout
    out = run("--version")
    assert out.returncode == 0 and tensorfile.__version__ in out.stdout


def test_folder_fifo_and_odd_names(tmp_path):
    out = run("ls", tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "folder" in out.stderr
    os.mkfifo(tmp_path / "fifo")
    out = run("ls", tmp_path / "fifo")
    assert out.returncode == 2 and "not a regular file" in out.stderr
    tensorfile.save({"": np.zeros(1), "a\nb": np.ones(2)}, tmp_path / "odd")
    out = run("ls", tmp_path / "odd")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert len(lines) == 4 and lines[1].startswith("''") and lines[2].startswith("'a\\nb'")


def test_ls_shows_metadata_and_singular(tmp_path):
    tensorfile.save(np.zeros(2, np.float16), tmp_path / "one", metadata={"run": "baseline"})
    out = run("ls", tmp_path / "one")
    assert out.stdout.splitlines()[-2:] == ["metadata run: baseline", "1 tensor, 4 bytes (4 B)"]
    (tmp_path / "notes.txt").write_text("just some text, not tensors\n")
    out = run("ls", tmp_path / "notes.txt")
    assert out.returncode == 2 and "looks like a text file" in out.stderr


def test_ls_escapes_metadata(tmp_path):
    tensorfile.save(np.zeros(1), tmp_path / "m", metadata={"note": "hi\nfake   float32  (9,)  36", "k\x1b[31m": "v"})
    out = run("ls", tmp_path / "m")
    lines = out.stdout.splitlines()
    assert len(lines) == 5 and "metadata note: 'hi\\nfake" in out.stdout and "\x1b" not in out.stdout


def test_ls_reads_other_tools_files():
    out = run("ls", FIXTURES / "torch" / "mlp.params")
    assert out.returncode == 0 and "hidden.weight  float32  (256, 20)  20480" in out.stdout
    out = run("ls", "--json", FIXTURES / "mxnet" / "mlp.params")
    assert {t["name"] for t in json.loads(out.stdout)["tensors"]} == {"hidden.bias", "hidden.weight", "output.bias", "output.weight"}


def test_info(tmp_path):
    out = run("info", FIXTURES / "torch" / "mlp.params")
    assert out.returncode == 0 and "format:    PyTorch torch.save (zip)" in out.stdout and "checksums: no" in out.stdout
    tensorfile.save({"a": np.ones(3)}, tmp_path / "t", metadata={"k": "v"})
    doc = json.loads(run("info", "--json", tmp_path / "t").stdout)
    assert doc["checksums"] is True and doc["tensors"] == 1 and doc["metadata"] == {"k": "v"} and "tensorfile" in doc["format"]
    assert run("info", tmp_path / "missing").returncode == 2


def test_verify_exit_codes(tmp_path):
    tensorfile.save({"a": np.arange(100.0)}, tmp_path / "good")
    out = run("verify", tmp_path / "good")
    assert out.returncode == 0 and out.stdout.startswith("OK: 1 tensor, checksums verified")
    data = bytearray((tmp_path / "good").read_bytes())
    data[-5] ^= 1
    (tmp_path / "bad").write_bytes(bytes(data))
    out = run("verify", tmp_path / "bad")
    assert out.returncode == 1 and "FAILED" in out.stdout and "'a'" in out.stdout
    assert run("verify", tmp_path / "missing").returncode == 2


def test_cat(tmp_path):
    tensorfile.save({"w": np.arange(6, dtype=np.int16).reshape(2, 3)}, tmp_path / "c")
    out = run("cat", tmp_path / "c", "w")
    assert out.returncode == 0 and out.stdout.splitlines() == ["w: int16 (2, 3)", "[[0 1 2]", " [3 4 5]]"]
    out = run("cat", tmp_path / "c", "nope")
    assert out.returncode == 2 and "no tensor or value named 'nope'" in out.stderr


def test_diff(tmp_path):
    tensorfile.save({"a": np.ones(3), "b": np.zeros(2), "c": np.ones(2)}, tmp_path / "x")
    tensorfile.save({"a": np.ones(3) + 1e-9, "b": np.zeros(3), "d": np.ones(1)}, tmp_path / "y")
    out = run("diff", tmp_path / "x", tmp_path / "y")
    assert out.returncode == 1
    assert "only in A: c" in out.stdout and "only in B: d" in out.stdout and "changed:   b: float64 [2] -> float64 [3]" in out.stdout
    assert "differs:   a:" in out.stdout
    doc = json.loads(run("diff", "--json", "--atol", "1e-6", tmp_path / "x", tmp_path / "y").stdout)
    assert doc["compared"][0]["same"] and doc["only_in_a"] == ["c"] and doc["different"]
    tensorfile.save({"a": np.ones(3) + 1e-9}, tmp_path / "z")
    tensorfile.save({"a": np.ones(3)}, tmp_path / "w")
    assert run("diff", "--atol", "1e-6", tmp_path / "z", tmp_path / "w").returncode == 0
    assert run("diff", tmp_path / "z", tmp_path / "w").returncode == 1


def test_convert_every_direction_round_trips(tmp_path):
    """torch -> tensorfile -> npz -> mxnet -> torch -> safetensors: the same tensors every step (diff exits 0)."""
    src = FIXTURES / "torch" / "mlp.params"
    steps = [("a.tf", None), ("b.npz", None), ("c.params", "mxnet"), ("d.pt", None), ("e.safetensors", "safetensors"),
             ("f.bin", "mxnet-np")]  # fmt: skip
    previous = src
    for name, fmt in steps:
        out = run("convert", previous, tmp_path / name, *(["--format", fmt] if fmt else []))
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"{previous} -> {tmp_path / name} (") and "4 tensors" in out.stdout
        same = run("diff", src, tmp_path / name)
        assert same.returncode == 0 and same.stdout.startswith("same: 4 tensors"), same.stdout + same.stderr
        previous = tmp_path / name
    assert "(npz)" in run("convert", src, tmp_path / "x.npz").stdout  # the format follows the suffix
    with zipfile.ZipFile(tmp_path / "d.pt") as zf:
        assert zf.namelist()[0].endswith("data.pkl")
    assert (tmp_path / "f.bin").read_bytes()[:8] == (0x112).to_bytes(8, "little")


def test_convert_flattens_for_flat_formats_and_shards(tmp_path):
    out = run("convert", FIXTURES / "torch" / "checkpoint.pt", tmp_path / "ck.npz")
    assert out.returncode == 0, out.stderr
    assert "nested structure flattened" in out.stderr and "left out" in out.stderr
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as z:
        assert "model.hidden.weight" in z.files and "optimizer.state.0.exp_avg" in z.files
    out = run("convert", FIXTURES / "torch" / "mlp.params", tmp_path / "model.safetensors", "--max-shard-size", "20000")
    assert out.returncode == 0, out.stderr
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 2 and index["metadata"]["total_size"] == 31784
    assert run("diff", FIXTURES / "torch" / "mlp.params", tmp_path / "model.safetensors").returncode == 0
    listing = json.loads(run("ls", "--json", tmp_path / "model.safetensors.index.json").stdout)
    assert listing["total"] == {"tensors": 4, "nbytes": 31784}


def test_convert_errors_exit_2_and_keep_the_old_file(tmp_path):
    (tmp_path / "old.npz").write_bytes(b"keep me")
    out = run("convert", FIXTURES / "torch" / "dtypes.pt", tmp_path / "old.npz")  # bfloat16 has no .npy dtype
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "bfloat16" in out.stderr
    assert (tmp_path / "old.npz").read_bytes() == b"keep me" and os.listdir(tmp_path) == ["old.npz"]
    out = run("convert", tmp_path / "missing", tmp_path / "x")
    assert out.returncode == 2 and "no such file" in out.stderr
    out = run("convert", FIXTURES / "hostile" / "pickle_payload.pt", tmp_path / "x")
    assert out.returncode == 2 and "system" in out.stderr and not (tmp_path / "x").exists()
    out = run("convert", FIXTURES / "torch" / "mlp.params", tmp_path / "x", "--format", "onnx")
    assert out.returncode == 2 and "onnx" in out.stderr
    out = run("convert", FIXTURES / "torch" / "mlp.params", tmp_path / "y", "--max-shard-size", "lots")
    assert out.returncode == 2 and "max_shard_size" in out.stderr


def test_gguf_ls_info_cat_convert(tmp_path):
    gguf = __import__("pytest").importorskip("gguf")
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_uint32("llama.block_count", 2)
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.add_tensor("q", np.zeros((1, 34), np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()
    listing = json.loads(run("ls", "--json", tmp_path / "m.gguf").stdout)
    assert {t["name"]: t["dtype"] for t in listing["tensors"]} == {"token_embd.weight": "float32", "q": "Q8_0"}
    assert listing["metadata"]["llama.block_count"] == "2"
    info = json.loads(run("info", "--json", tmp_path / "m.gguf").stdout)
    assert info["format"] == "GGUF" and info["tensors"] == 2
    out = run("cat", tmp_path / "m.gguf", "token_embd.weight")  # read alone, beside a quantized tensor
    assert out.returncode == 0 and out.stdout.splitlines()[0] == "token_embd.weight: float32 (3, 4)", out.stderr
    assert "[ 8.  9. 10. 11.]]" in out.stdout
    out = run("cat", tmp_path / "m.gguf", "q")
    assert out.returncode == 2 and "Q8_0" in out.stderr and out.stderr.count("\n") == 1
    out = run("convert", tmp_path / "m.gguf", tmp_path / "m.tf")
    assert out.returncode == 2 and "tensor 'q' has type Q8_0 (quantized)" in out.stderr


def test_convert_keeps_tensors_whose_dotted_names_collide(tmp_path):
    tensorfile.save({"a.b": np.zeros(2, np.float32), "a": {"b": np.ones(2, np.float32)}, "n": 3}, tmp_path / "c.tf")
    out = run("convert", tmp_path / "c.tf", tmp_path / "c.npz")
    assert out.returncode == 0 and "2 tensors" in out.stdout
    assert out.stderr.strip() == f"note: {tmp_path / 'c.tf'}: nested structure flattened to 2 dotted names; 1 value other than tensors left out"
    with np.load(tmp_path / "c.npz") as z:
        assert sorted(z.files) == ["a.b", "a.b#1"] and z["a.b"].sum() + z["a.b#1"].sum() == 2


def test_diff_nan_inf_and_strings(tmp_path):
    tensorfile.save({"x": np.array([np.nan, 1.0, np.inf, -np.inf], np.float32)}, tmp_path / "a")
    tensorfile.save({"x": np.array([np.nan, 1.0, np.inf, np.inf], np.float32)}, tmp_path / "b")
    out = run("diff", tmp_path / "a", tmp_path / "a")
    assert out.returncode == 0 and out.stderr == "" and out.stdout.startswith("same: 1 tensors")
    doc = json.loads(run("diff", "--json", tmp_path / "a", tmp_path / "b").stdout)
    assert doc["different"] and doc["compared"] == [{"name": "x", "max_abs": "inf", "max_rel": "inf", "same": False}]
    real = FIXTURES / "real" / "scipy-csc_py3.npz"  # holds a string array
    out = run("diff", real, real)
    assert out.returncode == 0 and out.stdout.startswith("same: 5 tensors"), out.stderr


def test_verify_says_when_a_file_is_not_tensors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, these are notes\n")
    for target in (tmp_path / "notes.txt", tmp_path, "/dev/null"):
        out = run("verify", target)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, (target, out.stdout, out.stderr)


def test_verify_checks_the_crc_of_a_torch_zip(tmp_path):
    data = bytearray((FIXTURES / "torch" / "mlp.params").read_bytes())
    with zipfile.ZipFile(FIXTURES / "torch" / "mlp.params") as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data/1"))
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little"), int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")  # fmt: skip
    data[info.header_offset + 30 + name_len + extra_len + 5] ^= 0xFF
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    good = run("verify", FIXTURES / "torch" / "mlp.params")
    assert good.returncode == 0 and good.stdout == "OK: 4 tensors, CRC-32 of every zip member verified\n"
    bad = run("verify", tmp_path / "bad.pt")
    assert bad.returncode == 1 and "member 'mlp/data/1' fails its CRC-32 check" in bad.stdout


def test_json_for_verify_cat_convert_and_sharded_checksums(tmp_path):
    import torch

    tensorfile.save({f"w{i}": torch.ones(100) * i for i in range(4)}, tmp_path / "model.safetensors", max_shard_size=800)
    info = json.loads(run("info", "--json", tmp_path / "model.safetensors").stdout)
    assert info["format"] == "sharded safetensors index" and info["checksums"] is True and info["tensors"] == 4
    doc = json.loads(run("verify", "--json", tmp_path / "model.safetensors").stdout)
    assert doc == {"file": str(tmp_path / "model.safetensors.index.json"), "ok": True, "tensors": 4,
                   "detail": "4 tensors, checksums verified"}  # fmt: skip
    tensorfile.save({"c": np.array([1 + 2j], np.complex64), "n": np.array([np.nan, -np.inf, 1.5], np.float32)}, tmp_path / "x")
    assert json.loads(run("cat", "--json", tmp_path / "x", "c").stdout)["values"] == [[1.0, 2.0]]
    assert json.loads(run("cat", "--json", tmp_path / "x", "n").stdout) == {"name": "n", "dtype": "float32", "shape": [3],
                                                                            "values": ["nan", "-inf", 1.5]}  # fmt: skip
    done = json.loads(run("convert", "--json", tmp_path / "x", tmp_path / "y.pt").stdout)
    assert done == {"src": str(tmp_path / "x"), "dst": str(tmp_path / "y.pt"), "format": "torch", "sharded": False,
                    "tensors": 2, "nbytes": 20}  # fmt: skip
    broken = json.loads(run("verify", "--json", FIXTURES / "hostile" / "st_truncated.safetensors").stdout)
    assert broken["ok"] is False and "truncated" in broken["detail"]


def test_convert_refuses_suffixes_it_cannot_write_and_bin_is_torch(tmp_path):
    for suffix in (".npy", ".h5", ".keras", ".gguf", ".json"):
        out = run("convert", FIXTURES / "torch" / "mlp.params", tmp_path / f"x{suffix}")
        assert out.returncode == 2 and f"reads {suffix} files (" in out.stderr and "but does not write them; choose a format with --format" in out.stderr
    assert not os.listdir(tmp_path)
    assert "(torch)" in run("convert", FIXTURES / "torch" / "mlp.params", tmp_path / "pytorch_model.bin").stdout
    out = run("ls", tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == f"tensorfile: error: {tmp_path}: is a folder, not a file"


def test_convert_writes_params_as_tensorfile_unless_mxnet_is_asked_and_refuses_its_own_source(tmp_path):
    out = run("convert", FIXTURES / "torch" / "mlp.params", tmp_path / "mlp.params")
    assert out.returncode == 0 and "(tensorfile)" in out.stdout
    assert tensorfile.open(tmp_path / "mlp.params").has_record  # the chapter's name, tensorfile's format
    out = run("convert", FIXTURES / "torch" / "mlp.params", tmp_path / "mx.params", "--format", "mxnet")
    assert out.returncode == 0 and (tmp_path / "mx.params").read_bytes()[:8] == (0x112).to_bytes(8, "little")
    before = (tmp_path / "mlp.params").read_bytes()
    for same in (tmp_path / "mlp.params", tmp_path / "." / "mlp.params"):
        out = run("convert", tmp_path / "mlp.params", same, "--format", "npz")
        assert out.returncode == 2 and "is SRC itself" in out.stderr
    assert (tmp_path / "mlp.params").read_bytes() == before
