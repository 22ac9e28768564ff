"""The ``report`` and ``show`` commands of the ``tensorfile`` command line (registered on :func:`tensorfile.cli.main`).

``tensorfile report PATH... -o report.html`` writes one static HTML page (:mod:`tensorfile.report`);
``tensorfile show FILE`` prints the file's tree with statistics and one-line histograms, through a pager
when stdout is a terminal and the text is taller than it. Both need ``pip install 'tensorfile[report]'``.
"""

from __future__ import annotations

import os
import shutil
import sys

import click

from . import cli, formats
from .cli import _fail, _folder_message, _opened, _structure_values, limits_option, main
from .errors import TensorFileError

__all__ = ["report_command", "show_command"]

_INSTALL = "pip install 'tensorfile[report]'"


def _size(value: str) -> int | None:
    if value.lower() in ("none", "never", "0"):
        return None
    from .formats.sharded import parse_size

    try:
        return int(value) if value.isascii() and value.isdigit() else parse_size(value)
    except (ValueError, TensorFileError):
        raise click.BadParameter(f"{value!r} is not a size: give bytes, or a number with KB, MB, GB, KiB, MiB, GiB")


_SAMPLE_HELP = "Tensors larger than SIZE are sampled (evenly spaced runs of rows) instead of read whole; 'none': never."


@main.command("report")
@limits_option
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", default="report.html", show_default=True,
              help="The HTML file to write (replaced atomically); '-': the page to stdout.")  # fmt: skip
@click.option("--sample-above", metavar="SIZE", default="256MiB", show_default=True, help=_SAMPLE_HELP)
@click.option("--best-metric", default=None, help="Metric that ranks a checkpoint folder's steps (default: loss, if recorded).")
@click.option("--best-mode", type=click.Choice(["min", "max"]), default="min", show_default=True,
              help="Whether the smallest or largest --best-metric is best.")  # fmt: skip
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on stderr (default: on a terminal, for 64 MiB or more).")  # fmt: skip
def report_command(paths: tuple[str, ...], output: str, sample_above: str, best_metric: str | None, best_mode: str,
                   progress: bool | None) -> None:  # fmt: skip
    """Write one self-contained HTML page (no network needed) about PATHS: per file, a summary and every
    tensor's statistics and histogram; for two files, what changed; for a CheckpointManager folder, the
    metrics over steps, the best and kept steps and how far each tensor moved between steps."""
    try:
        from .report import Options, report
        from .report.folder import is_checkpoint_folder
    except ImportError as exc:
        _fail(f"tensorfile report needs matplotlib ({exc}); {_INSTALL}")
    for path in paths:
        if os.path.isdir(path) and not is_checkpoint_folder(path) and formats.in_folder(path) is None \
                and formats.detect_folder(path) is None:  # fmt: skip
            _fail(_folder_message(path) + "; or a CheckpointManager folder (step_<N> folders)")
    options = Options(_size(sample_above), best_metric, best_mode, cli._LIMITS[0])
    if not output:
        _fail("-o: give the HTML file to write (or '-' for stdout)")
    if output == "-":
        _report_to_stdout(list(paths), options, progress)
        return
    try:
        report(list(paths), output, options, progress)
    except IsADirectoryError as exc:
        _fail(f"{exc.filename}: is a folder" if exc.filename else str(exc))
    except FileNotFoundError as exc:
        _fail(f"{exc.filename}: no such file or folder" if exc.filename else str(exc))
    except ImportError as exc:
        _fail(f"tensorfile report: {exc}; {_INSTALL}")
    click.echo(f"wrote {output} ({os.path.getsize(output):,} bytes)")


def _report_to_stdout(paths: list[str], options: object, progress: bool | None) -> None:
    """``-o -``: the page made in a temporary folder, then written to stdout (never a file named "-")."""
    import tempfile

    from .report import report

    with tempfile.TemporaryDirectory(prefix="tensorfile-report-") as folder:
        page = os.path.join(folder, "report.html")
        try:
            report(paths, page, options, progress)  # type: ignore[arg-type]
        except FileNotFoundError as exc:
            _fail(f"{exc.filename}: no such file or folder" if exc.filename else str(exc))
        try:
            with open(page, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted; quiet, as click is on a closed pipe
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@main.command("show")
@limits_option
@click.argument("file")
@click.option("--sample-above", metavar="SIZE", default="256MiB", show_default=True, help=_SAMPLE_HELP)
@click.option("--pager/--no-pager", default=None, help="Page the output (default: on a terminal, when taller than it).")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on stderr (default: on a terminal, for 64 MiB or more).")  # fmt: skip
def show_command(file: str, sample_above: str, pager: bool | None, progress: bool | None) -> None:
    """Print FILE's structure as a tree: each tensor's dtype, shape, mean, std, range, zeros, NaN/inf counts
    and a one-line histogram."""
    try:
        from .report.show import render
        from .report.stats import tensor_stats
        from .report.summary import summarize
    except ImportError as exc:
        _fail(f"tensorfile show needs rich ({exc}); {_INSTALL}")
    from .files import _progress
    from .report.folder import is_checkpoint_folder

    if is_checkpoint_folder(file):
        from .checkpoint.manager import CheckpointManager

        with CheckpointManager(file, read_only=True) as manager:  # the latest step whose file is there
            paths = [manager._state_path(s) for s in manager.steps]
        found = [p for p in paths if os.path.isfile(p) or formats.in_folder(p) is not None]
        step = f", or show one step: {found[-1]}" if found else " (no step's file is there)"
        _fail(f"{file}: is a CheckpointManager folder; see it whole with `tensorfile report {file}`{step}")
    limit = _size(sample_above)
    with _opened(file) as f:
        names = sorted(f.keys())
        with _progress(sum(f.info(n).nbytes for n in names), "show", progress) as bar:
            stats = [tensor_stats(f, n, limit, bar) for n in names]
        summary = summarize(f, file, stats)
        values = _structure_values(f, file)
    terminal = sys.stdout.isatty()
    size = shutil.get_terminal_size((120, 40))
    width = size.columns if terminal else 1 << 16  # a pipe: each line whole, for grep
    text = render(summary, stats, values, width, colour=terminal)
    if pager if pager is not None else (terminal and text.count("\n") > size.lines - 2):
        click.echo_via_pager(text, color=terminal)
    else:
        click.echo(text, nl=False)
