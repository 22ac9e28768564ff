"""cat and diff see the values of a checkpoint that are not tensors: an epoch, a step, a learning rate (issue 12)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tensorfile
from test_cli import run


def _checkpoint(path, epoch, lr=0.1):
    tensorfile.save({"w": np.ones(3, np.float32), "epoch": epoch, "optimizer": {"lr": lr, "name": "adam"}}, path)


def test_cat_prints_a_value_that_is_not_a_tensor(tmp_path):
    _checkpoint(tmp_path / "c", 3)
    out = run("cat", tmp_path / "c", "epoch")
    assert out.returncode == 0 and out.stdout.strip() == "epoch: int 3"
    out = run("cat", "--json", tmp_path / "c", "optimizer.lr")
    assert json.loads(out.stdout) == {"name": "optimizer.lr", "type": "float", "value": 0.1}
    out = run("cat", tmp_path / "c", "nope")
    assert out.returncode == 2 and "no tensor or value named 'nope'; it has w, epoch, optimizer.lr, optimizer.name" in out.stderr


def test_cat_of_a_torch_checkpoint_value(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(2), "epoch": 7, "best": None}, tmp_path / "c.pt")
    assert run("cat", tmp_path / "c.pt", "epoch").stdout.strip() == "epoch: int 7"
    assert run("cat", tmp_path / "c.pt", "best").stdout.strip() == "best: NoneType None"


def test_diff_reports_values_that_differ(tmp_path):
    _checkpoint(tmp_path / "a", 3)
    _checkpoint(tmp_path / "b", 4, lr=0.05)
    out = run("diff", tmp_path / "a", tmp_path / "b")
    assert out.returncode == 1
    assert "changed:   epoch: 3 -> 4" in out.stdout and "changed:   optimizer.lr: 0.1 -> 0.05" in out.stdout
    report = json.loads(run("diff", "--json", tmp_path / "a", tmp_path / "b").stdout)
    assert report["different"] and {c["name"] for c in report["changed"]} == {"epoch", "optimizer.lr"}
    same = run("diff", tmp_path / "a", tmp_path / "a")
    assert same.returncode == 0 and "same: 1 tensors within atol=0.0, rtol=0.0 and 3 other values" in same.stdout


def test_diff_sees_a_value_only_on_one_side_and_a_value_become_a_tensor(tmp_path):
    tensorfile.save({"w": np.ones(2), "epoch": 1, "note": "x"}, tmp_path / "a")
    tensorfile.save({"w": np.ones(2), "epoch": np.int64(1)}, tmp_path / "b")
    out = run("diff", tmp_path / "a", tmp_path / "b")
    assert out.returncode == 1 and "only in A: note" in out.stdout and "changed:   epoch: a value -> a tensor" in out.stdout
