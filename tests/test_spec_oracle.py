"""An independent reader written from docs/FORMAT.md alone (tests/spec_reader.py) agrees with tensorfile."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import tensorfile
from conftest import FIXTURES
from spec_reader import read_spec
from strategies import assert_same, native, numpy_arrays, trees

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(trees(numpy_arrays()))
def test_spec_reader_reads_what_save_writes(obj):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f")
        tensorfile.save(obj, path, metadata={"k": "v"})
        value, metadata = read_spec(path)
        assert metadata == {"k": "v"}
        assert_same(native(obj), value)
        assert_same(tensorfile.load(path), value)


def test_spec_reader_shared_views_and_torch(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(12.0).reshape(3, 4)
    obj = {"base": base, "row": base[1], "t": base.t(), "p": torch.nn.Parameter(torch.ones(2)), "bf": torch.ones(2, dtype=torch.bfloat16)}
    obj["tied"] = obj["p"]
    tensorfile.save(obj, tmp_path / "f")
    value, _ = read_spec(tmp_path / "f")
    assert value["tied"] is value["p"]
    value["base"][1, 0] = -1
    assert value["row"][0] == -1 and value["t"][0, 1] == -1
    assert value["bf"].dtype.name == "bfloat16"


@pytest.mark.parametrize("name", ["dtypes.safetensors", "numpy.safetensors"])
def test_spec_reader_agrees_on_reference_files(name):
    value, _ = read_spec(FIXTURES / "safetensors" / name)
    ours = tensorfile.load(FIXTURES / "safetensors" / name)
    assert list(value) == list(ours)
    for k in value:
        assert value[k].dtype == ours[k].dtype and value[k].tobytes() == ours[k].tobytes()


def test_both_readers_refuse_a_damaged_header(tmp_path):
    tensorfile.save({"a": np.arange(4, dtype=np.float32)}, tmp_path / "f")
    raw = bytearray((tmp_path / "f").read_bytes())
    i = raw.index(b'"F32"')
    raw[i + 1] = ord("I")  # F32 -> I32: same size, so only the header checksum can tell
    (tmp_path / "f").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="header checksum"):
        read_spec(tmp_path / "f")
    with pytest.raises(tensorfile.IntegrityError, match="header is corrupt"):
        tensorfile.load(tmp_path / "f")
