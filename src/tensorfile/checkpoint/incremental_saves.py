""":class:`~tensorfile.CheckpointManager` with ``incremental=True``: its saves and its restores from object storage.

The manager's own code stays that of a full checkpoint; this module plugs the :class:`.incremental.Tracker`
(which tensors a step writes) into its save flow (sync, or async with staging buffers and a background
write) and its store (:mod:`.blobs`: a local folder with hard links, or an object store).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from .blobs import BlobLostError, LocalBlobs, ObjectBlobs
from .incremental import Plan, Tracker

__all__ = ["tracker_for", "save", "load_object"]


def tracker_for(manager: Any, trust_version_counter: bool) -> Tracker:
    """The tracker of ``manager`` (a :class:`~tensorfile.CheckpointManager`), on its kind of storage."""
    if manager._objects is not None:
        store: Any = ObjectBlobs(manager._objects)
    else:
        store = LocalBlobs(manager.directory, manager._path)
    return Tracker(store, lambda: manager.steps, trust_version_counter)


def save(manager: Any, step: int, tree: Any, info: dict[str, Any]) -> None:
    """:meth:`CheckpointManager.save` of the captured ``tree`` (``info``: the step's recorded facts)."""
    tracker: Tracker = manager._incremental
    if not manager.async_save:
        try:
            plan = tracker.prepare(tree)
        except BaseException:
            tracker.reset()
            raise
        _commit(manager, step, plan, info)
        return
    if manager.async_buffers == 1:
        manager.wait()
    staging = manager._free.pop() if manager._free else manager._new_staging()
    try:
        plan = tracker.prepare(tree, staging)  # the stall: copies of the tensors whose counter moved
        manager.wait()  # the previous write (its error is raised here; this save is then dropped)
    except BaseException:
        tracker.reset()
        manager._free.append(staging)
        raise
    manager._start(step, lambda: _commit(manager, step, plan, info), staging)


def _commit(manager: Any, step: int, plan: Plan, info: dict[str, Any]) -> None:
    from .manager import METADATA_KEY

    tracker: Tracker = manager._incremental
    store = tracker.store
    metadata = {METADATA_KEY: json.dumps(info)}
    if isinstance(store, ObjectBlobs):
        committed = tracker.write(step, plan, metadata, lambda *args: store.commit(*args, info))
    else:
        try:
            committed = tracker.write(step, plan, metadata, store.commit)
        except BlobLostError:  # a blob of its base is in no step folder as recorded (the tracker was reset)
            if not plan.sync and plan.clean:  # tensors not copied in the stall may have moved: the next save copies all
                raise
            try:
                committed = tracker.write(step, plan, metadata, store.commit)  # against the newest step on disk now
            except BlobLostError:  # that one is damaged too: no base, every tensor written
                tracker._base, tracker._loaded = None, True
                committed = tracker.write(step, plan, metadata, store.commit)
    if committed:
        objects = isinstance(store, ObjectBlobs)
        before = set(manager.steps) if objects else set()
        manager._retain(step, info)
        if objects and before - set(manager.steps):  # retention deleted a step: collect the blobs none names
            store.collect()


def load_object(manager: Any, step: int, record: Mapping[str, Any]) -> Any:
    """The saved dict of incremental step ``step`` on object storage (``record``: its commit object); every
    tensor read by byte ranges from its blob under ``<directory>/blobs/``, its checksum checked.

    Raises:
        IntegrityError: a checksum does not match. FormatError: a blob is missing or does not hold its tensor.
    """
    from ..distributed.read import Shards, assemble
    from ..formats.distributed import _converter
    from ..tree import unflatten

    store: ObjectBlobs = manager._incremental.store if manager._incremental is not None else ObjectBlobs(manager._objects)
    manifest = store.manifest(step, record)
    where = manager._objects.data(step, record).url
    convert = _converter(where, None, {"map_location": None, "device": None}, manifest.tensors)
    built: dict[str, Any] = {}
    with Shards(store.folder.url, manifest, storage_options=manager._objects.storage_options) as shards:

        def tensor(name: str) -> Any:
            if name not in built:
                built[name] = convert(name, assemble(shards, manifest.tensors[name]))
            return built[name]

        return unflatten(manifest.structure, tensor)
