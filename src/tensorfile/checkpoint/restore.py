"""Filling live objects from a loaded checkpoint, all or nothing: :func:`fill` and :class:`Restored`.

Every live object is checked first (:func:`.live.check`); only then are they filled, in
:data:`.live.APPLY_ORDER`, with the cheap ones snapshotted so that a late refusal puts them back.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ParameterMismatchError
from ..parameters.report import LoadReport
from .live import APPLY_ORDER, Plan, apply, check, kind_of, rollback, snapshot

__all__ = ["Restored", "fill"]


class Restored(dict):
    """What :meth:`CheckpointManager.restore` returns: the saved dict, plus

    Attributes:
        step: the step restored.
        report: a :class:`~tensorfile.LoadReport` over every live object given
            (names ``"<state name>.<parameter>"``).
        reports: one :class:`~tensorfile.LoadReport` per live object, by state name.
    """

    step: int
    report: LoadReport
    reports: dict[str, LoadReport]


def fill(where: str, step: int, loaded: dict[str, Any], info: Mapping[str, Any], state: Mapping[str, Any],
         strict: bool) -> Restored:  # fmt: skip
    """Fill the live objects of ``state`` from checkpoint ``step`` (``loaded``: its saved dict; ``info``: its
    recorded kinds and classes); see :meth:`CheckpointManager.restore` for the rules and errors."""
    live = info.get("live", {})
    report = LoadReport()
    plans: dict[str, Plan] = {}
    for name, obj in state.items():  # check everything before touching anything
        if name not in loaded:
            if strict:
                raise KeyError(f"{where}: the checkpoint has no {name!r} to restore (it has {sorted(loaded)})")
            report.missing_keys.append(name)
            continue
        kind = kind_of(obj)
        if kind is None or live.get(name) != kind:
            saved_as = live.get(name, "plain data")
            raise ValueError(
                f"{where}: {name!r} was saved as {saved_as}, but a "
                f"{type(obj).__module__}.{type(obj).__qualname__} ({kind or 'not a live object'}) was given"
            )
        plans[name] = check(kind, obj, loaded[name], state, info.get("classes", {}).get(name))
        if not plans[name].load:
            plans[name].report.notes.append("left as it was: its state cannot be taken in part")
        report.merged(f"{name}.", plans[name].report)
    if strict and not report.ok:
        lines = "\n\t".join(report.problems())
        raise ParameterMismatchError(f"{where}: step {step} does not fit the objects given; nothing was "
                                     f"restored:\n\t{lines}", report)  # fmt: skip
    out = Restored(loaded)
    done: list[tuple[Plan, Any]] = []
    try:
        order = sorted(plans.items(), key=lambda item: (APPLY_ORDER.index(item[1].kind), hasattr(item[1].live, "param_groups")))
        for name, plan in order:
            kept = snapshot(plan)
            out[name] = apply(plan, state)
            done.append((plan, kept))
    except Exception as exc:  # a torch object's own load_state_dict refused: put back what was filled
        for plan, kept in reversed(done):
            rollback(plan, kept)
        kept_none = sum(1 for _, kept in done if kept is None)
        after = "the objects filled before it were put back" if not kept_none else (
            f"{kept_none} object(s) filled before it could not be put back")  # fmt: skip
        raise ParameterMismatchError(f"{where}: step {step}: {type(exc).__name__}: {exc}; {after}",
                                     report) from exc  # fmt: skip
    for name, plan in plans.items():
        report.loaded += [f"{name}.{k}" for k in plan.report.loaded]
    out.report, out.reports, out.step = report, {n: p.report for n, p in plans.items()}, step
    return out
