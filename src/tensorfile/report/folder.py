"""A :class:`tensorfile.CheckpointManager` folder seen whole: steps, their metrics, the best and kept
steps, and how far each tensor moved from one kept step to the next.

The manager writes ``<folder>/step_<N>/state.tensorfile`` per step (a distributed step: a folder read
through its manifest), its user metadata ``tensorfile.checkpoint`` holding ``{"step", "metrics", ...}``
(:mod:`tensorfile.checkpoint.manager`). Every step on disk is one retention kept; the best step is
ranked as the manager ranks it (:class:`tensorfile.checkpoint.retention.Retention`: NaN never best).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import CheckpointNotFoundError, FormatError, TensorFileError
from ..lazy import open as open_file
from ..limits import Limits
from .diff import relative_change

__all__ = ["StepInfo", "FolderView", "is_checkpoint_folder", "read_folder", "folder_pairs", "measure_moves"]


@dataclass
class StepInfo:
    """One committed step: ``step``, its file ``path``, ``metrics`` recorded at save, data ``nbytes``."""

    step: int
    path: str
    metrics: dict[str, float]
    nbytes: int


@dataclass
class FolderView:
    """What :func:`read_folder` finds.

    Attributes:
        path: the folder.
        steps: every committed step, ascending (each one retention kept).
        best: the best step by ``metric`` (None when no step records it as a finite number).
        metric, mode: what ``best`` ranks by (``"min"`` or ``"max"``).
        moves: tensor name -> relative change (see :mod:`.diff`) from each kept step to the next
            (``len(steps) - 1`` values; NaN where either step's values hold NaN or inf, and where
            ``gaps`` says why the two could not be compared).
        gaps: tensor name -> for each pair of steps, None where compared, else why not: ``"new"``
            (not in the earlier step), ``"reshaped"`` (another shape or dtype).
        models: the names in the saved state of models (torch modules, Keras layers, Flax NNX modules),
            as the latest step records its live objects; empty when it records none.
        damaged: ``(step, why)`` for each step folder that cannot be read (a crashed or damaged save:
            an empty folder, a truncated file); left out of ``steps``, as ``restore`` skips them.
    """

    path: str
    steps: list[StepInfo]
    best: int | None
    metric: str | None
    mode: str
    moves: dict[str, list[float]] = field(default_factory=dict)
    gaps: dict[str, list[str | None]] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    damaged: list[tuple[int, str]] = field(default_factory=list)

    def is_weight(self, name: str) -> bool:
        """Whether tensor ``name`` is a model's (every tensor is, when no model is recorded)."""
        return not self.models or name.split(".", 1)[0] in self.models

    @property
    def metric_names(self) -> list[str]:
        return sorted({k for s in self.steps for k in s.metrics})

    def total_moves(self) -> dict[str, float]:
        """Each tensor's largest single-step relative change (NaN steps skipped; NaN if every step
        compared is). A tensor never compared (added at the last step, or reshaped at each) is left out:
        :meth:`never_compared` names it."""
        out = {}
        for name, values in self.moves.items():
            gaps = self.gaps.get(name, [None] * len(values))
            measured = [v for v, gap in zip(values, gaps) if gap is None]
            if not measured:
                continue
            finite = [v for v in measured if not math.isnan(v)]
            out[name] = max(finite) if finite else math.nan
        return out

    def never_compared(self) -> dict[str, str]:
        """Tensors no two kept steps could be compared on: name -> why (``"new"``, ``"reshaped"``)."""
        return {n: next(g for g in gaps if g) for n, gaps in self.gaps.items() if gaps and all(gaps)}


def is_checkpoint_folder(path: str) -> bool:
    """Whether ``path`` is a folder holding at least one ``step_<N>`` folder of a CheckpointManager."""
    from ..checkpoint.manager import _STEP

    if not os.path.isdir(path):
        return False
    return any(_STEP.fullmatch(e) and os.path.isdir(os.path.join(path, e)) for e in os.listdir(path))


def _info(f: Any, path: str) -> dict[str, Any]:
    from ..checkpoint.manager import METADATA_KEY

    try:
        info = json.loads(f.metadata.get(METADATA_KEY, "{}"))
    except ValueError:
        raise FormatError(f"{path}: metadata {METADATA_KEY!r} is not JSON") from None
    return info if isinstance(info, dict) else {}


