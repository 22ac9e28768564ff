"""The command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
    assert out.returncode == 0 and out.stdout.startswith("OK: 1 tensors, checksums verified")
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
    assert out.returncode == 2 and "no tensor named 'nope'" in out.stderr


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
