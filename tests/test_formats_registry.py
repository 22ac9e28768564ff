"""One registry of formats (tensorfile.formats) and one budget (tensorfile.Limits) for every reader."""

from __future__ import annotations

import json
import pathlib
import re
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import tensorfile
from tensorfile import formats
from tensorfile.cli import convert_command
from tensorfile.formats.base import Probe

SRC = pathlib.Path(tensorfile.__file__).parent
FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def test_each_format_is_defined_in_one_module_and_named_nowhere_else():
    defined: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        for name in re.findall(r'Format\(\s*"([a-z0-9-]+)"', path.read_text()):
            defined.setdefault(name, []).append(path.relative_to(SRC).as_posix())
    assert sorted(defined) == sorted(f.name for f in formats.FORMATS)
    assert all(len(modules) == 1 and modules[0].startswith("formats/") for modules in defined.values()), defined
    # nothing outside formats/ compares a format's title, as lazy.open and the CLI once did
    for path in SRC.rglob("*.py"):
        if "formats" not in path.parts:
            text = path.read_text()
            for fmt in formats.FORMATS:
                if fmt.title not in ("safetensors", "GGUF"):
                    assert f'"{fmt.title}"' not in text, (path, fmt.title)


def test_the_cli_takes_its_format_choices_and_suffix_rules_from_the_registry(tmp_path):
    choices = next(p for p in convert_command.params if p.name == "fmt").type.choices
    assert list(choices) == formats.written() == ["tensorfile", "safetensors", "torch", "npz", "mxnet", "mxnet-np", "dcp"]
    assert formats.by_suffix("x.pt") is formats.get("torch") and formats.by_suffix("m.weights.h5") is formats.get("hdf5")
    assert formats.by_suffix("x.PARAMS").name == "mxnet" and formats.by_suffix("x.unknown") is None
    with pytest.raises(ValueError, match="unknown format 'pickle'"):
        formats.get("pickle")
    with pytest.raises(ValueError, match="unknown format"):
        tensorfile.save({"a": np.ones(2)}, tmp_path / "x", format="gguf")  # read, never written


@pytest.mark.parametrize(
    "fixture, name",
    [
        ("torch/mlp.params", "torch"),
        ("torch/mlp_legacy.pt", "torch-legacy"),
        ("numpy/plain.npy", "npy"),
        ("numpy/arrays.npz", "npz"),
        ("mxnet/x-file", "mxnet"),
        ("tensorflow/mlp.weights.h5", "hdf5"),
        ("tensorflow/seq.keras", "keras"),
        ("safetensors/sharded/model.safetensors.index.json", "sharded"),
        ("safetensors/numpy.safetensors", "safetensors"),
    ],
)
def test_every_fixture_is_sniffed_as_its_format(fixture, name):
    path = FIXTURES / fixture
    assert formats.detect(Probe.of(str(path))).name == name


def test_the_fixtures_of_each_kind_are_all_claimed():
    seen = {formats.detect(Probe.of(str(p))).name for p in FIXTURES.rglob("*") if p.is_file() and "hostile" not in p.parts
            and "make" not in p.parts and p.suffix not in (".json", ".md", ".txt", ".py", ".sh") and formats.detect(Probe.of(str(p)))}  # fmt: skip
    assert {"torch", "torch-legacy", "npy", "npz", "mxnet", "hdf5", "keras", "safetensors"} <= seen


def test_a_safetensors_file_whose_length_looks_like_a_legacy_pickle_is_read_as_safetensors(tmp_path):
    n = struct.unpack("<Q", b"\x80\x02\x8a\x00\x00\x00\x00\x00")[0]  # 9,044,608: a plausible header length
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", n) + header + b" " * (n - len(header)) + np.array([1.5, -2], "<f4").tobytes())
    assert path.read_bytes()[:3] == b"\x80\x02\x8a"
    assert formats.detect(Probe.of(str(path))).name == "safetensors"
    np.testing.assert_array_equal(tensorfile.load(path)["w"], [1.5, -2])
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    np.testing.assert_array_equal(safetensors_numpy.load_file(str(path))["w"], [1.5, -2])  # the reference agrees


def test_limits_default_and_validation():
    limits = tensorfile.Limits()
    assert limits.allowed(1000) == 4000 + (64 << 20) and tensorfile.Limits(max_bytes=5).allowed(10**9) == 5
    for bad in ({"max_bytes": -1}, {"max_depth": "deep"}, {"slack_bytes": True}):
        with pytest.raises(ValueError, match="non-negative number"):
            tensorfile.Limits(**bad)
    with pytest.raises(TypeError, match="tensorfile.Limits"):
        tensorfile.load("x", limits={"max_bytes": 5})


def _stride0_views(tmp_path, count: int) -> pathlib.Path:
    """A torch file of ``count`` views of one 4-byte storage, each claiming 2**28 floats (1 GiB)."""
    from tensorfile.safepickle.write import Call, Global, PersistentId, PickleWriter

    pid = PersistentId(("storage", Global("torch", "FloatStorage"), "0", "cpu", 1))
    view = Call(Global("torch._utils", "_rebuild_tensor_v2"), (pid, 0, (2**28,), (0,), False, Call(Global("collections", "OrderedDict"), ())))
    path = tmp_path / f"views{count}.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", PickleWriter().dumps({f"v{i}": view for i in range(count)}))
        zf.writestr("archive/data/0", b"\0\0\x80?")
    return path


def test_every_reader_charges_one_budget_and_a_trusted_file_can_raise_it(tmp_path):
    path = _stride0_views(tmp_path, 4)
    with pytest.raises(tensorfile.LimitError, match=r"views4.pt: tensor of shape \(268435456,\).*Limits.max_bytes|Limits defaults"):
        tensorfile.load(path, framework="numpy")
    with tensorfile.open(path, framework="numpy") as f:  # opening reads the header only: the charge comes with the read
        assert f.info("v3").nbytes == 1 << 30
        with pytest.raises(tensorfile.LimitError, match=r"views4.pt: tensor 'v0'.*\(268435456,\)"):
            f["v0"]
    small = _stride0_views(tmp_path, 1)
    back = tensorfile.load(small, framework="numpy", limits=tensorfile.Limits(max_bytes=(1 << 30) + (1 << 20)))
    assert back["v0"].shape == (2**28,) and back["v0"].strides == (0,) and float(back["v0"][12345]) == 1.0
    cli = [sys.executable, "-m", "tensorfile.cli"]
    out = subprocess.run([*cli, "ls", str(small)], capture_output=True, text=True)
    assert out.returncode == 0 and "v0    float32  (268435456,)  1073741824" in out.stdout
    out = subprocess.run([*cli, "cat", str(small), "v0"], capture_output=True, text=True)
    assert out.returncode == 2 and "LimitError" not in out.stderr and "--max-bytes" in out.stderr
    out = subprocess.run([*cli, "cat", "--max-bytes", "2GiB", str(small), "v0"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("v0: float32 (268435456,)\n[1. 1. 1. ... 1. 1. 1.]")


def test_cli_limits_do_not_leak_from_one_command_to_the_next(tmp_path):
    from tensorfile.cli import _LIMITS, main

    path = _stride0_views(tmp_path, 1)  # needs 1 GiB: refused by default
    main(["cat", "--max-bytes", "2GiB", str(path), "v0"], standalone_mode=False)  # allowed: prints it
    assert _LIMITS[0].max_bytes == 2 << 30
    with pytest.raises(SystemExit) as second:
        main(["cat", str(path), "v0"], standalone_mode=False)
    assert second.value.code == 2 and _LIMITS[0].max_bytes is None
