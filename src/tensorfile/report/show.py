"""``tensorfile show``: a file's structure as a tree in the terminal, each tensor with its statistics and a
one-line histogram of Unicode blocks (drawn with rich; NaN and inf in bold red)."""

from __future__ import annotations

import io
from typing import Any, Callable, Iterable, Mapping

from .names import shown
from .sparks import histogram_blocks
from .stats import TensorStats
from .summary import FileSummary

__all__ = ["render", "tree_lines"]


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _leaf(label: str, s: TensorStats) -> Any:
    from rich.text import Text

    text = Text()
    text.append(shown(label), style="bold")
    text.append(f"  {s.dtype} {list(s.shape)}", style="cyan")
    if s.mean is not None:
        text.append(f"  mean {_num(s.mean)} std {_num(s.std)} [{_num(s.min)}, {_num(s.max)}]")
    if s.zero_fraction:
        text.append(f"  zeros {100 * s.zero_fraction:.1f}%")
    bars = histogram_blocks(s)
    if bars.strip():
        text.append(f"  {bars}", style="green")
    if s.bad:
        counts = ", ".join(f"{n:,} {k}" for k, n in (("NaN", s.nan), ("+inf", s.posinf), ("-inf", s.neginf)) if n)
        text.append(f"  ⚠ {counts}", style="bold red")
    if s.notes:
        text.append(f"  ({'; '.join(s.notes)})", style="dim")
    return text


class _Branch:
    """One level of the tree: its entries in order, each ``(label, branch or None)``."""

    __slots__ = ("entries", "branches")

    def __init__(self) -> None:
        self.entries: list[tuple[Any, "_Branch | None"]] = []
        self.branches: dict[str, _Branch] = {}


def tree_lines(title: str, stats: Iterable[TensorStats],
               values: Mapping[str, Any] | None = None) -> list[tuple[str, str, Any]]:  # fmt: skip
    """The tree drawn as lines: names split at dots into branches, each tensor a leaf with its statistics;
    ``values`` (the file's values other than tensors: an epoch, a learning rate) as leaves too.

    Returns:
        ``(guide, continuation, label)`` per line, ``label`` a ``rich.text.Text``: ``guide`` is the line's
        ``├── `` / ``└── `` prefix, ``continuation`` the prefix for the label's wrapped lines. Drawn here,
        not by ``rich.tree.Tree``, which takes seconds for a file of 10,000 tensors.
    """
    from rich.text import Text

    root = _Branch()
    leaves: list[tuple[str, Callable[[str], Any]]] = []
    for s in stats:
        leaves.append((s.name, lambda label, s=s: _leaf(label, s)))
    for name, value in (values or {}).items():
        leaves.append((name, lambda label, v=value: Text(f"{shown(label)} = {v!r}", style="magenta")))
    for name, make in sorted(leaves, key=lambda item: item[0]):
        parts = name.split(".")
        if "" in parts:  # ".", "a..b", "x.": no tree to draw from it; the name whole, at the top
            parts = [name]
        node = root
        for part in parts[:-1]:
            if part not in node.branches:
                node.branches[part] = _Branch()
                node.entries.append((Text(shown(part), style="bold blue"), node.branches[part]))
            node = node.branches[part]
        node.entries.append((make(parts[-1]), None))
    lines: list[tuple[str, str, Any]] = [("", "", Text(shown(title), style="bold"))]

    def walk(node: _Branch, prefix: str) -> None:
        for i, (label, branch) in enumerate(node.entries):
            last = i == len(node.entries) - 1
            below = prefix + ("    " if last else "│   ")
            lines.append((prefix + ("└── " if last else "├── "), below, label))
            if branch is not None:
                walk(branch, below)

    walk(root, "")
    return lines


def render(summary: FileSummary, stats: list[TensorStats], values: Mapping[str, Any] | None, width: int,
           colour: bool) -> str:  # fmt: skip
    """The whole ``show`` output as text: a summary line, loud lines for NaN/inf, then the tree."""
    from rich.console import Console
    from rich.text import Text

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=colour, color_system="standard" if colour else None,
                      highlight=False, soft_wrap=False)  # fmt: skip
    dtypes = ", ".join(f"{k} × {v}" for k, v in summary.dtypes.items())
    head = Text(summary.format, style="bold")
    head.append(f": {summary.tensors} tensors, {summary.nbytes:,} bytes" + (f" ({dtypes})" if dtypes else "")
                + (f"; framework {', '.join(summary.frameworks)}" if summary.frameworks else "")
                + f"; checksums: {summary.checksums}")  # fmt: skip
    console.print(head)
    if summary.bad:
        more = len(summary.bad) - 20
        bad = ", ".join(shown(n) for n in summary.bad[:20]) + (f" and {more:,} more" if more > 0 else "")
        console.print(Text(f"⚠ {len(summary.bad)} tensor(s) hold NaN or inf: {bad}", style="bold red"))
    out = []
    for guide, continuation, label in tree_lines(summary.path, stats, values):
        if len(guide) + label.cell_len <= width:
            out.append(Text(guide) + label)
            continue
        wrapped = label.wrap(console, max(width - len(continuation), 8))  # a long name or line: wrapped under its guide
        out.extend(Text(guide if i == 0 else continuation) + part for i, part in enumerate(wrapped))
    if not colour:
        return buffer.getvalue() + "".join(line.plain + "\n" for line in out)
    from rich.color import ColorSystem

    # each line's styled pieces as ANSI, not through console.print (it re-wraps: seconds for 10,000 lines)
    parts = [buffer.getvalue()]
    for line in out:
        for piece in line.render(console, end="\n"):
            style = piece.style
            parts.append(style.render(piece.text, color_system=ColorSystem.STANDARD) if style else piece.text)
    return "".join(parts)
