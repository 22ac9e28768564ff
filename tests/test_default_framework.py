"""One rule for the framework a load returns, the same for every kind of file (handoff.source_framework)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tensorfile
from conftest import FIXTURES
from tests_support import rewrite_record

torch = pytest.importorskip("torch")


def _run(code: str, block: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    blocker = "".join(f"import sys; sys.modules[{m!r}] = None\n" for m in block)
    return subprocess.run([sys.executable, "-W", "default", "-c", blocker + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=180)  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    sd = {"w": torch.arange(6.0).reshape(2, 3)}
    tensorfile.save(sd, folder / "t.tensorfile")
    torch.save(sd, folder / "t.pt")
    tensorfile.save({"w": np.arange(3.0)}, folder / "n.tensorfile")
    return folder


LOAD_ALL = """
import warnings, tensorfile
for name in ("t.tensorfile", "t.pt", "n.tensorfile"):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        value = tensorfile.load({folder!r} + "/" + name)["w"]
    print(name, type(value).__module__.split(".")[0], len(seen), *[str(w.message) for w in seen], sep="|")
"""


def test_an_installed_framework_is_used_even_when_the_program_did_not_import_it(files):
    out = _run(LOAD_ALL.format(folder=str(files)))
    assert out.returncode == 0, out.stderr
    rows = [line.split("|") for line in out.stdout.splitlines()]
    assert [r[:3] for r in rows] == [["t.tensorfile", "torch", "0"], ["t.pt", "torch", "0"], ["n.tensorfile", "numpy", "0"]]


def test_a_missing_framework_gives_numpy_with_one_warning_for_every_kind_of_file(files):
    out = _run(LOAD_ALL.format(folder=str(files)), block=("torch",))
    assert out.returncode == 0, out.stderr
    rows = [line.split("|") for line in out.stdout.splitlines()]
    assert [r[:3] for r in rows] == [["t.tensorfile", "numpy", "1"], ["t.pt", "numpy", "1"], ["n.tensorfile", "numpy", "0"]]
    for row in rows[:2]:
        assert "saved from torch, which is not installed: loaded as NumPy arrays" in row[3]
        assert row[0] in row[3]  # the file is named


def test_asking_for_numpy_gives_no_warning(files):
    code = """
    import warnings, tensorfile
    warnings.simplefilter("error")
    for name in ("t.tensorfile", "t.pt"):
        print(type(tensorfile.load({folder!r} + "/" + name, framework="numpy")["w"]).__name__)
        with tensorfile.open({folder!r} + "/" + name, framework="numpy") as f:
            print(type(f["w"]).__name__)
    """
    out = _run(code.format(folder=str(files)), block=("torch",))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ndarray"] * 4


def test_open_follows_the_same_rule(files):
    code = """
    import warnings, tensorfile
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with tensorfile.open({folder!r} + "/t.tensorfile") as f:
            print(type(f["w"]).__name__, len(seen))
    """
    assert _run(code.format(folder=str(files))).stdout.split() == ["Tensor", "0"]
    assert _run(code.format(folder=str(files)), block=("torch",)).stdout.split() == ["ndarray", "1"]


def test_an_mxnet_file_without_mxnet_and_an_unknown_framework_warn_and_give_numpy(tmp_path):
    path = tmp_path / "odd"
    tensorfile.save({"w": np.ones(2, np.float32)}, path)
    rewrite_record(path, lambda r: r["tensors"]["w"].update(framework="paddle"))
    with pytest.warns(UserWarning, match="saved from paddle, which is not one tensorfile knows"):
        assert tensorfile.load(path)["w"].tolist() == [1.0, 1.0]
    try:
        import mxnet  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="saved from mxnet, which is not installed"):
            value = tensorfile.load(FIXTURES / "mxnet" / "x-file")
        assert isinstance(value[0], np.ndarray)
