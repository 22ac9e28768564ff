"""The ``tensorfile`` command line.

``tensorfile ls FILE`` lists every tensor (name, dtype, shape, bytes) and totals;
``--json`` prints the same as JSON. Errors print one line and exit with code 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .errors import TensorFileError
from .files import TensorFile
from .files import open as open_file

__all__ = ["main"]


def _fail(message: str) -> None:
    click.echo(f"tensorfile: error: {message}", err=True)
    sys.exit(2)


def _open(path: str) -> TensorFile:
    try:
        return open_file(path)
    except FileNotFoundError:
        _fail(f"{path}: no such file")
    except OSError as exc:
        _fail(f"{path}: {exc.strerror or exc}")
    except TensorFileError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


def _shown(name: str) -> str:
    """A tensor name as a table shows it: quoted when empty or holding control characters."""
    return name if name and name.isprintable() and name.strip() == name else repr(name)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tensorfile")
def main() -> None:
    """Inspect tensorfile and safetensors files."""


@main.command("ls")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ls_command(file: str, as_json: bool) -> None:
    """List the tensors in FILE: name, dtype, shape, bytes, and totals."""
    with _open(file) as f:
        rows = [f.info(name) for name in sorted(f.keys())]
        metadata = f.metadata
    total = sum(r.nbytes for r in rows)
    if as_json:
        doc: dict[str, Any] = {
            "file": file,
            "tensors": [{"name": r.name, "dtype": r.dtype, "shape": list(r.shape), "nbytes": r.nbytes} for r in rows],
            "total": {"tensors": len(rows), "nbytes": total},
            "metadata": metadata,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    table = [("NAME", "DTYPE", "SHAPE", "BYTES")] + [
        (_shown(r.name), r.dtype, "(" + ", ".join(map(str, r.shape)) + ("," if len(r.shape) == 1 else "") + ")", str(r.nbytes))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        click.echo(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]:>{widths[3]}}")
    for key, value in sorted(metadata.items()):
        click.echo(f"metadata {_shown(key)}: {_shown(value)}")
    click.echo(f"{len(rows)} tensor{'' if len(rows) == 1 else 's'}, {total} bytes ({_size(total)})")


if __name__ == "__main__":  # pragma: no cover
    main()
