"""``tensorfile report`` and ``show`` against what a hostile or unlucky user gives them (issue 16): values at the
edges of their dtypes, tensors with nothing to count, names that are HTML, TeX, terminal escapes or 5,000
characters long, a checkpoint folder with a crashed step, a NaN loss, tensors that change shape, two files
that are the same or share nothing. Each case here once ended in a traceback or a page that misled."""

from __future__ import annotations

import math
import os
import re
import warnings

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

import tensorfile
from tensorfile import cli
from tensorfile.report import Options, read, report
from tensorfile.report.charts import change_bars, metric_curves
from tensorfile.report.folder import measure_moves, read_folder
from tensorfile.report.names import chart_label, shown
from tensorfile.report.stats import stats_of_array, tensor_stats


def _edges() -> dict[str, np.ndarray]:
    return {"f64_huge": np.array([1e308, -1e308, 1.7e308, 3.0]), "f32_huge": np.array([3e38, -3e38, 1.0], np.float32),
            "bf16_huge": np.array([np.nan, 1, np.inf, 3e38, -3e38], ml_dtypes.bfloat16),
            "i64_ends": np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0]),
            "u64_ends": np.array([0, np.iinfo(np.uint64).max], np.uint64)}  # fmt: skip


@pytest.mark.parametrize("name", list(_edges()))
def test_values_at_the_ends_of_their_dtype(name):
    array = _edges()[name]
    wide = array.astype(np.float64)
    finite = wide[np.isfinite(wide)]
    scale = np.abs(finite).max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way either
        s = stats_of_array(name, array)
    assert math.isfinite(s.mean) and math.isfinite(s.std), (s.mean, s.std)
    assert math.isclose(s.mean, (finite / scale).mean() * scale, rel_tol=1e-9, abs_tol=scale * 1e-15)
    assert math.isclose(s.std, (finite / scale).std() * scale, rel_tol=1e-9)
    assert s.min == finite.min() and s.max == finite.max()
    assert int(s.hist.counts.sum()) == finite.size and np.all(np.diff(s.hist.edges) > 0)


def test_huge_values_after_small_ones_while_streaming(tmp_path, monkeypatch):
    """The float64 scale grows piece by piece: sums taken before a huge value are rescaled, not lost."""
    monkeypatch.setattr(read, "CHUNK_BYTES", 8 * 64)
    array = np.random.default_rng(1).standard_normal((40, 64))
    array[30, 5], array[35, 1] = 1e307, -1.5e307
    tensorfile.save({"w": array}, tmp_path / "w.tensorfile")
    with tensorfile.open(tmp_path / "w.tensorfile", framework="numpy") as f:
        s = tensor_stats(f, "w")
    scaled = array / 1e307
    assert math.isclose(s.mean, scaled.mean() * 1e307, rel_tol=1e-9)
    assert math.isclose(s.std, scaled.std() * 1e307, rel_tol=1e-9)


def _odd_tensors() -> dict[str, np.ndarray]:
    return {"all_nan": np.full((3, 4), np.nan, np.float32), "all_inf": np.full(5, -np.inf), "empty": np.zeros(0),
            "zero_rows": np.zeros((0, 1 << 20), np.float32), "scalar": np.array(2.5, np.float32),
            "scalar_nan": np.array(np.nan), "mask": np.ones(10, bool),
            "complex": np.array([3 + 4j, np.nan], np.complex64),
            "fp8": np.array([np.nan, 1, 448], ml_dtypes.float8_e4m3fn),
            "fp8_nan": np.full(4, np.nan, ml_dtypes.float8_e4m3fn),
            "f16": np.array([np.nan, np.inf, 65504, -65504], np.float16), "same": np.full(100, 7, np.int8)}  # fmt: skip


