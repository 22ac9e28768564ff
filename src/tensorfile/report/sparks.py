"""A tensor's histogram drawn small: an inline SVG of a few dozen bars for the report's tensor table
(one per tensor, so a file of thousands of tensors stays a page of a few MiB that opens at once), and a
line of Unicode blocks for ``tensorfile show``. NaN and infinite values get bars of their own, in red.
"""

from __future__ import annotations

from html import escape

import numpy as np

from .names import shown
from .stats import TensorStats

__all__ = ["histogram_svg", "histogram_blocks", "histogram_line", "BLOCKS"]

#: Unicode blocks from empty to full (eighths).
BLOCKS = " ▁▂▃▄▅▆▇█"
_WIDTH, _HEIGHT, _BAD_BAR, _TOP = 180, 34, 16, 10  # _TOP: a row above the bars for the NaN / inf labels


def _number(value: float) -> str:
    return f"{value:.3g}"


def histogram_svg(stats: TensorStats) -> str:
    """An SVG element (180 x 56 px) of ``stats.hist``, the range under it, and red bars for NaN, +inf
    and -inf when the tensor holds any (their height on the same scale as the bins, at least a third),
    labelled above."""
    hist = stats.hist
    bad = [(label, n) for label, n in (("NaN", stats.nan), ("+inf", stats.posinf), ("-inf", stats.neginf)) if n]
    if hist is None and not bad:
        return ""
    counts = hist.counts.astype(np.float64) if hist is not None else np.zeros(0)
    scale = max(float(counts.max()) if counts.size else 0.0, 1.0)
    sampled_fraction = (counts.sum() / stats.finite) if stats.finite and counts.sum() else 1.0
    bins_width = _WIDTH - (_BAD_BAR + 4) * len(bad)
    base = _TOP + _HEIGHT
    parts = []
    if counts.size:
        w = bins_width / counts.size
        for i, c in enumerate(counts):
            if c:
                h = max(1.0, (_HEIGHT - 2) * c / scale)
                parts.append(f'<rect x="{i * w:.2f}" y="{base - h:.2f}" width="{max(w - 0.6, 0.6):.2f}" '
                             f'height="{h:.2f}" fill="#4c78a8"/>')  # fmt: skip
    x = bins_width + 4
    for label, n in bad:
        h = max(_HEIGHT / 3, min(_HEIGHT - 2, (_HEIGHT - 2) * n * sampled_fraction / scale))
        parts.append(f'<rect x="{x}" y="{base - h:.2f}" width="{_BAD_BAR}" height="{h:.2f}" fill="#c0392b">'
                     f"<title>{n:,} {label}</title></rect>")  # fmt: skip
        parts.append(f'<text x="{x + _BAD_BAR / 2}" y="{_TOP - 2}" font-size="7" font-weight="bold" fill="#c0392b" '
                     f'text-anchor="middle">{escape(label)}</text>')  # fmt: skip
        x += _BAD_BAR + 4
    if hist is not None and stats.min is not None and stats.max is not None:
        lo, hi = _number(float(stats.min)), _number(float(stats.max))
        parts.append(f'<text x="0" y="{base + 10}" font-size="8" fill="#555">{lo}</text>')
        parts.append(f'<text x="{bins_width}" y="{base + 10}" font-size="8" fill="#555" text-anchor="end">{hi}</text>')
    parts.append(f'<line x1="0" y1="{base}" x2="{_WIDTH}" y2="{base}" stroke="#999" stroke-width="0.5"/>')
    title = escape(f"histogram of {shown(stats.name)}")
    height = base + 12
    return (f'<svg class="spark" data-chart="{title}" width="{_WIDTH}" height="{height}" '
            f'viewBox="0 0 {_WIDTH} {height}" role="img" aria-label="{title}">{"".join(parts)}</svg>')  # fmt: skip


def histogram_blocks(stats: TensorStats, width: int = 24) -> str:
    """The histogram as at most ``width`` Unicode block characters (neighbouring bins summed in equal
    groups, so no bar gets more bins than another); a space for an empty bin; empty when there is nothing
    to draw."""
    hist = stats.hist
    if hist is None or not hist.counts.size:
        return ""
    counts = hist.counts.astype(np.float64)
    group = -(-counts.size // width)
    if group > 1:
        counts = np.concatenate([counts, np.zeros((-counts.size) % group)]).reshape(-1, group).sum(axis=1)
    top = counts.max() or 1.0
    levels = np.where(counts == 0, 0, np.maximum(1, np.rint(8 * counts / top))).astype(np.int64)
    return "".join([BLOCKS[i] for i in levels.tolist()])


def histogram_line(stats: TensorStats, width: int = 24) -> str:
    """:func:`histogram_blocks`, then ``NaN``, ``+inf``, ``-inf`` marks for those the tensor holds."""
    marks = [label for label, n in (("NaN", stats.nan), ("+inf", stats.posinf), ("-inf", stats.neginf)) if n]
    return histogram_blocks(stats, width) + ("  " + " ".join(marks) if marks else "")
