"""The console script's fast ``ls`` (tensorfile/cli_fast.py) prints what the click command prints, byte for
byte, on every kind of tensorfile and safetensors file and on hostile ones (same error line, same exit code),
hands every other file and command line to click, and imports neither NumPy nor click; ``import tensorfile``
imports no NumPy (issue 12)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from click.testing import CliRunner

import tensorfile
from conftest import FIXTURES
from tensorfile import cli, cli_fast
from tensorfile.format import codes, dtypes
from tensorfile.format.sniff import header_fits, looks_like
from tensorfile.formats import SAFETENSORS, Probe, detect
from tensorfile.model import MODEL_KEY

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")


def _make_corpus():
    spec = importlib.util.spec_from_file_location("make_corpus", HERE / "hostile" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_corpus", module)
    spec.loader.exec_module(module)
    return module


def click_ls(file, as_json=False):
    """``(exit code, stdout, stderr)`` of the click command (what ``TENSORFILE_FULL_CLI=1`` runs)."""
    result = CliRunner().invoke(cli.main, ["ls", *(["--json"] if as_json else []), str(file)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def fast_ls(file, as_json=False):
    """``(exit code, stdout, stderr)`` of the fast path, or None when it hands the command to click."""
    out, err = io.StringIO(), io.StringIO()
    code = cli_fast.fast_ls(str(file), as_json, out, err)
    if code is None:
        assert out.getvalue() == err.getvalue() == "", "printed, then handed to click"
        return None
    return code, out.getvalue(), err.getvalue()


def assert_same(file, expect_code=0):
    for as_json in (False, True):
        fast = fast_ls(file, as_json)
        assert fast is not None, f"{file}: not listed by the fast path"
        assert fast == click_ls(file, as_json)
        assert fast[0] == expect_code, fast
    return fast


# ------------------------------------------------------------------------------------------------ the files
def _structured(path):
    tensorfile.save({"model": {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float16)},
                     "optimizer": {"state": {"0": {"exp_avg": np.full(4, 0.5)}}, "lr": 0.1}, "epoch": 3,
                     "names": ["a", "b"]}, path)  # fmt: skip


def _dtypes(path):
    tensorfile.save({"c128": np.arange(6, dtype=np.complex128).reshape(2, 3) * 1j, "c64": np.ones(2, np.complex64),
                     "bf16": np.ones((2, 2), ml_dtypes.bfloat16), "e4m3": np.ones(3, ml_dtypes.float8_e4m3fn),
                     "e5m2": np.ones(3, ml_dtypes.float8_e5m2), "fnuz": np.ones(1, ml_dtypes.float8_e4m3fnuz),
                     "e5fnuz": np.ones(1, ml_dtypes.float8_e5m2fnuz), "e8m0": np.ones(2, ml_dtypes.float8_e8m0fnu),
                     "b": np.array([True, False]), "u64": np.arange(3, dtype=np.uint64),
                     "i8": np.arange(3, dtype=np.int8)}, path)  # fmt: skip


def _scalars(path):
    tensorfile.save({"s": np.float32(2.5), "z": np.zeros(()), "empty": np.zeros((0, 4), np.int32),
                     "row": np.zeros((1,), np.uint16)}, path)  # fmt: skip


def _odd_metadata(path):
    metadata = {"": "empty key", "tab\tkey": "new\nline", "esc": "\x1b[31mred\x1b[0m", " padded ": "ünïcødé ✓",
                "long": "x" * 450, "quote": "it's \"quoted\"", "zero": "\x00"}  # fmt: skip
    tensorfile.save({"bad\nname": np.ones(2, np.float32), "": np.zeros(1, np.int8), "ok": np.ones(1)}, path,
                    metadata=metadata)  # fmt: skip


def _shared_and_tied(path):
    base = np.arange(12, dtype=np.float32)
    tensorfile.save({"base": base, "view": base[2:8].reshape(2, 3), "other": base[::2]}, path)


def _plain(path):
    safetensors.numpy.save_file({"b": np.ones((3, 1), np.float32), "a": np.arange(4, dtype=np.int64)}, str(path),
                                metadata={"format": "np"})  # fmt: skip


def _graph(path):
    from model_graphs import attention_layout, write

    graph, tensors, _ = attention_layout()
    write(path, graph, tensors)


def _bad_graph(path):
    graph = {"ir_version": 1, "inputs": [], "nodes": [{"name": "a", "op": "os.system", "inputs": []}], "outputs": ["a"]}
    tensorfile.save({"w": np.ones((2, 2), np.float32)}, path, metadata={MODEL_KEY: json.dumps(graph), "user": "kept"})


MAKERS = {"structured": _structured, "dtypes": _dtypes, "scalars": _scalars, "nothing": lambda p: tensorfile.save({}, p),
          "odd metadata": _odd_metadata, "shared": _shared_and_tied, "plain": _plain, "graph": _graph,
          "bad graph": _bad_graph}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_fast_ls_prints_what_the_click_command_prints(tmp_path, kind):
    path = tmp_path / kind.replace(" ", "_")
    MAKERS[kind](path)
    code, out, _ = assert_same(path)
    assert code == 0 and json.loads(out)["file"] == str(path)


def test_the_listing_holds_the_real_values(tmp_path):
    _dtypes(tmp_path / "d")
    _, out, _ = fast_ls(tmp_path / "d", as_json=True)
    by_name = {t["name"]: t for t in json.loads(out)["tensors"]}
    assert by_name["c128"] == {"name": "c128", "dtype": "complex128", "shape": [2, 3], "nbytes": 96}
    assert [by_name[n]["dtype"] for n in ("bf16", "e4m3", "e5m2", "fnuz", "e5fnuz", "e8m0", "b")] == [
        "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "bool"]
    _graph(tmp_path / "g")
    _, table, _ = fast_ls(tmp_path / "g")
    assert "model graph (torch, 18 nodes):" in table.splitlines() and "  outputs: head" in table.splitlines()
    _odd_metadata(tmp_path / "m")
    _, table, _ = fast_ls(tmp_path / "m")
    assert "metadata esc: '\\x1b[31mred\\x1b[0m'" in table and "\x1b" not in table
    assert f"metadata long: {'x' * 200}... (450 characters)" in table


def test_fixtures_and_a_file_url_list_alike():
    for path in sorted((FIXTURES / "safetensors").rglob("*.safetensors")):
        assert_same(path)
    assert_same(f"file://{FIXTURES / 'safetensors' / 'dtypes.safetensors'}")
    _, out, _ = fast_ls(FIXTURES / "safetensors" / "dtypes.safetensors", as_json=True)
    assert json.loads(out)["total"]["tensors"] == 10


def test_hostile_files_give_the_same_error_line_and_exit_code(tmp_path):
    corpus = _make_corpus()
    files = sorted(corpus.build(tmp_path)) + sorted((FIXTURES / "hostile").glob("st_*"))
    listed = refused = 0
    for path in files:
        fast = fast_ls(path)
        if fast is None:  # another format, or not a safetensors header: click's message
            continue
        assert fast == click_ls(path), path
        listed += fast[0] == 0
        refused += fast[0] == 2
        if fast[0] == 2:
            assert fast[1] == "" and fast[2].startswith("tensorfile: error: ") and fast[2].count("\n") == 1
    assert listed >= 5 and refused >= 20, (listed, refused)


def test_a_damaged_record_is_refused_as_open_refuses_it(tmp_path):
    path = tmp_path / "t"
    tensorfile.save({"w": np.ones(3, np.float32)}, path)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"framework")
    raw[at] = ord("F")  # one byte of the record: its header checksum no longer matches
    path.write_bytes(bytes(raw))
    code, out, err = assert_same(path, expect_code=2)
    assert "header checksum (xxh3-64)" in err and out == ""
    with pytest.raises(tensorfile.IntegrityError):
        tensorfile.open(path)


def test_other_files_and_paths_go_to_click(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(2))
    (tmp_path / "folder").mkdir()
    others = [tmp_path / "a.npy", tmp_path / "missing", tmp_path / "folder", FIXTURES / "torch" / "plain_dict.pt",
              FIXTURES / "hostile" / "st_empty_file.safetensors", FIXTURES / "hostile" / "st_seven_bytes.safetensors",
              FIXTURES / "safetensors" / "sharded" / "model.safetensors.index.json", "s3://bucket/key", "/dev/null"]
    for path in others:
        assert fast_ls(path) is None, path
    prefix = FIXTURES / "safetensors" / "sharded" / "model.safetensors"  # names a sharded save: its index is read
    assert fast_ls(prefix) is None and click_ls(prefix)[0] == 0


@pytest.mark.parametrize("args, expected", [
    (["ls", "f"], ("f", False)), (["ls", "--json", "f"], ("f", True)), (["ls", "f", "--json"], ("f", True)),
    (["ls"], None), (["ls", "--json"], None), (["ls", "f", "g"], None), (["ls", "--json", "--json", "f"], None),
    (["ls", "--max-bytes", "1", "f"], None), (["ls", "-h"], None), (["ls", "--", "f"], None), (["ls", "-x"], None),
    (["info", "f"], None), (["--version"], None), ([], None), (["ls", "f", "--jso"], None),
])  # fmt: skip
def test_only_plain_ls_command_lines_take_the_fast_path(args, expected):
    assert cli_fast.ls_request(list(args)) == expected


def test_output_click_would_write_differently_goes_to_click(tmp_path):
    path = tmp_path / "u"
    tensorfile.save({"w": np.ones(1)}, path, metadata={"note": "ünïcødé"})
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    assert cli_fast.fast_ls(str(path), False, ascii_out, io.StringIO()) is None
    assert ascii_out.buffer.getvalue() == b""
    assert cli_fast._write(io.StringIO(), ["a\x1b[0m"]) is False


def test_the_environment_variable_sends_ls_to_click(tmp_path, monkeypatch):
    path = tmp_path / "t"
    tensorfile.save({"w": np.ones(1)}, path)
    monkeypatch.setattr(sys, "argv", ["tensorfile", "ls", str(path)])
    monkeypatch.setenv(cli_fast.FULL_CLI_ENV, "1")
    monkeypatch.setattr(cli_fast, "fast_ls", lambda *a: pytest.fail("the fast path ran"))
    with pytest.raises(SystemExit) as exit_:
        cli_fast.main()
    assert exit_.value.code == 0


def test_the_fast_path_needs_the_first_bytes_of_a_safetensors_file_only(tmp_path):
    """Where it reads (a header that fits, no other format's magic), the formats registry picks safetensors."""
    corpus = _make_corpus()
    files = [Path(p) for p in corpus.build(tmp_path)] + [p for p in FIXTURES.rglob("*") if p.is_file()]
    taken = 0
    for path in files:
        probe = Probe.of(str(path))
        if probe is not None and header_fits(probe.prefix[:16], probe.size) and looks_like(probe.prefix[:16]) is None:
            assert detect(probe) is SAFETENSORS, path
            taken += 1
    assert taken >= 30


def test_the_code_table_is_numpys():
    assert list(codes.CODES) == list(dtypes.CODE_TO_DTYPE) and dtypes.STORED_AS is codes.STORED_AS
    for code, dtype in dtypes.CODE_TO_DTYPE.items():
        assert (codes.name_of_code(code), codes.itemsize_of(code)) == (dtype.name, dtype.itemsize), code
        assert dtype.byteorder in "<|=" and dtype == dtypes.dtype_from_name(dtype.name)


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": SRC, **env})  # fmt: skip


def test_import_tensorfile_imports_no_numpy():
    done = _run("import sys, tensorfile\n"
                "assert 'numpy' not in sys.modules, 'numpy'\n"
                "assert isinstance(tensorfile.FormatError('x'), ValueError)\n"
                "names = {}\n"
                "exec('from tensorfile import *', names)\n"
                "assert 'open' not in names and 'numpy' in sys.modules\n"
                "assert set(tensorfile.__all__) - {'__version__'} <= set(names) and 'open' in dir(tensorfile)\n"
                "assert tensorfile.open.__module__ == 'tensorfile.lazy' and tensorfile.Limits().max_depth == 200\n"
                "import tensorfile.model, tensorfile.checkpoint\n"
                "print(tensorfile.model.save_model is tensorfile.save_model)")  # fmt: skip
    assert done.returncode == 0 and done.stdout == "True\n", done.stderr


def test_the_console_script_lists_without_numpy_or_click(tmp_path):
    path = tmp_path / "g"
    _graph(path)
    code = ("import sys\nsys.argv = ['tensorfile', 'ls', sys.argv[1]]\nfrom tensorfile.cli_fast import main\n"
            "code = main()\nheavy = [m for m in ('numpy', 'click', 'ml_dtypes', 'tensorfile.formats') if m in sys.modules]\n"
            "print(code, heavy, file=sys.stderr)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": SRC})  # fmt: skip
    assert done.stderr == "0 []\n" and done.stdout == click_ls(path)[1]
    module = subprocess.run([sys.executable, "-m", "tensorfile", "ls", "--json", str(path)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": SRC})  # fmt: skip
    assert module.returncode == 0 and module.stdout == click_ls(path, as_json=True)[1]
    missing = subprocess.run([sys.executable, "-m", "tensorfile", "ls", str(tmp_path / "nope")], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHONPATH": SRC})  # fmt: skip
    assert missing.returncode == 2 and missing.stderr == f"tensorfile: error: {tmp_path / 'nope'}: no such file\n"
