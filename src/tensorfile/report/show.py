"""``tensorfile show``: a file's structure as a tree in the terminal, each tensor with its statistics and a
one-line histogram of Unicode blocks (drawn with rich; NaN and inf in bold red)."""

from __future__ import annotations

import io
from typing import Any, Callable, Iterable, Mapping

from .names import shown
from .sparks import histogram_blocks
from .stats import TensorStats
from .summary import FileSummary

__all__ = ["render", "tree_of"]


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


def tree_of(title: str, stats: Iterable[TensorStats], values: Mapping[str, Any] | None = None) -> Any:
    """A ``rich.tree.Tree``: names split at dots into branches, each tensor a leaf with its statistics;
    ``values`` (the file's values other than tensors: an epoch, a learning rate) as leaves too."""
    from rich.text import Text
    from rich.tree import Tree

    root = Tree(Text(shown(title), style="bold"))
    branches: dict[str, Any] = {"": root}

    def branch(parts: list[str]) -> Any:
        key = ""
        node = root
        for part in parts:
            key = f"{key}.{part}" if key else part
            if key not in branches:
                branches[key] = node.add(Text(shown(part), style="bold blue"))
            node = branches[key]
        return node

    leaves: list[tuple[str, Callable[[Any, str], None]]] = []
    for s in stats:
        leaves.append((s.name, lambda node, label, s=s: node.add(_leaf(label, s))))
    for name, value in (values or {}).items():
        leaves.append((name, lambda node, label, v=value: node.add(Text(f"{shown(label)} = {v!r}", style="magenta"))))
    for name, add in sorted(leaves, key=lambda item: item[0]):
        parts = name.split(".")
        if "" in parts:  # ".", "a..b", "x.": no tree to draw from it; the name whole, at the top
            parts = [name]
        add(branch(parts[:-1]), parts[-1])
    return root


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
    head.append(f": {summary.tensors} tensors, {summary.nbytes:,} bytes ({dtypes}); framework "
                f"{', '.join(summary.frameworks)}; checksums: {summary.checksums}")  # fmt: skip
    console.print(head)
    if summary.bad:
        bad = ", ".join(shown(n) for n in summary.bad)
        console.print(Text(f"⚠ {len(summary.bad)} tensor(s) hold NaN or inf: {bad}", style="bold red"))
    console.print(tree_of(summary.path, stats, values))
    return buffer.getvalue()
