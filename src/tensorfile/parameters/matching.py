"""Matching a file's parameters to a model's: names, shapes, dtypes; wrappers' prefixes; whole layers; hints.

Used by :func:`tensorfile.load_parameters` and by ``CheckpointManager.restore``.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

from ..errors import TensorFileError
from .models import strip_compiled
from .report import LoadReport, Mismatch

__all__ = ["match_params", "partial_layers", "unwrap_names", "prefix_hint", "writer"]


def match_params(target: Any, incoming: dict[str, Any], report: LoadReport, *, foreign: bool = False) -> None:
    """Compare ``incoming`` arrays (by name; renamed in place where only a wrapper's prefix differs) with
    ``target``'s parameters (a :class:`~.models.ModelParams`); fill ``report``'s missing, unexpected and
    mismatched (shape or dtype) entries. ``foreign``: the arrays come from another framework (torch's
    ``num_batches_tracked`` is then skipped, not missing). For a Keras model, names of tensorfile 0.1
    (``layers.0.kernel``) and automatic layer names of other numbers (``dense_4.kernel`` for
    ``dense_1.kernel``) are renamed in place too."""
    unwrap_names(incoming, target.params.keys() | target.aliases.keys(), report, target.framework)
    if target.framework == "keras":
        _old_names(incoming, target, report)
        _renumber(incoming, target, report)
    for name, param in target.params.items():
        if name not in incoming:
            if foreign and target.framework == "torch" and name.endswith(".num_batches_tracked"):
                report.skipped.append(name)  # torch-only counter: other frameworks have none to give
            else:
                report.missing_keys.append(name)
            continue
        array = incoming[name]
        shape_ok = param.shape is None or (len(array.shape) == len(param.shape)
                                           and all(m in (None, d) for d, m in zip(array.shape, param.shape)))  # fmt: skip
        if not shape_ok or array.dtype.name != param.dtype:
            report.mismatched.append(Mismatch(name, tuple(array.shape), array.dtype.name, param.shape, param.dtype))
    report.unexpected_keys += [name for name in incoming if name not in target.params]


def partial_layers(target: Any, incoming: Mapping[str, Any], report: LoadReport, *, missing: bool = True) -> set[str]:
    """Parameters not to load because another parameter of their layer (same owner: the name up to its last
    dot) does not fit, or (with ``missing``) is missing from the file: a layer is loaded whole or not at all
    (strict=False). Each such layer gets a note in ``report``. A ``select`` of some parameters is the
    caller's choice: ``load_parameters`` then counts only what does not fit."""
    problems: dict[str, list[str]] = {}
    for m in report.mismatched:
        problems.setdefault(m.name.rpartition(".")[0], []).append(f"{m.name.rpartition('.')[2]} does not fit")
    for name in report.missing_keys if missing else ():
        if name in target.params:
            problems.setdefault(name.rpartition(".")[0], []).append(f"{name.rpartition('.')[2]} is missing")
    held = set()
    for layer, why in problems.items():
        others = [n for n in target.params if n.rpartition(".")[0] == layer and n in incoming
                  and n not in {m.name for m in report.mismatched}]  # fmt: skip
        if others:
            held.update(others)
            report.notes.append(f"Note: layer {layer or '(top level)'!r} was not loaded ({', '.join(why)}), so "
                                f"{', '.join(others)} kept their values: a layer is loaded whole or not at all")  # fmt: skip
    return held


def _old_names(incoming: dict[str, Any], target: Any, report: LoadReport) -> None:
    """Rename, in place, the names an older tensorfile gave (:attr:`~.models.ModelParams.aliases`)."""
    old = {k: target.aliases[k] for k in incoming if k not in target.params and k in target.aliases}
    if not old or any(new in incoming for new in old.values()):
        return  # none, or the file has both namings: leave it to the report
    renamed = {old.get(k, k): v for k, v in incoming.items()}
    incoming.clear()
    incoming.update(renamed)
    example = next(iter(old))
    report.notes.append(f"Note: the file names layers by position, as tensorfile 0.1 did; taken as the layers' "
                        f"names (e.g. {example!r} -> {old[example]!r})")  # fmt: skip


def _renumber(incoming: dict[str, Any], target: Any, report: LoadReport) -> None:
    """Rename, in place, Keras layers named automatically with other numbers (``dense_4`` for ``dense_1``),
    by :func:`~.counters.align`; what cannot be aligned is noted."""
    from .counters import align, keras_key

    alignment = align({k: getattr(v, "shape", None) for k, v in incoming.items()},
                      {k: p.shape for k, p in target.params.items()}, keras_key)  # fmt: skip
    if alignment.renames:
        renamed = {alignment.renames.get(k, k): v for k, v in incoming.items()}
        incoming.clear()
        incoming.update(renamed)
        example = next(iter(alignment.renames))
        report.notes.append(f"Note: Keras numbers automatic layer names across the process; the file's were "
                            f"renumbered to the model's in the order the layers were built "
                            f"(e.g. {example!r} -> {alignment.renames[example]!r})")  # fmt: skip
    for conflict in alignment.conflicts:
        report.notes.append(f"Note: cannot tell which of the model's layers the file's are: {conflict}; give the "
                            "layers names (name=...) to load by name")  # fmt: skip


def writer(path: str) -> str:
    """Which tool wrote ``path``, as a note says it: ``tensorfile.save``, ``torch.save``, ``np.savez``..."""
    from ..files import find_format

    try:
        name = find_format(path).name
    except (TensorFileError, OSError, ValueError):
        return "another tool"
    return {"tensorfile": "tensorfile.save", "safetensors": "a safetensors writer", "torch": "torch.save",
            "torch-legacy": "torch.save (legacy format)", "npz": "np.savez", "npy": "np.save", "mxnet": "MXNet's nd.save",
            "mxnet-np": "MXNet's npx.save", "sharded": "a sharded save", "keras": "Keras", "hdf5": "an HDF5 writer",
            "gguf": "a GGUF writer"}.get(name, name)  # fmt: skip


def prefix_hint(missing: list[str], unexpected: list[str]) -> str | None:
    """A note when the file's names and the model's differ by a prefix on one side (``model.0.weight`` vs
    ``0.weight``): which prefix, and the ``rename`` that fixes it; None when no prefix explains most of them."""
    if not missing or not unexpected:
        return None
    votes: dict[tuple[str, str], int] = {}
    wanted = set(missing)
    for name in unexpected[:2000]:
        parts = name.split(".")
        for i in range(1, len(parts)):  # the file's name has a prefix the model's lacks
            if ".".join(parts[i:]) in wanted:
                key = (".".join(parts[:i]) + ".", "")
                votes[key] = votes.get(key, 0) + 1
        for m in missing[:2000]:  # the model's name has a prefix the file's lacks
            if m.endswith("." + name):
                key = ("", m[: -len(name)])
                votes[key] = votes.get(key, 0) + 1
    if not votes:
        return None
    (old, new), count = max(votes.items(), key=lambda kv: kv[1])
    if count * 2 < min(len(missing), len(unexpected)):
        return None
    if old:
        return (f"Note: the file's names carry a prefix {old!r} the model's lack (e.g. {old}...); load with "
                f"rename={{{old!r}: ''}}")  # fmt: skip
    return f"Note: the model's names carry a prefix {new!r} the file's lack; load with rename=lambda n: {new!r} + n"


def _drop_module(name: str) -> str:
    return name[len("module.") :] if name.startswith("module.") else name


def _drop_layer(name: str) -> str:
    return ".".join(part for part in name.split(".") if part != "layer")


def unwrap_names(incoming: dict[str, Any], wanted: Collection[str], report: LoadReport, framework: str = "") -> None:
    """Rename, in place, the incoming names of a file written through a wrapper, when that makes them match
    the wanted names: ``module.`` (DataParallel/DDP, each level) in front of every name, ``_orig_mod``
    segments (``torch.compile``), and for a Keras model ``layer`` segments (TimeDistributed as tensorfile 0.1
    named it). Each removal applies to the whole file or not at all, and only when it matches more names
    without two names colliding; it is noted in ``report``."""
    names = list(incoming)
    if not names or all(n in wanted for n in names):
        return
    steps = [(_drop_module, "'module.' (DataParallel/DistributedDataParallel)"),
             (strip_compiled, "'_orig_mod.' (torch.compile)")]  # fmt: skip
    if framework == "keras":
        steps.append((_drop_layer, "'layer.' (Keras TimeDistributed, as tensorfile 0.1 named it)"))
    best: tuple[int, dict[str, str], list[str]] = (sum(n in wanted for n in names), {n: n for n in names}, [])
    frontier = [best]
    for _ in range(4):  # DataParallel(torch.compile(DataParallel(m))): a few removals, in any order
        grown = []
        for _, current, labels in frontier:
            for drop, label in steps:
                if drop is _drop_module and not all(v.startswith("module.") for v in current.values()):
                    continue  # DataParallel prefixes every name; a file where some lack it is not one of its
                trial = {k: drop(v) for k, v in current.items()}
                if trial == current or len(set(trial.values())) != len(trial):
                    continue  # nothing removed, or two names would become one
                grown.append((sum(v in wanted for v in trial.values()), trial, labels + [label] * (label not in labels)))
        frontier = grown
        best = max([best, *grown], key=lambda item: item[0])
    matched, current, used = best
    if used:
        renamed = {current[k]: v for k, v in incoming.items()}
        incoming.clear()
        incoming.update(renamed)
        example = next(k for k in names if current[k] != k)
        report.notes.append(f"Note: the names carried the prefix of a wrapper, removed to match the model: "
                            f"{', '.join(used)}; e.g. {example!r} -> {current[example]!r}")  # fmt: skip
