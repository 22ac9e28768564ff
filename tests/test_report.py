"""``tensorfile report`` and ``tensorfile show`` (issue 16): streamed statistics against NumPy's on arrays with
NaN, inf, bfloat16 and float8; dtype-aware bins; sampling; the diff; a CheckpointManager folder; the page
and the terminal tree; damaged and hostile files end in one error line."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

import tensorfile
from tensorfile import cli, cli_fast
from tensorfile.errors import IntegrityError, TensorFileError
from tensorfile.report import Options, read, report
from tensorfile.report.bins import BINS, histogram
from tensorfile.report.build import read_file_stats
from tensorfile.report.diff import diff_opened
from tensorfile.report.folder import measure_moves, read_folder
from tensorfile.report.sparks import histogram_blocks
from tensorfile.report.stats import tensor_stats

EXE = os.path.join(os.path.dirname(sys.executable), "tensorfile")


def _expect(array: np.ndarray) -> dict:
    wide = array.astype(np.float64).reshape(-1)
    finite = wide[np.isfinite(wide)]
    return {"nan": int(np.isnan(wide).sum()), "posinf": int((wide == np.inf).sum()), "neginf": int((wide == -np.inf).sum()),
            "zeros": int((wide == 0).sum()), "mean": finite.mean(), "std": finite.std(), "min": finite.min(),
            "max": finite.max()}  # fmt: skip


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    big = rng.standard_normal((700, 300)).astype(np.float32) * 3 + 1
    big[3, :7] = np.nan
    big[10, 4], big[11, 5], big[12, 6] = np.inf, -np.inf, -np.inf
    big[20:22] = 0
    bf16 = (rng.standard_normal((64, 33)) * 5).astype(ml_dtypes.bfloat16)
    bf16[0, 0] = np.nan
    fp8 = rng.standard_normal(500).astype(ml_dtypes.float8_e4m3fn)
    fp8[7] = np.nan
    return {"big": big, "bf16": bf16, "fp8": fp8, "ints": np.arange(-5, 95, dtype=np.int16).reshape(10, 10),
            "mask": np.array([True, False, True, True]), "half": rng.standard_normal(300).astype(np.float16),
            "empty": np.zeros((0, 4), np.float32)}  # fmt: skip


@pytest.fixture
def mixed(tmp_path):
    path = tmp_path / "mixed.tensorfile"
    tensorfile.save(_arrays(), path)
    return path


@pytest.mark.parametrize("pieces", [1 << 30, 4096])  # one piece, and runs of a few rows (the streaming path)
def test_stats_match_numpy(mixed, monkeypatch, pieces):
    monkeypatch.setattr(read, "CHUNK_BYTES", pieces)
    with tensorfile.open(mixed, framework="numpy") as f:
        for name, array in _arrays().items():
            s = tensor_stats(f, name)
            assert (s.dtype, s.shape, s.total, s.count, s.sampled) == (array.dtype.name, array.shape, array.size, array.size, False)
            assert s.verified is True  # a tensorfile file: every checksum checked while streaming
            if array.size == 0:
                assert s.mean is None and s.hist is None
                continue
            want = _expect(array)
            assert (s.nan, s.posinf, s.neginf, s.zeros) == (want["nan"], want["posinf"], want["neginf"], want["zeros"]), name
            assert s.min == want["min"] and s.max == want["max"], name
            assert math.isclose(s.mean, want["mean"], rel_tol=1e-9, abs_tol=1e-12), name
            assert math.isclose(s.std, want["std"], rel_tol=1e-6), name  # deviations squared in float32
            assert int(s.hist.counts.sum()) == s.finite == array.size - want["nan"] - want["posinf"] - want["neginf"]


def test_big_tensor_nan_and_inf_counted_exactly(mixed):
    with tensorfile.open(mixed, framework="numpy") as f:
        s = tensor_stats(f, "big")
    assert (s.nan, s.posinf, s.neginf, s.bad) == (7, 1, 2, 10)
    assert s.zeros == 600 and math.isclose(s.zero_fraction, 600 / 210000)


def test_bins_low_precision_and_integers():
    rng = np.random.default_rng(1)
    fp8 = rng.standard_normal(2000).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    distinct, counts = np.unique(fp8, return_counts=True)
    assert distinct.size > BINS  # e4m3 near N(0, 1): many representable values
    bf16 = (rng.standard_normal(5000) * 2).astype(ml_dtypes.bfloat16).astype(np.float64)
    hist = histogram(bf16, "bfloat16", bf16.min(), bf16.max())
    inside = hist.edges[1:-1]
    assert np.array_equal(inside.astype(ml_dtypes.bfloat16).astype(np.float64), inside)  # edges held by bfloat16
    assert hist.counts.sum() == 5000 and len(hist.counts) <= BINS
    few = np.array([0.5, 0.5, 1.0, 2.0, 2.0, 2.0]).astype(ml_dtypes.float8_e5m2).astype(np.float64)
    hist = histogram(few, "float8_e5m2", 0.5, 2.0)
    assert hist.exact and list(hist.edges[:-1]) == [0.5, 1.0, 2.0] and list(hist.counts) == [2, 1, 3]
    ints = np.arange(-5, 95, dtype=np.int64)
    hist = histogram(ints, "int16", -5, 94)
    assert np.all(hist.edges == np.floor(hist.edges)) and hist.counts.sum() == 100
    assert len(set(np.diff(hist.edges))) == 1 and len(hist.counts) <= BINS  # equal whole widths: no comb
    nan_only = histogram(np.array([np.nan, np.inf]), "float32", 0.0, 0.0)
    assert nan_only.counts.sum() == 0


def test_sampled_above_the_limit(tmp_path):
    array = np.arange(4000 * 64, dtype=np.float32).reshape(4000, 64)
    tensorfile.save({"w": array}, tmp_path / "w.tensorfile")
    with tensorfile.open(tmp_path / "w.tensorfile", framework="numpy") as f:
        s = tensor_stats(f, "w", sample_above=64 << 10)
    assert s.sampled and s.count < s.total == array.size and s.verified is None
    assert s.count == 16 * 16 * 64  # 16 runs of 16 rows (64 KiB / 256 B per row / 16 runs)
    assert any("sampled" in n for n in s.notes)
    assert array.min() <= s.min < s.max <= array.max()


def test_damaged_tensor_fails_its_checksum_while_streaming(tmp_path, monkeypatch):
    path = tmp_path / "w.tensorfile"
    tensorfile.save({"w": np.ones((512, 64), np.float32)}, path)
    with tensorfile.open(path) as f:
        offset = f.info("w").offset
    data = bytearray(path.read_bytes())
    data[offset + 70000] ^= 0xFF
    path.write_bytes(bytes(data))
    for pieces in (1 << 30, 8192):
        monkeypatch.setattr(read, "CHUNK_BYTES", pieces)
        with tensorfile.open(path, framework="numpy") as f, pytest.raises(IntegrityError, match="tensor 'w' is corrupt"):
            tensor_stats(f, "w")


def test_diff(tmp_path):
    a = {"w": np.ones(100, np.float32), "z": np.zeros(3), "gone": np.ones(2), "cast": np.ones(4, np.float32),
         "bad": np.ones(5)}  # fmt: skip
    b = {"w": np.full(100, 1.1, np.float32), "z": np.ones(3), "new": np.ones(2), "cast": np.ones(4, np.float16),
         "bad": np.array([1, 2, np.nan, 4, 5])}  # fmt: skip
    tensorfile.save(a, tmp_path / "a.tensorfile")
    tensorfile.save(b, tmp_path / "b.tensorfile")
    with tensorfile.open(tmp_path / "a.tensorfile", framework="numpy") as fa, \
            tensorfile.open(tmp_path / "b.tensorfile", framework="numpy") as fb:  # fmt: skip
        diff = diff_opened(fa, fb)
    assert (diff.added, diff.removed) == (["new"], ["gone"])
    assert diff.retyped == [("cast", "float32 [4]", "float16 [4]")]
    by = {c.name: c for c in diff.changes}
    assert math.isclose(by["w"].relative, 0.1, rel_tol=1e-6) and math.isclose(by["w"].max_abs, 0.1, rel_tol=1e-6)
    assert by["z"].relative == math.inf and math.isnan(by["bad"].relative)
    assert [c.name for c in diff.most(3)] == ["bad", "z", "w"]  # NaN first: a tensor gone bad matters most


def _numpy_run(folder, steps=4, keep=3):
    """A CheckpointManager run whose moves are known: w grows by 10% a step, b by 1%, c never moves."""
    state = {"w": np.ones(50), "b": np.ones(8), "c": np.arange(4.0)}
    with tensorfile.CheckpointManager(folder, max_to_keep=keep) as manager:
        for step in range(1, steps + 1):
            state = {"w": state["w"] * 1.1, "b": state["b"] * 1.01, "c": state["c"]}
            manager.save(step, {"model": state, "epoch": step}, metrics={"loss": [0.9, 0.4, 0.5, 0.6][step - 1], "acc": step / 10})


def test_folder_view(tmp_path):
    _numpy_run(tmp_path / "run")
    view = read_folder(str(tmp_path / "run"))
    assert [s.step for s in view.steps] == [2, 3, 4]  # step 1 fell to max_to_keep=3
    assert view.metric == "loss" and view.best == 2 and view.metric_names == ["acc", "loss"]
    assert view.steps[0].metrics == {"loss": 0.4, "acc": 0.2}
    assert read_folder(str(tmp_path / "run"), "acc", "max").best == 4
    measure_moves(view)
    assert set(view.moves) == {"model.w", "model.b", "model.c"}
    assert np.allclose(view.moves["model.w"], [0.1, 0.1]) and np.allclose(view.moves["model.b"], [0.01, 0.01])
    assert view.moves["model.c"] == [0.0, 0.0]
    assert max(view.total_moves(), key=view.total_moves().get) == "model.w"


def test_report_page_is_self_contained(tmp_path, mixed):
    _numpy_run(tmp_path / "run")
    out = tmp_path / "r.html"
    report([str(tmp_path / "run"), str(mixed)], str(out), Options())
    html = out.read_text()
    assert "<script" not in html and not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert "changed most: model.w (10%)" in html  # the bar chart names the tensor that moved most
    assert 'best (min loss)' in html and html.count('class="badge kept"') == 3
    assert "tensors hold NaN or infinite values: bf16, big, fp8" in html  # loud, at the top of the file's section
    assert html.count('data-chart="histogram of ') == 3 + 6  # the latest step's 3 tensors, mixed's 6 non-empty
    for name in ("metrics over steps", "largest move per tensor", "tensors x steps heatmap"):
        assert f'data-chart="{name}"' in html


def test_report_two_files_cli(tmp_path):
    tensorfile.save({"a": np.ones(10), "b": np.ones(10)}, tmp_path / "x.tensorfile")
    tensorfile.save({"a": np.ones(10) * 1.5, "b": np.ones(10) * 1.01}, tmp_path / "y.tensorfile")
    out = tmp_path / "d.html"
    result = CliRunner().invoke(cli.main, ["report", str(tmp_path / "x.tensorfile"), str(tmp_path / "y.tensorfile"),
                                           "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {out} (")
    html = out.read_text()
    assert "changed most: a (50%)" in html and 'data-chart="relative change per tensor"' in html
    assert html.index("Diff:") < html.index("<h2>" + str(tmp_path / "x.tensorfile"))  # the diff comes first


def test_report_and_show_reach_click_through_the_console_script(tmp_path):
    assert cli_fast.ls_request(["report", "x"]) is None and cli_fast.ls_request(["show", "x"]) is None
    tensorfile.save({"layer": {"w": np.arange(6.0).reshape(2, 3)}}, tmp_path / "m.tensorfile")
    done = subprocess.run([EXE, "show", str(tmp_path / "m.tensorfile")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "└── w  float64 [2, 3]  mean 2.5 std 1.708 [0, 5]  zeros 16.7%" in done.stdout
    assert "\x1b" not in done.stdout  # not a terminal: no colours, no pager


def test_show_tree_stats_and_loud_nan(mixed):
    tensorfile.save({"model": {"fc": {"weight": np.array([[1.0, np.nan], [np.inf, 3.0]])}}, "epoch": 7}, mixed)
    result = CliRunner().invoke(cli.main, ["show", str(mixed)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("tensorfile (safetensors with structure and checksums): 1 tensors, 32 bytes (float64 × 1)")
    assert "checksums: xxh3-64 per tensor: all 1 verified" in lines[0] + lines[1]
    assert "⚠ 1 tensor(s) hold NaN or inf: model.fc.weight" in result.output
    assert "├── epoch = 7" in result.output and "└── model" in result.output
    assert re.search(r"└── weight  float64 \[2, 2\]  mean 2 std 1 \[1, 3\]  [▁▂▃▄▅▆▇█ ]+  ⚠ 1 NaN, 1 \+inf", result.output)


def test_show_block_histogram():
    from tensorfile.report.stats import stats_of_array

    line = histogram_blocks(stats_of_array("x", np.repeat(np.arange(4), [1, 2, 4, 8]).astype(np.int32)))
    assert line == "▁▂▄█"


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"PK\x03\x04" + b"\x00" * 60, b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"])
def test_hostile_or_damaged_file_is_one_error_line(tmp_path, content):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    for command in (["report", str(bad), "-o", str(tmp_path / "r.html")], ["show", str(bad)]):
        result = CliRunner().invoke(cli.main, command)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and result.output.count("\n") == 1 and str(bad) in result.output
    assert not (tmp_path / "r.html").exists()


def test_truncated_file_and_bad_folder(tmp_path):
    path = tmp_path / "t.tensorfile"
    tensorfile.save({"w": np.ones((256, 256), np.float32)}, path)
    path.write_bytes(path.read_bytes()[:-1000])
    result = CliRunner().invoke(cli.main, ["report", str(path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "Traceback" not in result.output and str(path) in result.output
    with pytest.raises(TensorFileError, match=str(path)):
        read_file_stats(str(path), Options())
    result = CliRunner().invoke(cli.main, ["report", str(tmp_path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "is a folder, not a file" in result.output and "CheckpointManager" in result.output
    _numpy_run(tmp_path / "run")
    result = CliRunner().invoke(cli.main, ["show", str(tmp_path / "run")])
    assert result.exit_code == 2 and "tensorfile report" in result.output
    assert os.path.join(str(tmp_path / "run"), "step_00000004", "state.tensorfile") in result.output


def test_show_pages_long_output_on_a_terminal(tmp_path):
    import pty

    tensorfile.save({f"layer{i:02d}": np.full(3, float(i)) for i in range(30)}, tmp_path / "long.tensorfile")
    env = {**os.environ, "PAGER": "sed s/^/PAGED:/", "LINES": "12", "COLUMNS": "100", "TERM": "xterm"}
    lines = []
    for argv in ([str(tmp_path / "long.tensorfile")], [str(tmp_path / "long.tensorfile"), "--no-pager"]):
        leader, follower = pty.openpty()
        done = subprocess.run([EXE, "show", *argv], stdin=follower, stdout=follower, stderr=subprocess.PIPE, env=env,
                              timeout=120)  # fmt: skip
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:  # the terminal's other end closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert done.returncode == 0, done.stderr
        lines.append(b"".join(chunks).decode())
    paged, plain = lines
    assert paged.count("PAGED:") >= 32 and "layer29" in paged  # 33 lines on a 12-line terminal: through $PAGER
    assert "PAGED:" not in plain and "layer29" in plain and "\x1b[" in plain  # a terminal: colours


def test_every_hostile_fixture_is_one_error_line(tmp_path):
    from conftest import FIXTURES

    hostile = sorted(p for p in (FIXTURES / "hostile").iterdir() if p.is_file())
    assert len(hostile) >= 30
    for path in hostile:
        result = CliRunner().invoke(cli.main, ["report", str(path), "-o", str(tmp_path / "r.html")])
        assert result.exit_code == 2 and result.output.count("\n") == 1 and str(path) in result.output, result.output
    assert not (tmp_path / "r.html").exists()


def test_progress_bar_on_stderr(tmp_path):
    tensorfile.save({"w": np.ones((64, 64), np.float32)}, tmp_path / "w.tensorfile")
    done = subprocess.run([EXE, "report", str(tmp_path / "w.tensorfile"), "-o", str(tmp_path / "w.html"), "--progress"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "report:" in done.stderr and "16.0k" in done.stderr  # tqdm's bar, in bytes, on stderr
    assert done.stdout == f"wrote {tmp_path / 'w.html'} ({os.path.getsize(tmp_path / 'w.html'):,} bytes)\n"


@pytest.mark.parametrize("parts", [("torch", "checkpoint.pt"), ("torch", "mlp_legacy.pt"), ("numpy", "arrays.npz"),
                                   ("mxnet", "mlp.params"), ("tensorflow", "mlp.weights.h5"), ("tensorflow", "seq.keras"),
                                   ("safetensors", "sharded", "model.safetensors.index.json"),
                                   ("safetensors", "dtypes.safetensors")])  # fmt: skip
def test_every_format_streams_real_values(parts):
    from conftest import fixture_path

    path = str(fixture_path(*parts))
    summary, stats = read_file_stats(path, Options())
    with tensorfile.open(path, framework="numpy") as f:
        arrays = {n: np.asarray(f[n]) for n in f.keys()}
    assert [s.name for s in stats] == sorted(arrays) and summary.tensors == len(arrays) > 0
    assert summary.nbytes == sum(a.nbytes for a in arrays.values())
    for s in stats:
        array = arrays[s.name]
        if array.dtype.kind not in "biufc" and array.dtype.name not in ("bfloat16",) and not array.dtype.name.startswith("float8"):
            assert s.mean is None and s.notes
            continue
        values = np.abs(array).astype(np.float64) if array.dtype.kind == "c" else array.astype(np.float64)
        finite = values[np.isfinite(values)]
        assert s.count == array.size and s.finite == finite.size, s.name
        if finite.size:
            assert math.isclose(s.mean, finite.mean(), rel_tol=1e-5, abs_tol=1e-7), s.name
            assert s.min == finite.min() and s.max == finite.max(), s.name
