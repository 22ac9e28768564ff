"""``tensorfile report``: what to read for each path given, in what order, and the page made of it.

Paths are files of any format :func:`tensorfile.open` reads, or :class:`tensorfile.CheckpointManager`
folders. Each file gets a section (summary, tensor table with histograms); each two files given one
after the other also get a diff; a checkpoint folder gets its steps, metric curves, a heatmap of how
far each tensor moved between kept steps, and the section of its latest step's file. Tensors are read
one at a time in pieces (:mod:`.read`), so memory stays a few pieces (16 MiB each) and the largest
tensor's statistics' temporaries, whatever the files' sizes.
"""

from __future__ import annotations

import datetime
import errno
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..atomic import atomic_write
from ..lazy import open as open_file
from ..limits import Limits
from . import charts, page
from .diff import diff_opened
from .folder import FolderView, is_checkpoint_folder, measure_moves, read_folder
from .names import chart_label
from .stats import TensorStats, tensor_stats
from .summary import FileSummary, summarize

__all__ = ["Options", "report", "read_file_stats", "SAMPLE_ABOVE"]

#: Tensors of more bytes than this are sampled by default (256 MiB).
SAMPLE_ABOVE = 256 << 20


@dataclass(frozen=True)
class Options:
    """How a report reads its inputs.

    Attributes:
        sample_above: bytes above which a tensor is sampled (None: never).
        best_metric, best_mode: how a checkpoint folder's best step is ranked (see :func:`.folder.read_folder`).
        limits: memory limits for reading files (:class:`tensorfile.Limits`).
    """

    sample_above: int | None = SAMPLE_ABOVE
    best_metric: str | None = None
    best_mode: str = "min"
    limits: Limits | None = None


Progress = Callable[[int], None]


def _opened(path: str, options: Options) -> Any:
    return open_file(path, framework="numpy", limits=options.limits)


def read_file_stats(path: str, options: Options, progress: Progress | None = None) -> tuple[FileSummary, list[TensorStats]]:
    """Every tensor's statistics of the file ``path`` (in name order) and its summary.

    Raises:
        TensorFileError: the file is damaged, hostile or not a tensor file; FileNotFoundError.
    """
    with _opened(path, options) as f:
        stats = [tensor_stats(f, n, options.sample_above, progress) for n in sorted(f.keys())]
        return summarize(f, path, stats), stats


def _bytes_of(path: str, options: Options) -> int:
    with _opened(path, options) as f:
        return sum(f.info(n).nbytes for n in f.keys())


def _plan(paths: Sequence[str], options: Options) -> tuple[list[tuple[str, Any]], int]:
    """The work for ``paths``: ``("file", path)``, ``("diff", (a, b))``, ``("folder", FolderView)``, and the
    bytes it reads (for the progress bar)."""
    work: list[tuple[str, Any]] = []
    total, previous = 0, None
    for path in paths:
        if is_checkpoint_folder(path):
            view = read_folder(path, options.best_metric, options.best_mode, options.limits)
            work.append(("folder", view))
            sizes = [s.nbytes for s in view.steps]  # each pair of steps read, then the latest step whole
            total += 2 * sum(sizes) - sizes[0]
            previous = None
            continue
        size = _bytes_of(path, options)
        work.append(("file", path))
        total += size
        if previous is not None:
            work.append(("diff", (previous[0], path)))
            total += previous[1] + size
        previous = (path, size)
    return work, total


def _folder_html(view: FolderView, options: Options, progress: Progress | None) -> list[str]:
    measure_moves(view, options.sample_above, options.limits, progress)
    steps = [s.step for s in view.steps]
    names = view.metric_names
    curves = charts.metric_curves(steps, {n: [s.metrics.get(n) for s in view.steps] for n in names}, view.best,
                                  view.metric) if names else None  # fmt: skip
    heatmap = bars = None
    largest = view.total_moves()
    charted = {n: v for n, v in largest.items() if view.is_weight(n)}
    others = {n: v for n, v in largest.items() if not view.is_weight(n)}
    if charted:
        order = sorted(charted, key=lambda n: (math.isnan(charted[n]), -charted[n] if not math.isnan(charted[n]) else 0))
        order = order[: charts.MOST_ROWS]
        labels = [f"{a.step}→{b.step}" for a, b in zip(view.steps, view.steps[1:])]
        heatmap = charts.move_heatmap(order, labels, [view.moves[n] for n in order], [view.gaps[n] for n in order])
        what = f"each tensor of {', '.join(chart_label(m) for m in view.models)}" if view.models else "each tensor"
        bars = charts.change_bars([(n, charted[n]) for n in order], f"Largest move of {what} between kept steps")
    latest = view.steps[-1]
    summary, stats = read_file_stats(latest.path, options, progress)
    title = f"Latest step {latest.step}: {latest.path}"
    skipped = view.never_compared()
    return [page.folder_section(view, curves, heatmap, bars, others, skipped), page.file_section(summary, stats, title)]


def _diff_html(a: str, b: str, options: Options, progress: Progress | None) -> str:
    with _opened(a, options) as fa, _opened(b, options) as fb:
        diff = diff_opened(fa, fb, options.sample_above, progress)
    ranked = diff.most(len(diff.changes))
    bars = charts.change_bars([(c.name, c.relative) for c in ranked], "Relative change per tensor") if ranked else None
    return page.diff_section(a, b, diff, bars)


def _refuse_to_replace_an_input(output: str, paths: Sequence[str]) -> None:
    """Raise FileExistsError when writing ``output`` would replace one of ``paths`` (``-o model.pt`` given
    with ``model.pt``) or a file in the subfolders of one (a step's file in a checkpoint folder; the
    folder's top level, ``runs/mlp/report.html``, is fine)."""
    target = os.path.realpath(output)
    for path in paths:
        source = os.path.realpath(path)
        inside = os.path.isdir(source) and os.path.dirname(target).startswith(source.rstrip(os.sep) + os.sep)
        if target == source or inside:
            what = "is one of the inputs" if target == source else f"is inside a step of the input folder {path}"
            raise FileExistsError(errno.EEXIST, f"{what}: the page would replace it; give -o another file", output)


def report(paths: Sequence[str], output: str, options: Options = Options(), show_progress: bool | None = None) -> str:
    """Write the HTML report of ``paths`` to ``output`` (atomically) and return ``output``.

    Args:
        paths: files (any format tensorfile reads) and CheckpointManager folders.
        show_progress: a progress bar on stderr: None on a terminal only, True always, False never.

    Raises:
        TensorFileError: a file is damaged, hostile or not a tensor file (nothing is written).
        FileNotFoundError: a path does not exist.
        FileExistsError: ``output`` is one of ``paths`` or inside one of them (it would be replaced).
    """
    from ..files import _progress

    for path in paths:
        if not os.path.exists(path) and not os.path.exists(path + ".index.json"):
            raise FileNotFoundError(2, "no such file or folder", path)
    _refuse_to_replace_an_input(output, paths)
    work, total = _plan(paths, options)
    diffs: list[str] = []  # first on the page: what changed is why two files are given
    sections: list[str] = []
    with _progress(total, "report", show_progress) as bar:
        for kind, item in work:
            if kind == "folder":
                sections += _folder_html(item, options, bar)
            elif kind == "diff":
                diffs.append(_diff_html(*item, options, bar))
            else:
                summary, stats = read_file_stats(item, options, bar)
                sections.append(page.file_section(summary, stats))
    sections = diffs + sections
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    html = page.page("tensorfile report", list(paths), sections, stamp)
    with atomic_write(output, durable=False) as out:
        out.write(html.encode("utf-8"))
    return output