def _metrics(info: dict[str, Any]) -> dict[str, float]:
    metrics = info.get("metrics", {})
    if not isinstance(metrics, dict):
        return {}
    return {str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _models(info: dict[str, Any]) -> list[str]:
    """The state names of the live objects that are models (not optimizers, RNGs, data loaders)."""
    live, classes = info.get("live", {}), info.get("classes", {})
    if not isinstance(live, dict) or not isinstance(classes, dict):
        return []
    out = []
    for name, kind in live.items():
        cls = str(classes.get(name, "")).lower()
        if kind in ("torch.module", "keras.layer") or (kind == "flax.nnx" and "optim" not in cls and "rngs" not in cls):
            out.append(str(name))
    return sorted(out)


def read_folder(path: str, best_metric: str | None = None, best_mode: str = "min",
                limits: Limits | None = None) -> FolderView:  # fmt: skip
    """The steps of the CheckpointManager folder ``path``, their metrics and the best step (headers only).

    Args:
        best_metric: the metric to rank steps by; None: ``"loss"`` when recorded, else the first
            metric name in alphabetical order.
        best_mode: ``"min"`` or ``"max"``.

    Raises:
        CheckpointNotFoundError: no committed step in ``path``, or none that can be read.
    """
    from ..checkpoint.manager import CheckpointManager
    from ..checkpoint.retention import Retention

    with CheckpointManager(path, read_only=True) as manager:
        numbers = manager.steps
        files = {s: manager._state_path(s) for s in numbers}
    if not numbers:
        raise CheckpointNotFoundError(f"{path}: no committed step_<N> folder in this checkpoint folder")
    steps, info, damaged = [], {}, []
    for step in numbers:
        try:
            with open_file(files[step], framework="numpy", limits=limits) as f:
                nbytes = sum(f.info(n).nbytes for n in f.keys())
                step_info = _info(f, files[step])
        except (TensorFileError, OSError, ValueError) as exc:  # an empty or half-written step folder, a damaged file
            damaged.append((step, _why(files[step], exc)))
            continue
        info = step_info
        steps.append(StepInfo(step, files[step], _metrics(info), nbytes))
    if not steps:
        why = "; ".join(f"step {s}: {w}" for s, w in damaged)
        raise CheckpointNotFoundError(f"{path}: no step can be read: {why}")
    numbers = [s.step for s in steps]
    names = sorted({k for s in steps for k in s.metrics})
    metric = best_metric if best_metric is not None else ("loss" if "loss" in names else (names[0] if names else None))
    best = None
    if metric is not None:
        ranked = Retention(best_metric=metric, best_mode=best_mode).best(numbers, {s.step: s.metrics for s in steps}, 1)
        best = ranked[0] if ranked else None
    return FolderView(path, steps, best, metric, best_mode, models=_models(info), damaged=damaged)


def _why(path: str, exc: BaseException) -> str:
    """Why a step's file cannot be read, in words."""
    from ..checkpoint.manager import STATE_FILE

    if os.path.isdir(path):
        return f"{path} holds no {STATE_FILE} (nor a distributed checkpoint): the save never finished"
    if isinstance(exc, FileNotFoundError):
        return f"{path}: no such file"
    return str(exc)


def folder_pairs(view: FolderView) -> list[tuple[str, str]]:
    """The files of each kept step and the next, in order."""
    return [(a.path, b.path) for a, b in zip(view.steps, view.steps[1:])]


def measure_moves(view: FolderView, sample_above: int | None = None, limits: Limits | None = None,
                  progress: Callable[[int], None] | None = None) -> None:  # fmt: skip
    """Fill ``view.moves``: each numeric tensor's relative change between consecutive steps.

    Raises:
        TensorFileError: a step's tensor cannot be read (a damaged step names its file and tensor).
    """
    from .stats import _numeric

    pairs = folder_pairs(view)
    moves: dict[str, list[float]] = {}
    gaps: dict[str, list[str | None]] = {}
    for i, (a, b) in enumerate(pairs):
        with open_file(a, framework="numpy", limits=limits) as fa, open_file(b, framework="numpy", limits=limits) as fb:
            before = set(fa.keys())
            for name in fb.keys():
                info = fb.info(name)
                if not _numeric(info.dtype):
                    continue
                row = moves.setdefault(name, [math.nan] * len(pairs))
                gap = gaps.setdefault(name, ["new"] * len(pairs))
                if name not in before:
                    continue
                if fa.info(name).dtype == info.dtype and tuple(fa.info(name).shape) == tuple(info.shape):
                    row[i] = relative_change(fa, name, fb, name, sample_above, progress).relative
                    gap[i] = None
                else:
                    gap[i] = "reshaped"
    view.moves, view.gaps = moves, gaps
