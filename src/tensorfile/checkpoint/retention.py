"""Which committed steps to keep.

A step is kept when any policy wants it: it is among the ``max_to_keep`` newest;
or ``step % keep_every_n_steps == 0``; or it is among the ``keep_best`` best by
its ``best_metric``, or by ``best_fn(metrics)`` as in Orbax (``best_mode`` ``"min"`` or
``"max"``; steps without that metric, or whose score is NaN or infinite, never count as best: a diverged run's
NaN loss must not push the true best out, Lightning#2636). With ``max_to_keep=None``
nothing is deleted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

__all__ = ["Retention"]


@dataclass(frozen=True)
class Retention:
    max_to_keep: int | None = None
    keep_every_n_steps: int | None = None
    keep_best: int | None = None
    best_metric: str | None = None
    best_mode: str = "min"
    best_fn: Callable[[Mapping[str, float]], float] | None = None

    def __post_init__(self) -> None:
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', not {self.best_mode!r}")
        if self.keep_best is not None and self.best_metric is None and self.best_fn is None:
            raise ValueError("keep_best needs best_metric (the name of a metric passed to save()) or best_fn")
        if self.best_metric is not None and self.best_fn is not None:
            raise ValueError("give best_metric or best_fn, not both")
        if self.best_fn is not None and not callable(self.best_fn):
            raise ValueError(f"best_fn must be callable (metrics dict -> number), not {self.best_fn!r}")
        for name in ("max_to_keep", "keep_every_n_steps", "keep_best"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, not {value!r}")

    @property
    def ranks(self) -> bool:
        """Whether steps are ranked at all (``best_metric`` or ``best_fn`` given)."""
        return self.best_metric is not None or self.best_fn is not None

    def score(self, metrics: Mapping[str, float]) -> float:
        """A step's score: its ``best_metric``, or ``best_fn(metrics)``; NaN when it has none."""
        if self.best_fn is not None:
            try:
                return float(self.best_fn(dict(metrics)))
            except (KeyError, TypeError, ValueError, ArithmeticError):  # no such metric, or 0/0 and the like
                return math.nan
        return float(metrics.get(self.best_metric, math.nan)) if self.best_metric is not None else math.nan

    def best(self, steps: Sequence[int], metrics: Mapping[int, Mapping[str, float]], count: int) -> list[int]:
        """The ``count`` best steps by ``best_metric`` or ``best_fn`` (ties: the newer step first)."""
        if not self.ranks:
            return []
        scores = ((self.score(metrics.get(s, {})), s) for s in steps)
        scored = [(value, s) for value, s in scores if math.isfinite(value)]
        sign = 1 if self.best_mode == "min" else -1
        return [s for _, s in sorted(scored, key=lambda vs: (sign * vs[0], -vs[1]))[:count]]

    def keep(self, steps: Sequence[int], metrics: Mapping[int, Mapping[str, float]]) -> set[int]:
        """The steps to keep out of ``steps`` (committed, any order)."""
        if self.max_to_keep is None:
            return set(steps)
        ordered = sorted(steps)
        kept = set(ordered[-self.max_to_keep :])
        if self.keep_every_n_steps:
            kept |= {s for s in ordered if s % self.keep_every_n_steps == 0}
        if self.keep_best:
            kept |= set(self.best(ordered, metrics, self.keep_best))
        return kept
