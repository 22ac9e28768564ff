"""The report's large charts, drawn with matplotlib's SVG backend (no display, no network) and returned as
SVG text to put inline in the page: bars of relative change per tensor, a heatmap of tensors x steps,
and metric curves over steps.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from typing import Any, Iterator, Sequence

from .names import chart_label

__all__ = ["change_bars", "move_heatmap", "metric_curves", "HIGHLIGHT", "PLAIN", "BAD"]

#: Colour of the tensor that changed most, of the others, and of NaN / inf.
HIGHLIGHT, PLAIN, BAD = "#e4572e", "#4c78a8", "#c0392b"
#: Most tensors in a bar chart or heatmap (the largest changes).
MOST_ROWS = 40


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)  # never a window; SVG is written by its own backend
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 10, "axes.spines.top": False,
                         "axes.spines.right": False})  # fmt: skip
    return plt


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """matplotlib's warnings that say nothing about the page: text is drawn by the browser (svg.fonttype
    none), with fonts that have Hangul where matplotlib's own have not; ticks of values near 1e308."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Glyph .* missing from font")
        warnings.filterwarnings("ignore", "overflow", RuntimeWarning)
        warnings.filterwarnings("ignore", "invalid value", RuntimeWarning)
        yield


def _svg(fig: Any) -> str:
    """``fig`` as an ``<svg>`` element (no XML prolog), sized by its viewBox to fit the page's width."""
    plt = _pyplot()
    buf = io.StringIO()
    with _quiet():
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    return text.replace("<svg ", '<svg class="chart-svg" ', 1)


