"""A torch.save file, an .npz or a .keras archive cut short: named as what it was, FAILED in verify (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

import tensorfile
from tensorfile import FormatError
from test_cli import run


def _torch(path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(5000)}, path)


def _npz(path):
    np.savez(path, w=np.ones(5000))


def _keras(path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.layers.Input((40,)), keras.layers.Dense(40)])
    model.save(path)


@pytest.mark.parametrize("make, suffix, kind", [(_torch, ".pt", "torch.save zip"), (_npz, ".npz", "NumPy .npz"),
                                                (_keras, ".keras", ".keras archive")])  # fmt: skip
def test_a_truncated_zip_is_named_and_fails_verify(tmp_path, make, suffix, kind):
    whole = tmp_path / f"whole{suffix}"
    make(whole)
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = run("verify", cut)
    assert out.returncode == 1 and out.stdout.startswith("FAILED: ") and f"a damaged {kind}" in out.stdout, out
    assert "central directory" in out.stdout
    listing = run("ls", cut)
    assert listing.returncode == 2 and f"a damaged {kind}" in listing.stderr
    with pytest.raises(FormatError, match=f"a damaged {kind}"):
        tensorfile.load(cut)
    assert run("verify", whole).returncode == 0
