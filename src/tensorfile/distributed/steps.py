""":class:`tensorfile.CheckpointManager` under ``torch.distributed``: the same API, called on every rank.

Each step is a distributed checkpoint (:mod:`.save`) built in a temporary folder that rank 0 makes, and
renamed into place by rank 0 once every rank's files and the manifest are in it (the step commit of
:mod:`tensorfile.checkpoint.commit`): a rank killed mid-save leaves only a temporary folder, never a step.
Rank 0 alone holds the folder's lock, removes leftovers, applies retention and chooses the step to restore;
the other ranks learn its decisions over the process group (JSON, never a pickle).

Live objects are saved through ``torch.distributed.checkpoint.state_dict`` (reference: pytorch/pytorch
``torch/distributed/checkpoint/state_dict.py``): a module through ``get_model_state_dict`` (FSDP2 parameters
stay ``DTensor`` shards), an optimizer of a module in the same state through ``get_optimizer_state_dict``
(its state keyed by parameter name, so it reshards); restored with ``set_model_state_dict`` /
``set_optimizer_state_dict`` after an in-place :func:`tensorfile.distributed.load`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from typing import Any, Callable, Mapping

from ..errors import (
    CheckpointCommitError,
    CheckpointLockedError,
    CheckpointNotFoundError,
    IntegrityError,
    TensorFileError,
)
from ..parameters.report import LoadReport
from ..tree import decode_plain
from . import manifest as mf
from .comm import Group, group_of
from .loading import load
from .saving import background_group, stage, try_prepare, write_checkpoint

__all__ = ["group_for", "holds_dtensors", "lock", "capture", "Writer", "restore"]


def group_for(distributed: bool | None) -> Group | None:
    """The process group a manager works across: with ``distributed=None``, the default group when
    ``torch.distributed`` is initialized with more than one rank; with True, that group or a world of one;
    with False, none. (A world of one otherwise works as one process does: see :func:`holds_dtensors`.)"""
    if distributed is False:
        return None
    group = group_of()
    if distributed is None and group.size == 1:
        return None
    return group


def holds_dtensors(state: Mapping[str, Any]) -> bool:
    """True when a module of ``state`` has ``DTensor`` parameters, or a value of it is or holds a ``DTensor``
    (FSDP2 on one rank: its steps are written as distributed checkpoints too)."""
    from ..checkpoint.live import kind_of
    from .plan import is_dtensor

    if "torch.distributed.tensor" not in sys.modules:  # DTensor's module: none exists before it is imported
        return False
    stack = list(state.values())
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif type(value) in (list, tuple):
            stack.extend(value)
        elif is_dtensor(value):
            return True
        elif hasattr(value, "parameters") and kind_of(value) == "torch.module":
            if _module_holds(value, sys.modules["torch.distributed.tensor"]):
                return True
    return False


def _module_holds(module: Any, dtensor_module: Any) -> bool:
    """True when ``module`` or a submodule has a DTensor parameter (through ``_modules`` / ``_parameters``:
    ``parameters()`` costs 7 times as much, in a stall)."""
    dtensor = getattr(dtensor_module, "DTensor", None)
    if dtensor is None:
        return False
    stack, seen = [module], set()
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        parameters, children = getattr(m, "_parameters", None), getattr(m, "_modules", None)
        if parameters is None or children is None:  # not an nn.Module inside: ask it
            return any(isinstance(p, dtensor) for p in m.parameters())
        if any(isinstance(p, dtensor) for p in parameters.values()):
            return True
        stack.extend(c for c in children.values() if c is not None)
    return False


def _agree(group: Group, run: Callable[[], Any]) -> Any:
    """Run ``run`` on rank 0; every rank returns its JSON result or raises its error."""
    result: dict[str, Any] = {}
    error: BaseException | None = None
    if group.rank == 0:
        try:
            result = {"value": run()}
        except Exception as exc:
            error = exc
            result = {"error": f"{type(exc).__name__}: {exc}", "locked": isinstance(exc, CheckpointLockedError)}
    result = json.loads(group.broadcast(json.dumps(result).encode("utf-8")).decode("utf-8"))
    if error is not None:
        raise error
    if "error" in result:
        kind = CheckpointLockedError if result.get("locked") else CheckpointCommitError
        raise kind(f"rank 0: {result['error']}")
    return result["value"]


def lock(directory: str, timeout: float, group: Group) -> Any:
    """Rank 0 creates ``directory``, takes its lock and removes leftovers; every rank raises if that failed.
    Returns rank 0's :class:`~tensorfile.checkpoint.lock.FolderLock` (None on the other ranks)."""
    from ..checkpoint.commit import remove_temporaries
    from ..checkpoint.lock import FolderLock

    held: list[Any] = []

    def take() -> None:
        os.makedirs(directory, exist_ok=True)
        held.append(FolderLock(directory, timeout))
        remove_temporaries(directory)

    try:
        _agree(group, take)
    except BaseException:
        for folder_lock in held:
            folder_lock.close()
        raise
    return held[0] if held else None


