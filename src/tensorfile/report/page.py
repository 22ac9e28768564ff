"""The report as one static HTML page: inline CSS and SVG, no script, nothing fetched (it opens from disk,
offline). Every chart is an element with a ``data-chart`` attribute naming it (the browser test finds
them so)."""

from __future__ import annotations

import math
from html import escape as _escape
from typing import Sequence

from ..cli_ls import size_text
from .diff import FileDiff
from .folder import FolderView
from .names import shown
from .sparks import histogram_svg
from .stats import TensorStats
from .summary import FileSummary

__all__ = ["page", "file_section", "diff_section", "folder_section", "chart"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2933;color:#fff;padding:14px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#cbd2d9;font-size:13px}
main{padding:8px 28px 40px;max-width:1400px}
section{background:#fff;border:1px solid #e4e7eb;border-radius:6px;padding:14px 20px;margin:18px 0;overflow-x:auto}
h2{font-size:17px;margin:0 0 10px;word-break:break-all}h3{font-size:15px;margin:18px 0 8px}
table{border-collapse:collapse;font-size:12.5px}td,th{padding:3px 9px;border-bottom:1px solid #eef0f2;text-align:left;
vertical-align:middle}th{background:#f5f7fa;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.summary td:first-child{color:#52606d;width:120px}code{font-size:12px;overflow-wrap:anywhere}
.alert{background:#fdecea;border:2px solid #c0392b;color:#8e1b10;border-radius:6px;padding:10px 14px;margin:10px 0;
font-weight:600}.bad{background:#fdecea;color:#c0392b;font-weight:700}.badrow{background:#fdf1ef}.badge{display:inline-block;border-radius:10px;
padding:0 8px;font-size:11.5px;font-weight:600}.best{background:#e4572e;color:#fff}.kept{background:#d9f0d3;color:#1e6b1e}
.latest{background:#dbe9f6;color:#1f4e79}.note{color:#7b8794;font-size:11.5px}.chart{margin:8px 0;overflow-x:auto}
.chart-svg{max-width:100%;height:auto}.ok{color:#1e6b1e}
"""


def escape(text: str) -> str:
    """``text`` (a name, a path, metadata) for HTML: unprintable characters as escapes (:func:`.names.shown`),
    then ``& < > " '`` as entities."""
    return _escape(shown(text))


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return f"{value:.4g}"


def chart(svg: str, name: str) -> str:
    """A large chart (SVG text) in a block the browser test measures (``data-chart=name``)."""
    return f'<div class="chart" data-chart="{escape(name)}">{svg}</div>'


def _tensor_rows(stats: Sequence[TensorStats]) -> str:
    rows = []
    for s in stats:
        zero = "–" if s.zero_fraction is None else f"{100 * s.zero_fraction:.2f}%"
        nan = f'<td class="num bad">{s.nan:,}</td>' if s.nan else '<td class="num">0</td>'
        inf = s.posinf + s.neginf
        inf_cell = f'<td class="num bad">{inf:,}</td>' if inf else '<td class="num">0</td>'
        notes = "; ".join(s.notes)
        rows.append(
            f'<tr{" class=badrow" if s.bad else ""}><td><code>{escape(s.name)}</code>'
            f'{f"<div class=note>{escape(notes)}</div>" if notes else ""}</td>'
            f"<td>{escape(str(list(s.shape)))}</td><td>{escape(s.dtype)}</td>"
            f'<td class="num">{_num(s.mean)}</td><td class="num">{_num(s.std)}</td><td class="num">{_num(s.min)}</td>'
            f'<td class="num">{_num(s.max)}</td><td class="num">{zero}</td>{nan}{inf_cell}<td>{histogram_svg(s)}</td></tr>'
        )  # fmt: skip
    return "".join(rows)


def file_section(summary: FileSummary, stats: Sequence[TensorStats], title: str | None = None) -> str:
    """A file's summary, a loud box naming tensors with NaN or inf, and its tensor table."""
    dtypes = ", ".join(f"{escape(k)} × {v}" for k, v in summary.dtypes.items()) or "–"
    meta = "".join(f"<tr><td>{escape(k)}</td><td><code>{escape(v[:300])}</code></td></tr>"
                   for k, v in sorted(summary.metadata.items()) if not k.startswith("tensorfile."))  # fmt: skip
    alert = ""
    if summary.bad:
        names = ", ".join(escape(n) for n in summary.bad[:20]) + (" ..." if len(summary.bad) > 20 else "")
        alert = (f'<div class="alert">⚠ {len(summary.bad)} tensor{"s" if len(summary.bad) > 1 else ""} hold NaN or '
                 f"infinite values: {names}</div>")  # fmt: skip
    return f"""<section class="file"><h2>{escape(title or summary.path)}</h2>{alert}
<table class="summary"><tr><td>format</td><td>{escape(summary.format)}</td></tr>
<tr><td>tensors</td><td>{summary.tensors:,}</td></tr>
<tr><td>bytes</td><td>{summary.nbytes:,} ({escape(size_text(summary.nbytes))})</td></tr>
<tr><td>dtypes</td><td>{dtypes}</td></tr><tr><td>framework</td><td>{escape(", ".join(summary.frameworks))}</td></tr>
<tr><td>checksums</td><td>{escape(summary.checksums)}</td></tr>{meta}</table>
<h3>Tensors</h3><table class="tensors"><tr><th>name</th><th>shape</th><th>dtype</th><th>mean</th><th>std</th><th>min</th>
<th>max</th><th>zeros</th><th>NaN</th><th>inf</th><th>histogram</th></tr>{_tensor_rows(stats)}</table></section>"""


def diff_section(a: str, b: str, diff: FileDiff, bars: str | None) -> str:
    """What changed from file ``a`` to file ``b``: lists, and ``bars`` (the relative-change chart)."""
    items = []
    for label, names in (("added", diff.added), ("removed", diff.removed)):
        if names:
            items.append(f"<p><b>{label}</b> ({len(names)}): " + ", ".join(f"<code>{escape(n)}</code>" for n in names) + "</p>")
    if diff.retyped:
        items.append("<p><b>shape or dtype changed</b>:</p><ul>" + "".join(
            f"<li><code>{escape(n)}</code>: {escape(x)} → {escape(y)}</li>" for n, x, y in diff.retyped) + "</ul>")  # fmt: skip
    if not items:
        items.append("<p>No tensor added, removed, or changed in shape or dtype.</p>")
    if diff.changes and all(c.relative == 0 for c in diff.changes):
        items.append(f"<p>Every tensor in both ({len(diff.changes)}) holds the same values.</p>")
    if not diff.changes and not diff.retyped:
        items.append("<p><b>No tensor is in both files</b>: nothing to compare by name.</p>")
    table = "".join(f"<tr><td><code>{escape(c.name)}</code></td><td class=num>{_num(100 * c.relative)}%</td>"
                    f"<td class=num>{_num(c.max_abs)}</td></tr>" for c in diff.most(len(diff.changes)))  # fmt: skip
    return f"""<section class="diff"><h2>Diff: {escape(a)} → {escape(b)}</h2>{"".join(items)}
{chart(bars, "relative change per tensor") if bars else ""}
<h3>Every tensor in both</h3><table><tr><th>name</th><th>relative change</th><th>max |b − a|</th></tr>{table}</table></section>"""


def _damaged(damaged: Sequence[tuple[int, str]]) -> str:
    """A loud box naming each step that cannot be read (left out of the charts), or nothing."""
    if not damaged:
        return ""
    items = "".join(f"<li>step {step}: {escape(why)}</li>" for step, why in damaged)
    return (f'<div class="alert">⚠ {len(damaged)} step folder{"s" if len(damaged) > 1 else ""} cannot be read '
            f"(a crashed or damaged save; left out below, as restore skips them):<ul>{items}</ul></div>")


def folder_section(view: FolderView, curves: str | None, heatmap: str | None, bars: str | None,
                   others: dict[str, float] | None = None, skipped: dict[str, str] | None = None) -> str:  # fmt: skip
    """A checkpoint folder: its steps (best, kept, latest), metric curves, the move heatmap and bars of the
    model's tensors, a table of the other state's moves (``others``: name -> largest move), and the
    tensors no two steps could be compared on (``skipped``: name -> "new" or "reshaped")."""
    names = view.metric_names
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    rows = []
    for s in view.steps:
        badges = '<span class="badge kept">kept</span>'
        if s.step == view.best:
            badges += f' <span class="badge best">best ({escape(view.mode)} {escape(view.metric or "")})</span>'
        if s is view.steps[-1]:
            badges += ' <span class="badge latest">latest</span>'
        cells = "".join(f"<td class=num>{_num(s.metrics.get(n))}</td>" for n in names)
        rows.append(f"<tr><td class=num>{s.step}</td>{cells}<td class=num>{escape(size_text(s.nbytes))}</td><td>{badges}</td></tr>")
    best = (f"Best step: <b>{view.best}</b> by {escape(view.metric or '')} ({escape(view.mode)})." if view.best is not None
            else "No step records a finite metric to rank by.")  # fmt: skip
    parts = [f'<section class="folder"><h2>Checkpoint folder: {escape(view.path)}</h2>',
             f"<p>{len(view.steps)} kept step{'s' if len(view.steps) != 1 else ''} on disk. {best}</p>",
             _damaged(view.damaged),
             f"<table><tr><th>step</th>{head}<th>data</th><th></th></tr>{''.join(rows)}</table>"]  # fmt: skip
    if curves:
        parts.append(chart(curves, "metrics over steps"))
    if bars:
        parts.append(chart(bars, "largest move per tensor"))
    if heatmap:
        parts.append(chart(heatmap, "tensors x steps heatmap"))
    if others:
        rows = "".join(f"<tr><td><code>{escape(n)}</code></td><td class=num>{_num(100 * v)}%</td></tr>"
                       for n, v in sorted(others.items()))  # fmt: skip
        parts.append(f"<h3>Other state (optimizer, schedulers...): largest move between kept steps</h3>"
                     f"<table><tr><th>name</th><th>largest move</th></tr>{rows}</table>")  # fmt: skip
    if skipped:
        listed = ", ".join(f"<code>{escape(n)}</code> ({escape(w)})" for n, w in sorted(skipped.items()))
        parts.append(f"<p>Not compared between any two kept steps (added at the last, or another shape or dtype "
                     f"at each): {listed}</p>")  # fmt: skip
    parts.append("</section>")
    return "".join(parts)


def page(title: str, inputs: Sequence[str], sections: Sequence[str], generated: str) -> str:
    """The whole HTML document."""
    listed = " · ".join(escape(p) for p in inputs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>{escape(title)}</title><style>{_CSS}</style></head>
<body><header><h1>{escape(title)}</h1><p>{listed} · made by tensorfile {escape(generated)}</p></header>
<main>{"".join(sections)}</main></body></html>
"""
