"""What ``tensorfile ls`` prints, and the text helpers every command of the CLI shares.

Imports neither click nor NumPy: the click command (:mod:`tensorfile.cli`) and the console script's fast
path (:mod:`tensorfile.cli_fast`) print through :func:`ls_lines`, so both print the same bytes.
"""

from __future__ import annotations

import json

from .errors import TensorFileError
from .model.graph import MODEL_KEY

__all__ = ["Row", "ls_lines", "one_line", "shown", "abbreviated", "size_text", "error_line"]

#: One tensor of a listing: name, dtype name (``"float32"``, ``"bfloat16"``, ``"complex128"``...), shape, bytes.
Row = tuple[str, str, tuple[int, ...], int]


def one_line(message: str) -> str:
    """``message`` on one line: control characters a file put in a name are shown escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)


def error_line(message: str) -> str:
    """The line an error prints on stderr before the CLI exits with code 2."""
    return f"tensorfile: error: {one_line(message)}"


def shown(name: str) -> str:
    """A name or value as a table shows it: quoted when empty or holding control characters."""
    return name if name and name.isprintable() and name.strip() == name else repr(name)


def abbreviated(value: str, limit: int = 200) -> str:
    """A metadata value for a table: shown whole up to ``limit`` characters (``--json`` prints all)."""
    return shown(value) if len(value) <= limit else shown(value[:limit]) + f"... ({len(value)} characters)"


def size_text(n: float) -> str:
    """``n`` bytes for people: ``"512 B"``, ``"20.0 KiB"``, ``"1.5 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def ls_lines(file: str, rows: list[Row], metadata: dict[str, str], as_json: bool) -> list[str]:
    """The lines ``tensorfile ls`` prints for ``file``: its tensors ``rows`` (sorted by name) and its user
    ``metadata``, as a table with the metadata, the model graph of a ``save_model`` file and totals, or as
    one JSON document (``--json``)."""
    total = sum(r[3] for r in rows)
    if as_json:
        doc = {
            "file": file,
            "tensors": [{"name": n, "dtype": d, "shape": list(s), "nbytes": b} for n, d, s, b in rows],
            "total": {"tensors": len(rows), "nbytes": total},
            "metadata": metadata,
        }
        return [json.dumps(doc, indent=2)]
    table = [("NAME", "DTYPE", "SHAPE", "BYTES")] + [
        (shown(n), d, "(" + ", ".join(map(str, s)) + ("," if len(s) == 1 else "") + ")", str(b)) for n, d, s, b in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}" for r in table]
    metadata = dict(metadata)
    graph = metadata.pop(MODEL_KEY, None)
    lines += [f"metadata {shown(key)}: {abbreviated(value)}" for key, value in sorted(metadata.items())]
    if graph is not None:
        lines += _graph_lines(file, graph, {n: s for n, _, s, _ in rows})
    lines.append(f"{len(rows)} tensor{'' if len(rows) == 1 else 's'}, {total} bytes ({size_text(total)})")
    return lines


def _graph_lines(path: str, text: str, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The model graph of a ``save_model`` file, one line a node (``docs/FORMAT.md``, "Model graphs")."""
    from .model import graph_summary
    from .model.graph import parse_graph

    try:
        graph = parse_graph(text, shapes, path)
    except TensorFileError as exc:
        return [f"model graph: not valid: {exc}"]
    lines = graph_summary(graph)
    return [f"model graph ({shown(graph.framework or 'unknown')}, {len(graph.nodes)} nodes):"] + ["  " + line for line in lines]
