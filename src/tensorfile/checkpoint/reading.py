"""Reading committed steps of a :class:`~tensorfile.CheckpointManager` back (not under torch.distributed).

:func:`load_step` reads one step: its saved dict and its recorded facts (``{"step", "metrics", "live",
"classes"}``), every checksum verified (an incremental step's shared blobs included). :func:`load_newest`
reads the newest step that loads and verifies, skipping a corrupt or partial one with a ``UserWarning``
that names it; the steps are listed again when a writer's retention deleted some while they were read.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from ..errors import CheckpointNotFoundError, IntegrityError, TensorFileError
from ..files import load
from ..lazy import open as open_file

__all__ = ["load_step", "load_newest"]


def load_newest(manager: Any, steps: list[int]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """``(step, saved dict, facts)`` of the newest step of ``steps`` (ascending) that loads and verifies.

    Raises:
        CheckpointNotFoundError: none does.
    """
    tried: set[int] = set()
    for _ in range(3):  # a writer's retention may delete the steps listed while they are read: list again
        for candidate in reversed([s for s in steps if s not in tried]):
            tried.add(candidate)
            try:
                loaded, info = load_step(manager, candidate)
                return candidate, loaded, info
            except CheckpointNotFoundError:  # deleted since it was listed (object storage)
                continue
            except IntegrityError as exc:
                if candidate not in manager.steps:  # deleted since it was listed: nothing to warn about
                    continue
                warnings.warn(
                    f"{manager.directory}: checkpoint step {candidate} is corrupt or incomplete ({exc}); "
                    "falling back to the previous step",
                    stacklevel=3,
                )
        if set(manager.steps) <= tried:
            break
        steps = manager.steps
    raise CheckpointNotFoundError(f"{manager.directory}: no valid checkpoint to restore")


def load_step(manager: Any, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(saved dict, facts)`` of committed step ``step``.

    Raises:
        IntegrityError: the step is corrupt, truncated, incomplete, records another step, or is not a dict.
        CheckpointNotFoundError: (object storage) its commit object is gone.
    """
    from .manager import METADATA_KEY

    if manager._objects is not None:
        return _load_object(manager, step)
    path = manager._state_path(step)
    try:
        with open_file(path) as f:
            info = json.loads(f.metadata.get(METADATA_KEY, "{}"))
        recorded = info.get("step") if isinstance(info, dict) else None
        if recorded != step:  # a folder renamed by hand, another run's or another tool's file copied in
            raise IntegrityError(f"{path}: the folder says step {step}, the checkpoint inside records step "
                                 f"{recorded!r}")  # fmt: skip
    except IntegrityError:
        raise
    except (TensorFileError, OSError, ValueError) as exc:  # a folder, another tool's file, unreadable, damaged
        raise IntegrityError(f"checkpoint step {step} is corrupt or incomplete: {exc}") from exc
    try:
        loaded = load(path)
    except IntegrityError as exc:  # a checksum (of a blob shared with other steps, for an incremental step)
        raise IntegrityError(f"checkpoint step {step}: {exc}") from exc
    except (TensorFileError, OSError, ValueError) as exc:  # a folder, another tool's file, unreadable, damaged
        raise IntegrityError(f"checkpoint step {step} is corrupt or incomplete: {exc}") from exc
    if not isinstance(loaded, dict):  # a manifest or file edited by hand: save() always writes a dict
        raise IntegrityError(f"{path}: checkpoint step {step} holds a {type(loaded).__name__}, not the dict of "
                             "names a CheckpointManager saves")  # fmt: skip
    return loaded, info


def _load_object(manager: Any, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`load_step` on object storage: the commit object, then the data object it names."""
    objects = manager._objects
    record = objects.record(step)
    data = objects.data(step, record)
    try:
        if objects.is_incremental(record):
            from .incremental_saves import load_object

            loaded = load_object(manager, step, record)
            if not isinstance(loaded, dict):  # a manifest edited by hand: save() always writes a dict
                raise IntegrityError(f"{data.url}: checkpoint step {step} holds a {type(loaded).__name__}, "
                                     "not the dict of names a CheckpointManager saves")  # fmt: skip
            return loaded, record["info"]
        return load(data.url, storage_options=objects.storage_options), record["info"]
    except IntegrityError as exc:
        raise IntegrityError(f"checkpoint step {step}: {exc}") from exc
    except (TensorFileError, OSError, ValueError) as exc:  # the data object gone, damaged or another file
        raise IntegrityError(f"checkpoint step {step} is corrupt or incomplete: {exc}") from exc