def _is_optimizer(value: Any) -> bool:
    return hasattr(value, "param_groups") and type(value).__module__.startswith("torch.optim")


def _owner(optimizer: Any, state: Mapping[str, Any]) -> Any:
    """The module of ``state`` whose parameters ``optimizer`` updates (None when none holds them all)."""
    from ..checkpoint.live import kind_of

    wanted = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for value in state.values():
        if kind_of(value) == "torch.module" and wanted <= {id(p) for p in value.parameters()}:
            return value
    return None


def capture(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """``(tree, live kinds, classes)`` of a manager's state, modules and their optimizers through
    ``get_model_state_dict`` / ``get_optimizer_state_dict``, other live objects as the manager saves them."""
    from ..checkpoint.live import capture as plain_capture
    from ..checkpoint.live import class_of, kind_of

    tree: dict[str, Any] = {}
    live: dict[str, str] = {}
    classes: dict[str, str] = {}
    for name, value in state.items():
        kind = kind_of(value)
        if kind is None:
            tree[name] = value
            continue
        live[name], classes[name] = kind, class_of(value)
        if kind == "torch.module":
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            tree[name] = get_model_state_dict(value)
        elif kind == "torch.stateful" and _is_optimizer(value) and _owner(value, state) is not None:
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            tree[name] = get_optimizer_state_dict(_owner(value, state), value)
        else:
            tree[name] = plain_capture(kind, value)
    return tree, live, classes


class Writer:
    """One step being written: the temporary folder (made by rank 0), the plan of this rank's slices, and
    the commit that renames the folder into place and applies retention (rank 0)."""

    def __init__(self, directory: str, step: int, tree: Any, metadata: Mapping[str, str], group: Group,
                 after_commit: Callable[[], None]) -> None:  # fmt: skip
        from ..checkpoint.commit import begin

        self.directory, self.name, self.group = directory, f"step_{step:08d}", group
        self.metadata, self.after_commit = dict(metadata), after_commit
        self.plan, self.failed = try_prepare(tree, group)  # reported by write(): no rank waits for a failed one
        made = _agree(group, lambda: os.path.basename(begin(directory, self.name)))
        self.temp = os.path.join(directory, made)

    def stage(self, staging: Any) -> None:
        """Copy this rank's slices to host buffers of ``staging`` (for a write in the background)."""
        if self.plan is not None and self.failed is None:
            try:
                stage(self.plan, staging)
            except Exception as exc:
                self.failed = exc

    def background(self) -> "Writer":
        """Talk over a gloo group of the same ranks from now on (made once; every rank calls this)."""
        self.group = background_group(self.group)
        return self

    def write(self) -> None:
        """Every rank: write, commit (rank 0), return when the step is in place.

        Raises:
            CheckpointCommitError, OSError: nothing committed; the temporary folder is removed.
        """
        from ..checkpoint.commit import publish

        def commit(manifest: mf.Manifest) -> None:
            mf.write(os.path.join(self.temp, mf.MANIFEST), manifest)
            publish(self.directory, self.name, self.temp)
            self.after_commit()

        def committed(files: list[str]) -> bool:  # rank 0, after commit() raised: was the step renamed in?
            try:
                manifest = mf.read(os.path.join(self.directory, self.name, mf.MANIFEST))
            except (OSError, TensorFileError):
                return False
            return set(manifest.files) == set(files) and not os.path.exists(self.temp)

        try:
            write_checkpoint(self.plan, self.temp, self.group, self.metadata, commit, committed=committed,
                             failed=self.failed)  # fmt: skip
        except BaseException:
            if self.group.rank == 0:
                shutil.rmtree(self.temp, ignore_errors=True)
            raise


def _template(name: str, value: Any, state: Mapping[str, Any]) -> Any:
    """What :func:`tensorfile.distributed.load` fills for ``state[name]`` (None: the saved value, whole)."""
    from ..checkpoint.live import kind_of

    kind = kind_of(value)
    if kind is None:
        return value  # data: filled in place
    if kind == "torch.module":
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(value)
    if kind == "torch.stateful" and _is_optimizer(value) and _owner(value, state) is not None:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(_owner(value, state), value)
    if kind in ("torch.stateful", "torch.generator"):
        return None
    raise ValueError(f"{name!r}: a {kind} object cannot be restored under torch.distributed (torch objects only)")


def _apply(name: str, value: Any, loaded: Any, state: Mapping[str, Any], info: Mapping[str, Any], report: LoadReport) -> Any:
    from ..checkpoint.live import apply, check, kind_of

    kind = kind_of(value)
    if kind is None:
        return loaded
    if kind == "torch.module":
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(value, loaded)
        return value
    if kind == "torch.stateful" and _is_optimizer(value) and _owner(value, state) is not None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(_owner(value, state), value, loaded)
        return value
    plan = check(kind, value, loaded, state, info.get("classes", {}).get(name))
    out = apply(plan, state)
    report.merged(f"{name}.", plan.report)
    return out


def _attempt(folder: str, step: int, state: Mapping[str, Any], strict: bool, key: str,
             storage_options: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any], LoadReport]:  # fmt: skip
    """Load step ``step`` (``folder``: a path or URL of its folder or manifest) into the live objects of
    ``state``: ``(loaded dict, info, report)``."""
    from .loading import read_manifest

    _, manifest = read_manifest(folder, storage_options=storage_options)
    info = json.loads(manifest.metadata.get(key, "{}"))
    if not isinstance(info, dict) or info.get("step") != step:
        raise IntegrityError(f"{folder}: the folder says step {step}, the checkpoint inside records step "
                             f"{info.get('step') if isinstance(info, dict) else None!r}")  # fmt: skip
    live = info.get("live", {})
    from ..checkpoint.live import kind_of

    for name, value in state.items():
        kind = kind_of(value)
        if kind is not None and live.get(name) != kind:
            raise ValueError(f"{folder}: {name!r} was saved as {live.get(name, 'plain data')}, but a "
                             f"{type(value).__module__}.{type(value).__qualname__} ({kind}) was given")  # fmt: skip
    saved = {decode_plain(pair[0]) for pair in manifest.structure.get("items", [])}
    dest = {name: _template(name, value, state) for name, value in state.items()}
    dest.update({name: None for name in saved if name not in dest})
    report = load(dest, folder, strict=strict, storage_options=storage_options)
    return dest, info, report


