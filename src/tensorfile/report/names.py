"""Tensor names (and paths) as a report shows them.

A name is whatever a file says: it may hold a newline, a terminal escape sequence (``ESC ] 0 ; ...``), a
right-to-left override or a matplotlib math delimiter (``$``). :func:`shown` writes every character that
is not printable as its Python escape, so the terminal prints the name and is not driven by it, and the
page shows what is really there; :func:`chart_label` also shortens a long name for a chart's axis (the
tables keep it whole) and escapes ``$`` so matplotlib draws it as text, not TeX.
"""

from __future__ import annotations

__all__ = ["shown", "chart_label", "LABEL_CHARS"]

#: Most characters of a name on a chart's axis (longer ones keep their start and end around "…").
LABEL_CHARS = 60


def shown(name: str) -> str:
    """``name`` with each character that ``str.isprintable`` rejects (controls such as newline and ESC,
    invisible format characters such as U+202E) written as ``\\n``, ``\\x1b``, ``\\u202e``."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in name)


def chart_label(name: str, most: int = LABEL_CHARS) -> str:
    """``name`` for a matplotlib text: :func:`shown`, at most ``most`` characters (the middle of a longer
    one replaced by "…"), ``$`` escaped (matplotlib would read ``$...$`` as math)."""
    text = shown(name)
    if len(text) > most:
        keep = (most - 1) // 2
        text = text[:keep] + "…" + text[len(text) - (most - 1 - keep) :]
    return text.replace("$", r"\$")
