"""Tied weights: every name of a state_dict is a tensor of the file (docs/FORMAT.md, "Tied tensors")."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import tensorfile
from conftest import ROOT
from test_cli import run
from tests_support import rewrite_record
from tensorfile.errors import FormatError, IntegrityError

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")
from safetensors import safe_open  # noqa: E402
sys.path.insert(0, str(ROOT / "benchmarks"))
from models import gpt2_small  # noqa: E402


def test_a_tied_gpt2_small_loads_strictly_through_plain_safetensors(tmp_path):
    model = gpt2_small()
    path = tmp_path / "gpt2.tensorfile"
    tensorfile.save(model.state_dict(), path)
    plain = st.load_file(str(path))  # the reference reader: no tensorfile involved
    assert "lm_head.weight" in plain and "transformer.wte.weight" in plain
    clone = gpt2_small()
    with torch.no_grad():
        for p in clone.parameters():
            p.zero_()
    clone.load_state_dict(plain, strict=True)
    assert torch.equal(clone.lm_head.weight, model.transformer.wte.weight)
    assert clone.lm_head.weight is clone.transformer.wte.weight  # still tied in the clone
    assert sum(p.numel() for p in model.parameters()) == 124_439_808  # GPT-2-small's count


def test_save_parameters_of_a_tied_model_lists_both_names_everywhere(tmp_path):
    model = gpt2_small(layers=1, width=8, vocab=11, positions=4)
    path = tmp_path / "p.tensorfile"
    tensorfile.save_parameters(model, path)
    with tensorfile.open(path) as f:
        assert "lm_head.weight" in f.keys() and "transformer.wte.weight" in f.keys()
        np.testing.assert_array_equal(f["lm_head.weight"].numpy(), model.transformer.wte.weight.detach().numpy())
    listed = run("ls", str(path))
    assert listed.returncode == 0 and "lm_head.weight" in listed.stdout, listed.stderr
    clone = gpt2_small(layers=1, width=8, vocab=11, positions=4)
    report = tensorfile.load_parameters(clone, path)
    assert not report.missing_keys and not report.unexpected_keys
    assert torch.equal(clone.lm_head.weight, model.lm_head.weight)


def test_a_tied_name_loads_as_the_same_object_and_is_read_once(tmp_path):
    w = torch.arange(12.0).reshape(3, 4)
    tensorfile.save({"a": w, "b": w, "nested": [w]}, tmp_path / "t")
    back = tensorfile.load(tmp_path / "t")
    assert back["a"] is back["b"] is back["nested"][0]
    with safe_open(str(tmp_path / "t"), framework="numpy") as f:
        record = json.loads(f.metadata()["tensorfile"])
    assert record["tensors"]["b"]["tied_to"] == "a" and record["tensors"]["nested.0"]["tied_to"] == "a"
    assert "tied_to" not in record["tensors"]["a"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["tensors"]["b"].update(tied_to="zz"), "tied_to must name another tensor"),
        (lambda r: r["tensors"]["b"].update(tied_to="b"), "tied_to must name another tensor"),
        (lambda r: r["tensors"]["b"].update(tied_to=["a"] * 500), "tied_to must name another tensor"),
        (lambda r: r["tensors"]["b"].update(checksum="0" * 16), "differ"),
        (lambda r: r["tensors"]["a"].update(tied_to="b"), "not tied itself"),
    ],
)
def test_a_malformed_tie_is_refused(tmp_path, change, message):
    path = tmp_path / "t"
    a = np.ones(3, np.float32)
    tensorfile.save({"a": a, "b": a}, path)
    rewrite_record(path, change)
    with pytest.raises(FormatError) as err:
        tensorfile.load(path)
    assert message in str(err.value)
    assert len(str(err.value)) < 400  # a hostile value is quoted short


def test_a_damaged_tied_copy_is_caught_when_read_on_its_own(tmp_path):
    a = np.arange(4, dtype=np.float32)
    path = tmp_path / "t"
    tensorfile.save({"a": a, "b": a}, path)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # the last byte belongs to "b", the second copy
    path.write_bytes(bytes(raw))
    with tensorfile.open(path, verify=True) as f, pytest.raises(IntegrityError):
        f["b"]
    checked = run("verify", str(path))
    assert checked.returncode == 1 and "'b'" in checked.stdout + checked.stderr
    with pytest.raises(IntegrityError, match="'b'"):  # load reads "a" once, and checks "b"'s stored copy
        tensorfile.load(path)


def test_load_checks_the_stored_copy_of_a_tied_name(tmp_path):
    """A damaged or swapped second copy must not load as the first one's values (two readers would disagree)."""
    a = np.arange(4, dtype=np.float32)
    path = tmp_path / "t"
    tensorfile.save({"a": a, "b": a}, path)
    raw = bytearray(path.read_bytes())
    raw[-16:] = np.full(4, 666, np.float32).tobytes()  # "b"'s copy only
    path.write_bytes(bytes(raw))
    assert st.load_file(str(path))["b"].tolist() == [666.0] * 4  # what a plain reader sees
    with pytest.raises(IntegrityError, match="'b'"):
        tensorfile.load(path, framework="numpy")


def test_a_record_that_ties_other_bytes_to_a_tensor_is_caught_on_load(tmp_path):
    path = tmp_path / "t"
    tensorfile.save({"a": np.ones(3, np.float32), "e": np.zeros(3, np.float32)}, path)

    def tie(record):
        record["tensors"]["e"] = {**record["tensors"]["a"], "tied_to": "a"}

    rewrite_record(path, tie)
    with pytest.raises(IntegrityError, match="'e'"):
        tensorfile.load(path, framework="numpy")