def _percent(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf"
    return f"{100 * value:.3g}%"


def change_bars(changes: Sequence[tuple[str, float]], title: str) -> str:
    """Horizontal bars of each tensor's relative change (``(name, value)``; 0.01 is 1%), largest first,
    the largest in :data:`HIGHLIGHT` and labelled; NaN / inf drawn full length in :data:`BAD`."""
    plt = _pyplot()
    rows = list(changes)[:MOST_ROWS]
    finite = [v for _, v in rows if math.isfinite(v)]
    top = max(finite) if finite else 1.0
    top = top if top > 0 else 1.0
    fig, ax = plt.subplots(figsize=(8.5, 0.9 + 0.28 * max(len(rows), 1)))
    names = [chart_label(n) for n, _ in rows][::-1]
    values = [v if math.isfinite(v) else top for _, v in rows][::-1]
    colours = [BAD if not math.isfinite(v) else PLAIN for _, v in rows][::-1]
    first_finite = next((i for i, (_, v) in enumerate(rows) if math.isfinite(v)), None)
    if first_finite is not None and rows[first_finite][1] == 0:  # nothing moved: no tensor "changed most"
        first_finite = None
        title = f"{title}\nno tensor changed: every one is identical" if len(finite) == len(rows) else title
    if first_finite is not None:
        colours[len(rows) - 1 - first_finite] = HIGHLIGHT
    ax.barh(range(len(rows)), values, color=colours, height=0.7)
    ax.set_yticks(range(len(rows)), names, fontsize=9)
    for y, (_, v) in enumerate(rows[::-1]):
        ax.text(min(v, top) if math.isfinite(v) else top, y, " " + _percent(v), va="center", fontsize=8,
                color=BAD if not math.isfinite(v) else "#333333")  # fmt: skip
    ax.set_xlim(0, top * 1.18)
    ax.xaxis.set_major_formatter(lambda x, _: f"{100 * x:.3g}%")
    ax.set_xlabel("relative change  ||b - a|| / ||a||")
    if first_finite is not None:
        name, value = rows[first_finite]
        title = f"{title}\nchanged most: {chart_label(name)} ({_percent(value)})"
    ax.set_title(title, loc="left", fontsize=11)
    return _svg(fig)


def move_heatmap(names: Sequence[str], steps: Sequence[str], values: Sequence[Sequence[float]],
                 gaps: Sequence[Sequence[str | None]] | None = None) -> str:  # fmt: skip
    """A heatmap of tensors (rows) x step transitions (columns): each cell the tensor's relative change
    between the two steps, on a log colour scale; red, labelled NaN, where the values hold NaN or inf;
    grey, labelled with why (``gaps``: "new", "reshaped"), where the two could not be compared."""
    import numpy as np

    plt = _pyplot()
    from matplotlib.colors import LogNorm

    grid = np.array(values, dtype=np.float64).reshape(len(names), len(steps))
    shown = np.where(np.isfinite(grid) & (grid > 0), grid, np.nan)
    positive = shown[np.isfinite(shown)]
    lo, hi = (float(positive.min()), float(positive.max())) if positive.size else (1e-6, 1.0)
    hi = hi if hi > lo else lo * 10
    shown = np.where(np.isposinf(grid), hi, shown)  # from all zeros to not: as far as the farthest, labelled inf
    fig, ax = plt.subplots(figsize=(min(2.5 + 1.1 * len(steps), 12), 1.2 + 0.3 * max(len(names), 1)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(shown), aspect="auto", cmap=cmap, norm=LogNorm(lo, hi),
                      interpolation="nearest")  # fmt: skip
    ax.set_yticks(range(len(names)), [chart_label(n) for n in names], fontsize=9)
    every = -(-len(steps) // 12)  # at most 12 labels along the bottom
    ax.set_xticks(range(0, len(steps), every), list(steps)[::every], fontsize=9)
    ax.set_xlabel("from step → to step")
    from matplotlib.patches import Rectangle

    why = [list(g) for g in gaps] if gaps is not None else [[None] * len(steps) for _ in names]
    for (r, c), v in np.ndenumerate(grid):
        if math.isnan(v) and why[r][c] is None:  # measured, and gone bad: loud
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, color=BAD))
    if len(names) * len(steps) <= 400 and len(steps) <= 12:  # labels that fit their cells (12 inches at most)
        for (r, c), v in np.ndenumerate(grid):
            light = math.isfinite(v) and v > 0 and math.log(v / lo) < 0.5 * math.log(hi / lo)
            bad = math.isnan(v) and why[r][c] is None
            ax.text(c, r, why[r][c] or _percent(v), ha="center", va="center", fontsize=7,
                    color="white" if light or bad else "black", fontweight="bold" if bad else "normal")  # fmt: skip
    fig.colorbar(image, ax=ax, label="relative change (log scale)", shrink=0.8)
    ax.set_title("How far each tensor moved between kept steps", loc="left", fontsize=11)
    return _svg(fig)


def metric_curves(steps: Sequence[int], metrics: dict[str, Sequence[float | None]], best: int | None,
                  metric: str | None) -> str:  # fmt: skip
    """Each metric over the steps, one small panel each (see :func:`_metric_curves`)."""
    with _quiet():  # a metric near 1e308 makes matplotlib's transforms overflow while it places ticks
        return _metric_curves(steps, metrics, best, metric)


def _metric_curves(steps: Sequence[int], metrics: dict[str, Sequence[float | None]], best: int | None,
                   metric: str | None) -> str:  # fmt: skip
    """Each metric over the steps, one small panel each, on the same step axis (a missing value leaves a
    gap; a NaN or infinite one is a red triangle at the panel's top, labelled), the best step marked by a
    dashed line."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    names = sorted(metrics, key=lambda n: (n != metric, n))  # the metric that ranks the steps first
    pad = max(0.5, 0.04 * (max(steps) - min(steps))) if steps else 0.5
    cols = min(len(names), 3)  # rows of at most 3 panels: 30 metrics stay readable
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        values = [math.nan if v is None else v for v in metrics[name]]
        ax.plot(steps, [v if math.isfinite(v) else math.nan for v in values], marker="o", color=PLAIN)
        if steps:
            ax.set_xlim(min(steps) - pad, max(steps) + pad)
        for x, v in zip(steps, metrics[name]):
            if v is not None and not math.isfinite(v):  # a diverged step: loud, never silently left out
                ax.plot([x], [0.97], marker="v", color=BAD, markersize=8, transform=ax.get_xaxis_transform(),
                        clip_on=False)  # fmt: skip
                ax.text(x, 0.86, _percent(v).replace("inf", "-inf" if v < 0 else "inf"), color=BAD, fontsize=8,
                        fontweight="bold", ha="center", va="top", transform=ax.get_xaxis_transform())  # fmt: skip
        if best is not None:
            ax.axvline(best, color=HIGHLIGHT, linestyle="--", linewidth=1.2)
        if len(steps) <= 8:  # each step its tick (a locator gives 0.75, 1.05... around a single step)
            ax.set_xticks(list(steps))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
        ax.set_xlabel("step")
        ax.set_title(chart_label(name) + ("  (ranks the steps)" if name == metric else ""), loc="left", fontsize=10)
    if best is not None:
        fig.suptitle(f"Metrics at each kept step; dashed: best step {best} by {chart_label(str(metric))}",
                     x=0.01, ha="left", fontsize=11)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / (2.8 * rows)) if best is not None else None)  # room for the title
    return _svg(fig)