def restore(directory: str, steps: list[int], step: int | None, state: Mapping[str, Any], strict: bool,
            group: Group, key: str, where: Callable[[int], str] | None = None,
            storage_options: Mapping[str, Any] | None = None) -> tuple[int, dict[str, Any], LoadReport, dict[str, LoadReport]]:  # fmt: skip
    """Every rank: load ``step`` (or the newest step every rank loads) into ``state``'s live objects.

    ``where(step)`` gives a step's folder or manifest (a path or, with ``storage_options``, a URL; default:
    ``<directory>/step_<N>``); an error it raises counts as the step's.

    Rank 0's list of steps is the one tried, newest first; a step that any rank finds corrupt is skipped with a
    warning (only when ``step`` is None). Returns ``(step, loaded dict, report, reports by name)``.

    Raises:
        CheckpointNotFoundError: no step (or none valid, or ``step`` absent).
        IntegrityError: ``step`` was given and is corrupt. ParameterMismatchError, ValueError: ``strict`` and
            the objects do not fit (raised on every rank). TensorFileError: another rank could not restore
            the step (names the rank and its error).
    """
    candidates = _agree(group, lambda: [step] if step is not None and step in steps else
                        ([] if step is not None else list(reversed(steps))))  # fmt: skip
    if step is not None and not candidates:
        raise CheckpointNotFoundError(f"{directory}: no checkpoint for step {step} (have {steps})")
    for candidate in candidates:
        folder = os.path.join(directory, f"step_{candidate:08d}")
        error: BaseException | None = None
        try:
            folder = where(candidate) if where is not None else folder
            loaded, info, report = _attempt(folder, candidate, state, strict, key, storage_options)
        except Exception as exc:
            error = exc
        corrupt = isinstance(error, (IntegrityError, OSError, CheckpointNotFoundError)) or _damaged(error)
        outcome = json.dumps({"corrupt": corrupt,
                              "error": f"{type(error).__name__}: {error}" if error is not None else None})  # fmt: skip
        results = [json.loads(r) for r in group.all_gather(outcome.encode("utf-8"))]
        failed = [(r, res) for r, res in enumerate(results) if res["error"] is not None]
        if not failed:
            reports: dict[str, LoadReport] = {}
            out = {}
            for name, value in loaded.items():
                out[name] = _apply(name, state[name], value, state, info, report) if name in state else value
                reports[name] = _prefixed(report, f"{name}.")
            return candidate, out, report, reports
        if all(res["corrupt"] for _, res in failed) and step is None:
            warnings.warn(f"{directory}: checkpoint step {candidate} is corrupt or incomplete "
                          f"({failed[0][1]['error'][:200]}); falling back to the previous step", stacklevel=3)  # fmt: skip
            continue
        if error is not None:
            raise error
        raise TensorFileError(f"{folder}: rank {failed[0][0]} could not restore it: {failed[0][1]['error'][:300]}")
    raise CheckpointNotFoundError(f"{directory}: no valid checkpoint to restore")


def _damaged(error: BaseException | None) -> bool:
    from ..errors import FormatError, ParameterMismatchError

    return isinstance(error, FormatError) and not isinstance(error, ParameterMismatchError)


def _prefixed(report: LoadReport, prefix: str) -> LoadReport:
    out = LoadReport()
    out.loaded = [n[len(prefix):] for n in report.loaded if n.startswith(prefix)]
    out.missing_keys = [n[len(prefix):] for n in report.missing_keys if n.startswith(prefix)]
    return out