def test_odd_tensors_through_report_and_show(tmp_path):
    path = tmp_path / "odd.tensorfile"
    tensorfile.save(_odd_tensors(), path)
    out = tmp_path / "odd.html"
    result = CliRunner().invoke(cli.main, ["report", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    for bad in ("all_inf", "all_nan", "complex", "f16", "fp8", "fp8_nan", "scalar_nan"):
        assert re.search(rf"<tr class=badrow><td><code>{bad}</code>", html), bad  # its row shaded
    result = CliRunner().invoke(cli.main, ["show", str(path)])
    assert result.exit_code == 0, result.output
    assert "├── all_inf  float64 [5]  ⚠ 5 -inf" in result.output
    assert "└── zero_rows  float32 [0, 1048576]\n" in result.output
    assert "├── mask  bool [10]  mean 1 std 0 [1, 1]  █" in result.output
    assert "├── complex  complex64 [2]  mean 5 std 0 [5, 5]" in result.output and "⚠ 1 NaN" in result.output


_NAMES = ["<script>alert(1)</script>", "</style><img src=x onerror=alert(2)>", 'q"&\'', "$\\undefinedcmd$", "a$b$c",
          "\x1b]0;pwned\x07\x1b[31mred", "rtl\u202eevil", "nl\nname", "x" * 5000, "한국어.텐서", "."]  # fmt: skip


def test_hostile_names_on_the_page_in_charts_and_in_the_terminal(tmp_path):
    a = {n: np.arange(1.0, 5.0) * (i + 1) for i, n in enumerate(_NAMES)}
    tensorfile.save(a, tmp_path / "a.tensorfile")
    tensorfile.save({n: v * 1.1 for n, v in a.items()}, tmp_path / "b.tensorfile")
    out = tmp_path / "d.html"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mathtext did fail on "$\undefinedcmd$"; missing Hangul glyphs warned
        report([str(tmp_path / "a.tensorfile"), str(tmp_path / "b.tensorfile")], str(out), Options(), False)
    html = out.read_text()
    assert "<script" not in html and "<img" not in html and "\x1b" not in html and "\u202e" not in html
    assert "default-src 'none'" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "q&quot;&amp;&#x27;" in html
    assert "\\x1b]0;pwned\\x07\\x1b[31mred" in html and "rtl\\u202eevil" in html and "한국어.텐서" in html
    assert ">$\\undefinedcmd$<" in html  # drawn as text on the bar chart, not as TeX
    widest = max(len(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", html))
    assert widest <= 61  # a 5,000-character name is shortened on the chart (the table keeps it whole)
    assert "x" * 5000 in html
    result = CliRunner().invoke(cli.main, ["show", str(tmp_path / "a.tensorfile")])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output and "\x07" not in result.output
    assert "├── \\x1b]0;pwned\\x07\\x1b[31mred  float64" in result.output
    assert "├── nl\\nname  float64" in result.output
    assert "├── .  float64 [4]" in result.output  # a name of empty parts: whole, not an empty leaf


def test_chart_labels():
    assert shown("a\tb\u200bc") == "a\\tb\\u200bc" and shown("파라미터 w") == "파라미터 w"
    label = chart_label("$" + "y" * 100)
    assert label.startswith("\\$yyy") and "…" in label and len(label.replace("\\$", "$")) == 60


def test_report_of_a_file_with_itself_and_of_two_sharing_nothing(tmp_path):
    tensorfile.save({"w": np.ones(4), "b": np.zeros(2)}, tmp_path / "a.tensorfile")
    tensorfile.save({"other": np.ones(4)}, tmp_path / "c.tensorfile")
    same = report([str(tmp_path / "a.tensorfile")] * 2, str(tmp_path / "s.html"), Options(), False)
    html = open(same).read()
    assert "changed most" not in html and "no tensor changed: every one is identical" in html
    assert "Every tensor in both (2) holds the same values." in html
    html = open(report([str(tmp_path / "a.tensorfile"), str(tmp_path / "c.tensorfile")], str(tmp_path / "n.html"),
                       Options(), False)).read()  # fmt: skip
    assert "No tensor is in both files" in html and "<b>added</b> (1)" in html and "<b>removed</b> (2)" in html
    assert "changed most" not in change_bars([("a", 0.0), ("b", 0.0)], "t")


def _run(folder, states, metrics):
    with tensorfile.CheckpointManager(folder) as manager:
        for step, (state, metric) in enumerate(zip(states, metrics), 1):
            manager.save(step, state, metrics=metric)


def test_crashed_step_folders_are_listed_not_fatal(tmp_path):
    run = tmp_path / "run"
    _run(run, [{"w": np.ones(4) * s} for s in (1, 2, 3)], [{"loss": 3.0 - s} for s in (1, 2, 3)])
    os.makedirs(run / "step_00000004")  # a save that never wrote its file
    state = run / "step_00000003" / "state.tensorfile"
    state.write_bytes(state.read_bytes()[:40])  # a damaged one
    view = read_folder(str(run))
    assert [s.step for s in view.steps] == [1, 2] and view.best == 2 and [d[0] for d in view.damaged] == [3, 4]
    assert "holds no state.tensorfile" in view.damaged[1][1] and str(state) in view.damaged[0][1]
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli.main, ["report", str(run), "-o", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "⚠ 2 step folders cannot be read" in html and "<li>step 4: " in html and "Latest step 2:" in html
    empty = tmp_path / "empty"
    os.makedirs(empty / "step_00000001")
    result = CliRunner().invoke(cli.main, ["report", str(empty), "-o", str(out)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "no step can be read: step 1:" in result.output
    assert "⚠ 2 step folders" in out.read_text()  # the good report is still there
    result = CliRunner().invoke(cli.main, ["show", str(empty)])  # once: pointed at a file not there
    assert result.exit_code == 2 and result.output.endswith("(no step's file is there)\n")
    result = CliRunner().invoke(cli.main, ["show", str(run)])
    assert result.output.endswith(f"or show one step: {state}\n")  # step 4 has no file: the latest that has


def test_nan_loss_and_reshaped_tensors_in_a_folder(tmp_path):
    run = tmp_path / "run"
    states = [{"w": np.ones((2, 2)), "old": np.ones(3)}, {"w": np.ones((3, 2)), "new": np.ones(3)},
              {"w": np.full((3, 2), np.nan), "new": np.zeros(3), "late": np.ones(1)}]  # fmt: skip
    _run(run, states, [{"loss": 1.0}, {"loss": 0.5}, {"loss": math.nan}])
    view = read_folder(str(run))
    measure_moves(view)
    assert view.gaps["w"] == ["reshaped", None] and math.isnan(view.moves["w"][1])  # compared, and gone NaN
    assert view.gaps["new"] == ["new", None] and view.moves["new"][1] == 1.0
    assert view.never_compared() == {"late": "new"} and "late" not in view.total_moves()
    assert math.isnan(view.total_moves()["w"])
    html = open(report([str(run)], str(tmp_path / "r.html"), Options(), False)).read()
    assert ">reshaped<" in html and "Not compared between any two kept steps" in html
    assert "<code>late</code> (new)" in html
    svg = metric_curves([1, 2, 3], {"loss": [1.0, 0.5, math.nan]}, 2, "loss")
    assert ">NaN<" in svg  # the diverged step is marked, not left out


def test_show_draws_the_tree_as_rich_tree_would(tmp_path):
    """``show`` draws its tree line by line (rich's Tree took 6 s for 10,000 tensors): the same text, guides
    and wrapping of a long name included, with and without colour."""
    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

    from tensorfile.report.show import _leaf, render
    from tensorfile.report.summary import summarize

    path = tmp_path / "t.tensorfile"
    names = ["a.b.w", "a.b.v", "a.c", "a", "z" * 150, "m.n.o.p", "m.q"]
    tensorfile.save({n: np.arange(i + 2.0) for i, n in enumerate(names)}, path)
    with tensorfile.open(path, framework="numpy") as f:
        stats = [tensor_stats(f, n) for n in sorted(f.keys())]
        summary = summarize(f, str(path), stats)
    for colour in (False, True):
        root, nodes = Tree(Text(str(path), style="bold")), {}
        for s in stats:
            node, key = root, ""
            for part in s.name.split(".")[:-1]:
                key += "." + part
                if key not in nodes:
                    nodes[key] = node.add(Text(part, style="bold blue"))
                node = nodes[key]
            node.add(_leaf(s.name.split(".")[-1], s))
        console = Console(width=70, force_terminal=colour, color_system="standard" if colour else None, highlight=False,
                          record=False, file=__import__("io").StringIO())  # fmt: skip
        console.print(root)
        drawn = render(summary, stats, None, 70, colour)
        assert drawn.endswith(console.file.getvalue()), colour


def test_output_never_replaces_an_input(tmp_path):
    """``-o model.pt`` given with ``model.pt`` (or a step's file of the folder reported) once replaced the
    model with the page; now one error line and the input untouched. The folder's top level is fine."""
    model = tmp_path / "m.tensorfile"
    tensorfile.save({"w": np.ones(3)}, model)
    before = model.read_bytes()
    os.symlink(model, tmp_path / "link.tensorfile")
    for given in (str(model), str(tmp_path / "link.tensorfile")):
        result = CliRunner().invoke(cli.main, ["report", given, "-o", str(model)])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert "is one of the inputs: the page would replace it; give -o another file" in result.output
    assert model.read_bytes() == before
    run = tmp_path / "run"
    _run(run, [{"w": np.ones(2)}], [{"loss": 1.0}])
    state = run / "step_00000001" / "state.tensorfile"
    before = state.read_bytes()
    result = CliRunner().invoke(cli.main, ["report", str(run), "-o", str(state)])
    assert result.exit_code == 2 and "is inside a step of the input folder" in result.output
    assert state.read_bytes() == before
    result = CliRunner().invoke(cli.main, ["report", str(run), "-o", str(run / "report.html")])
    assert result.exit_code == 0 and (run / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_a_file_without_tensors(tmp_path):
    tensorfile.save({"epoch": 3}, tmp_path / "e.tensorfile")
    result = CliRunner().invoke(cli.main, ["show", str(tmp_path / "e.tensorfile")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == ("tensorfile (safetensors with structure and checksums): 0 tensors, "
                                             "0 bytes; checksums: no tensors to check")  # fmt: skip
    assert result.output.endswith("└── epoch = 3\n")
    html = open(report([str(tmp_path / "e.tensorfile")] * 2, str(tmp_path / "e.html"), Options(), False)).read()
    assert "No tensor is in both files" in html and "no tensors to check" in html


def test_many_metrics_and_huge_ones_draw_quietly():
    """9 metrics were 9 panels squeezed into one 13-inch row (30: matplotlib gave up, "Tight layout not
    applied"); a loss near 1e308 made its transforms overflow. Now rows of 3 panels, the ranking metric
    first, and no warning."""
    metrics = {f"m{i:02d}": [float(i), float(2 * i), None] for i in range(8)}
    metrics["loss"] = [1e308, 5e307, 3e307]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svg = metric_curves([1, 2, 3], metrics, 3, "loss")
    titles = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert titles.index("loss  (ranks the steps)") < titles.index("m00") < titles.index("m07")
    width, height = map(float, re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())
    assert height > 0.5 * width  # 3 rows of 3 (one row: a quarter of its width)


def test_output_to_stdout_and_an_empty_output(tmp_path, monkeypatch):
    """``-o -`` once wrote a file named "-"; ``-o ''`` said "[Errno 21] is a folder: ''"."""
    import subprocess
    import sys

    model = tmp_path / "m.tensorfile"
    tensorfile.save({"w": np.ones(3)}, model)
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.path.dirname(tensorfile.__path__[0]),
                                                                  os.environ.get("PYTHONPATH")) if p))  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "tensorfile", "report", str(model), "-o", "-"], capture_output=True,
                          timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"<!DOCTYPE html>") and b"<code>w</code>" in done.stdout and done.stderr == b""
    assert not (tmp_path / "-").exists()
    result = CliRunner().invoke(cli.main, ["report", str(model), "-o", ""])
    assert result.exit_code == 2
    assert result.output == "tensorfile: error: -o: give the HTML file to write (or '-' for stdout)\n"


def test_heatmap_of_many_steps_keeps_its_labels_apart():
    """59 step pairs once had 59 overlapping "a→b" labels and a percentage in each sliver of a cell."""
    from tensorfile.report.charts import move_heatmap

    steps = [f"{i}→{i + 1}" for i in range(59)]
    svg = move_heatmap(["b", "w"], steps, [[math.inf] + [0.1] * 58, [0.2] * 59])
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert sum("→" in t and t != "from step → to step" for t in texts) <= 12
    assert not any(t.endswith("%") for t in texts)


def test_show_names_at_most_20_bad_tensors_at_the_top(tmp_path):
    tensorfile.save({f"t{i:03d}": np.full(2, np.nan) for i in range(150)}, tmp_path / "nan.tensorfile")
    result = CliRunner().invoke(cli.main, ["show", str(tmp_path / "nan.tensorfile")])
    text = " ".join(result.output.split())
    assert "⚠ 150 tensor(s) hold NaN or inf: t000, t001," in text and ", t019 and 130 more /" in text


def test_show_into_a_pipe_keeps_each_line_whole(tmp_path):
    """Not a terminal: no wrapping at 160 columns, so `tensorfile show f | grep name` finds a tensor's stats."""
    name = "encoder.layers.0.self_attention.query_key_value." + "very_long_" * 20 + "weight"
    tensorfile.save({name: np.arange(6.0)}, tmp_path / "l.tensorfile")
    result = CliRunner().invoke(cli.main, ["show", str(tmp_path / "l.tensorfile")])
    line = next(x for x in result.output.splitlines() if "very_long_weight" in x)
    stats = r"float64 \[6\]  mean 2.5 std 1.708 \[0, 5\]  zeros 16.7%  [█ ]+$"
    assert re.search(r"└── (very_long_){20}weight  " + stats, line)
    assert len(line) > 250
