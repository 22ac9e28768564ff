"""What an attacker found after the hostile corpus passed, each kept as a test (issue 9's classes, new instances)."""

from __future__ import annotations

import json
import pathlib
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import tensorfile
from tensorfile.errors import FormatError, LimitError, UnsupportedTypeError

CLI = [sys.executable, "-m", "tensorfile.cli"]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120)


def one_line_error(out: subprocess.CompletedProcess) -> None:
    assert out.returncode in (1, 2), out
    assert "Traceback" not in out.stderr and out.stderr.count("\n") <= 1 and out.stderr.startswith("tensorfile: error:")


def torch_zip(path: pathlib.Path, pickled: bytes) -> pathlib.Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
    return path


def test_nested_slices_are_refused_not_freed_recursively(tmp_path):
    n = 200_000  # slice(slice(...)): CPython frees slices recursively, so this would crash the process on free
    body = b"\x80\x04cbuiltins\nslice\n\x94" + b"h\x00" * (n - 1) + b"NNN\x87R" + b"NN\x87R" * (n - 1) + b"."
    with pytest.raises(FormatError, match="a slice of"):
        tensorfile.load(torch_zip(tmp_path / "s.pt", body), framework="numpy")


def test_framework_numpy_never_imports_a_framework_and_the_default_takes_the_installed_one(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "x.tensorfile"
    tensorfile.save({"w": torch.arange(3.0)}, path)  # the record says "torch"
    torch.save({"w": torch.arange(3.0)}, tmp_path / "x.pt")
    code = (
        "import sys, tensorfile\n"
        f"a = tensorfile.load({str(path)!r}, framework='numpy')['w']\n"
        f"b = tensorfile.load({str(tmp_path / 'x.pt')!r}, framework='numpy')['w']\n"
        f"with tensorfile.open({str(path)!r}, framework='numpy') as f:\n"
        "    c = f['w']\n"
        "print(type(a).__module__, type(b).__module__, type(c).__module__, 'torch' in sys.modules)\n"
        f"print(type(tensorfile.load({str(path)!r})['w']).__module__)\n"  # installed: the recorded framework
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["numpy", "numpy", "numpy", "False", "torch"], out.stderr


def test_gguf_metadata_is_charged_as_python_objects(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "meta.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_array("big", list(range(300, 300 + 4_000_000)))  # 16 MB of int32s: 190 MiB as Python ints
    writer.add_tensor("w", np.arange(4, dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LimitError, match="values held as Python objects"):
        tensorfile.load(path)
    with pytest.raises(LimitError):
        tensorfile.open(path)
    assert tensorfile.load(path, limits=tensorfile.Limits(max_bytes=1 << 30))["w"].tolist() == [0, 1, 2, 3]


def test_a_header_of_millions_of_metadata_entries_is_refused_before_parsing(tmp_path):
    header = json.dumps({"__metadata__": {f"{i:x}": "" for i in range(300_000)},
                         "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()  # fmt: skip
    path = tmp_path / "meta.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    limits = tensorfile.Limits(max_bytes=16 << 20)  # 300,000 entries: about 40 MB parsed
    with pytest.raises(LimitError, match=r"3000\d\d JSON entries"):
        tensorfile.load(path, limits=limits)
    with pytest.raises(LimitError):
        tensorfile.open(path, limits=limits)
    assert tensorfile.load(path)["w"].shape == (1,)  # within the default budget of a 4 MB file


@pytest.mark.parametrize("descr", ["S", "U"])
def test_zero_size_dtypes_in_a_pickle_are_refused(tmp_path, descr):
    import pickle

    one, zero = f"{descr}1".encode(), f"{descr}0".encode()  # NumPy itself never pickles a 0-byte dtype
    pickled = pickle.dumps({"a": np.zeros(3, one.decode())}, protocol=2)
    assert pickled.count(one) == 1
    with pytest.raises(UnsupportedTypeError, match="items of 0 bytes"):
        tensorfile.load(torch_zip(tmp_path / "o.pt", pickled.replace(one, zero)), framework="numpy")
    np.save(tmp_path / "o.npy", np.array({"a": np.zeros(3, one.decode())}, dtype=object), allow_pickle=True)
    raw = (tmp_path / "o.npy").read_bytes()
    (tmp_path / "o.npy").write_bytes(raw[:128] + raw[128:].replace(one, zero))
    with pytest.raises(UnsupportedTypeError, match="items of 0 bytes"):
        tensorfile.load(tmp_path / "o.npy")


def test_text_that_is_not_unicode_is_refused(tmp_path):
    header = "{'descr': '<U1', 'fortran_order': False, 'shape': (2,), }"
    header += " " * (117 - len(header)) + "\n"
    path = tmp_path / "u.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\xff" * 8)
    with pytest.raises(FormatError, match="past U\\+10FFFF"):
        tensorfile.load(path)


def test_the_cli_stays_on_one_line(tmp_path):
    good = tmp_path / "good.tensorfile"
    tensorfile.save({"w": np.arange(100.0)}, good)
    bad = tmp_path / "bad.tensorfile"
    bad.write_bytes(good.read_bytes()[:-1] + b"\x01")
    one_line_error(cli("convert", bad, tmp_path / "x.npz"))  # a damaged file, read mapped while converting
    cyclic = torch_zip(tmp_path / "cyclic.pt", b"(lp0\nI1\nag0\na.")  # a list that holds itself
    out = cli("convert", cyclic, tmp_path / "y.npz")
    assert "Traceback" not in out.stderr and out.returncode in (0, 2), out.stderr
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for command in ("ls", "info", "verify", "cat"):
        one_line_error(cli(command, tmp_path / "a", *(["w"] if command == "cat" else [])))


@pytest.mark.parametrize("array", [np.array(["2020-01-01"], "M8[D]").astype("<M8"), np.zeros(2, "|V4"),
                                   np.array([1.5, 2.5], np.longdouble)])  # fmt: skip
def test_cat_and_diff_show_every_dtype_numpy_reads(tmp_path, array):
    np.save(tmp_path / "a.npy", array)
    out = cli("cat", tmp_path / "a.npy", "tensor")
    assert out.returncode == 0 and "Traceback" not in out.stderr and out.stdout.startswith("tensor:"), out.stderr
    out = cli("diff", tmp_path / "a.npy", tmp_path / "a.npy")
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_a_gguf_file_cut_after_open_raises_a_format_error(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("w", np.arange(4096, dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()
    with tensorfile.open(path, framework="numpy") as f:
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.truncate(size - 8192)
        with pytest.raises(FormatError, match="mapping tensor 'w'"):
            f["w"]


def test_a_layer_kind_that_does_not_fit_its_array_is_reported_not_transposed(tmp_path):
    torch = pytest.importorskip("torch")
    from tensorfile.parameters import PARAMETERS_KEY

    path = tmp_path / "p.safetensors"
    tensorfile.save({"weight": np.ones((2, 2), np.float32), "bias": np.zeros(2, np.float32)}, path,
                    metadata={PARAMETERS_KEY: json.dumps({"framework": "keras", "layers": {"weight": "Conv2D",
                                                                                             "bias": "Conv2D"}})})  # fmt: skip
    with pytest.raises(tensorfile.ParameterMismatchError):
        tensorfile.load_parameters(torch.nn.Linear(2, 2), path)


def test_a_record_naming_an_unknown_framework_loads_as_numpy_with_a_warning():
    from tensorfile.handoff import pick_adapter

    with pytest.warns(UserWarning, match="saved from caffe, which is not one tensorfile knows"):
        assert pick_adapter(None, "caffe", "x.tensorfile").name == "numpy"
    assert pick_adapter("numpy", "caffe", "x.tensorfile").name == "numpy"
