"""The step commit protocol on object storage (S3, GCS, ``memory://``, any fsspec URL), where renames are not atomic.

Layout under the checkpoint URL ``<root>``::

    <root>/step_<N:08d>/state-<writer>.tensorfile   the step's data object: a tensorfile file, named after
                                                     the attempt that uploaded it (16 random hex digits)
    <root>/step_<N:08d>/commit.json                  the commit object: the step exists once it does

The commit object is UTF-8 JSON: ``{"tensorfile_commit": 1, "step": N, "writer": "<16 hex>",
"files": {"state.tensorfile": {"object": "state-<16 hex>.tensorfile", "size": bytes}}, "info":
{"step": N, "metrics": {...}, "live": {...}, "classes": {...}}}`` (``info`` as the data object's
``tensorfile.checkpoint`` metadata).

A step saved across the ranks of ``torch.distributed`` (:mod:`tensorfile.distributed.object_steps`) is a
distributed checkpoint (:mod:`tensorfile.distributed.remote`) in a folder of its attempt instead of a data
object, and its commit object names that folder's manifest::

    <root>/step_<N:08d>/dist-<writer>/manifest.json        the manifest, put by rank 0 after every shard
    <root>/step_<N:08d>/dist-<writer>/rank<R>-<hex>.tensorfile   each rank's shard object
    "files": {"manifest.json": {"object": "dist-<writer>/manifest.json", "size": bytes}}

Readers load it with :func:`tensorfile.distributed.load` (each rank reads the byte ranges it needs).

An incremental step (:mod:`tensorfile.checkpoint.blobs`) is a manifest object in its folder whose files are
blobs under ``<root>/blobs/``; its commit object names the manifest::

    <root>/step_<N:08d>/manifest-<writer>.json
    "files": {"incremental.json": {"object": "manifest-<writer>.json", "size": bytes}}

Writer (:meth:`ObjectSteps.commit`):

1. Refuse at once when step N already has a commit object (a committed step is never replaced).
2. Upload every data object of the step in one piece each (:func:`tensorfile.storage.transfer.upload`:
   one PUT, or a multipart upload completed at the end), under a name no other attempt uses, so two
   writers of one step never overwrite each other's data.
3. Create the commit object with a conditional put, ``If-None-Match: *`` (fsspec ``pipe_file(...,
   mode="create")``; AWS S3 conditional writes: the store keeps the first and answers
   ``412 Precondition Failed`` to every later one). A writer answered 412 reads the commit object
   back: its own (a retried request whose first try had landed) means committed; another writer's
   means this one lost: it removes its data objects and raises :class:`CheckpointConflictError`.

Readers (:meth:`ObjectSteps.steps`, :meth:`ObjectSteps.record`) see only steps with a commit object,
and read the data object it names: a writer killed before step 3 left nothing visible.

Deletion (:meth:`ObjectSteps.delete`, retention): the commit object first, then the data objects; a
crash in between leaves only invisible data.

Clean-up (:meth:`ObjectSteps.sweep`, when a writing manager starts and after each commit): data objects
named like ours that no commit object names and that were last modified :data:`STALE_AFTER` seconds
ago or more are deleted, and S3 multipart uploads under ``<root>`` initiated that long ago or more
are aborted (:func:`tensorfile.storage.uploads.abort_stale_uploads`). Younger ones may belong to a
writer still at work. Objects of other names are never touched.

The conditional put is atomic where the store honours ``If-None-Match`` (AWS S3, and S3-compatible
stores that implement conditional writes; s3fs ``s3fs/core.py`` ``_pipe_file``); backends whose
``pipe_file`` has no such request use fsspec's check-then-write, which two writers can both pass.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import signal
import time
from typing import Any, Callable, Mapping

from ..errors import CheckpointConflictError, CheckpointNotFoundError, IntegrityError, TensorFileError
from ..storage import Location, locate
from ..storage.transfer import put_new, renamed, staged, upload
from ..storage.uploads import abort_stale_uploads

__all__ = ["ObjectSteps", "COMMIT_OBJECT", "STALE_AFTER", "KILL_BEFORE_COMMIT"]

COMMIT_OBJECT = "commit.json"
#: Seconds after which an uncommitted data object, or an unfinished multipart upload, is taken as a dead writer's.
STALE_AFTER = 3600.0
#: Test hook: with this environment variable set to "1", a writer SIGKILLs itself after its data objects are
#: uploaded and before the commit object is written (tests/test_remote.py).
KILL_BEFORE_COMMIT = "TENSORFILE_TEST_KILL_BEFORE_COMMIT"
_STEP = re.compile(r"step_([0-9]{8,})")
_DATA = re.compile(r"state-[0-9a-f]{16}\.tensorfile")
_STATE = "state.tensorfile"
_MANIFEST = "manifest.json"  # tensorfile.distributed.manifest.MANIFEST (not imported: this module stays light)
_ATTEMPT = re.compile(r"dist-[0-9a-f]{16}")
#: what a commit object may name: a data object, or a distributed attempt's manifest (never a path outside)
_INCREMENTAL = "incremental.json"  # an incremental step: its manifest object (tensorfile.checkpoint.blobs)
_INCREMENTAL_OBJECT = re.compile(r"manifest-[0-9a-f]{16}\.json")
_NAMED = {_STATE: _DATA, _MANIFEST: re.compile(r"dist-[0-9a-f]{16}/manifest\.json"), _INCREMENTAL: _INCREMENTAL_OBJECT}


def _modified(info: Mapping[str, Any]) -> float | None:
    """When an object was last written (seconds since the epoch), from an fsspec ``info`` dict; None if unknown."""
    for key in ("LastModified", "mtime", "updated", "created"):
        value = info.get(key)
        if isinstance(value, dt.datetime):
            return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


class ObjectSteps:
    """The committed steps of one checkpoint location on an fsspec filesystem (see the module docs).

    Args:
        url: the checkpoint location (``s3://bucket/run1``).
        storage_options: options for its filesystem (``fsspec.core.url_to_fs``).

    Raises:
        ImportError: fsspec or the protocol's backend is not installed.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None) -> None:
        self.root = locate(url, storage_options)
        self.storage_options = storage_options

    def folder(self, step: int) -> Location:
        """Where step ``step``'s objects live (a prefix)."""
        return self.root.child(f"step_{step:08d}")

    def exists(self) -> bool:
        """True when any object lies under the location."""
        self.root.fs.invalidate_cache(self.root.path)
        return bool(self.root.fs.exists(self.root.path))

    def listing(self) -> dict[int, dict[str, dict[str, Any]]]:
        """``{step: {object name: fsspec info}}`` of every object in a step folder, committed or not (one listing);
        a distributed attempt's objects as ``dist-<writer>/<name>``."""
        fs = self.root.fs
        fs.invalidate_cache(self.root.path)
        try:
            found = fs.find(self.root.path, detail=True)
        except FileNotFoundError:
            return {}
        base = self.root.path + "/"
        out: dict[int, dict[str, dict[str, Any]]] = {}
        for path, info in found.items():
            parts = path[len(base) :].split("/") if path.startswith(base) else []
            nested = len(parts) == 3 and _ATTEMPT.fullmatch(parts[1])  # a distributed attempt's objects
            match = _STEP.fullmatch(parts[0]) if len(parts) == 2 or nested else None
            if match:
                out.setdefault(int(match.group(1)), {})["/".join(parts[1:])] = info
        return out

    def steps(self) -> list[int]:
        """Committed steps (with a commit object), ascending."""
        return sorted(step for step, objects in self.listing().items() if COMMIT_OBJECT in objects)

    def record(self, step: int) -> dict[str, Any]:
        """Step ``step``'s commit object, checked.

        Raises:
            CheckpointNotFoundError: the step has no commit object (not committed, or deleted).
            IntegrityError: the commit object is not one this protocol writes.
        """
        where = self.folder(step).child(COMMIT_OBJECT)
        try:
            raw = self.root.fs.cat_file(where.path)
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"{self.root.url}: no checkpoint for step {step}") from None
        try:
            record = json.loads(raw.decode("utf-8"))
            (kind, entry), = record["files"].items()
            name = entry["object"]
            ok = record.get("tensorfile_commit") == 1 and record.get("step") == step and isinstance(record.get("info"), dict)
            ok = ok and isinstance(name, str) and bool(_NAMED[kind].fullmatch(name))  # never a path outside its folder
        except (UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            raise IntegrityError(f"{where.url}: not a commit object of step {step} (expected JSON with tensorfile_commit "
                                 f"1, step {step} and a state-<16 hex>.tensorfile, dist-<16 hex>/manifest.json or "
                                 "manifest-<16 hex>.json)")  # fmt: skip
        return record

    def data(self, step: int, record: Mapping[str, Any]) -> Location:
        """What ``record``, step ``step``'s commit object, names: the data object (``state.tensorfile``'s), or a
        distributed step's manifest object (``dist-<writer>/manifest.json``; see :func:`is_distributed`)."""
        (entry,) = record["files"].values()
        return self.folder(step).child(entry["object"])

    @staticmethod
    def is_incremental(record: Mapping[str, Any]) -> bool:
        """True when ``record`` (a checked commit object) names an incremental step's manifest
        (:mod:`tensorfile.checkpoint.blobs`: its blobs live under ``<root>/blobs/``)."""
        return _INCREMENTAL in record["files"]

    def commit_incremental(self, step: int, manifest: bytes, info: Mapping[str, Any]) -> None:
        """Upload an incremental step's manifest (its blobs uploaded already), then commit the step.

        Raises:
            CheckpointConflictError: another writer committed the step first. OSError: an upload failed.
        """
        writer = secrets.token_hex(8)
        where = self.folder(step).child(f"manifest-{writer}.json")
        self.root.fs.pipe_file(where.path, manifest)
        if os.environ.get(KILL_BEFORE_COMMIT) == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        self.publish(step, writer, {_INCREMENTAL: {"object": _name(where), "size": len(manifest)}}, info)

    @staticmethod
    def is_distributed(record: Mapping[str, Any]) -> bool:
        """True when ``record`` (a checked commit object) names a distributed checkpoint's manifest."""
        return _MANIFEST in record["files"]

    def check_free(self, step: int) -> None:
        """Raise :class:`CheckpointConflictError` when step ``step`` is committed already (never replaced)."""
        marker = self.folder(step).child(COMMIT_OBJECT)
        self.root.fs.invalidate_cache(self.folder(step).path)
        if self.root.fs.exists(marker.path):
            raise CheckpointConflictError(f"{self.root.url}: step {step} is already committed ({marker.url}); on "
                                          "object storage a committed step is never replaced: save another step "
                                          "or delete this one first")  # fmt: skip

    def commit(self, step: int, write: Callable[[str], None], info: Mapping[str, Any]) -> None:
        """Write step ``step``: ``write(local_path)`` writes its state file, which is uploaded, then committed.

        Raises:
            CheckpointConflictError: the step is committed already, or another writer committed it first
                (this writer's data objects are removed).
            OSError: an upload or the commit failed (no commit object of this writer exists, unless the
                store took it and the answer was lost: the step is then committed).
        """
        self.check_free(step)
        writer = secrets.token_hex(8)
        data = self.folder(step).child(f"state-{writer}.tensorfile")
        with staged(data) as local:
            with renamed(local, data.url):
                write(local)
            size = os.path.getsize(local)
            upload(local, data)
        if os.environ.get(KILL_BEFORE_COMMIT) == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        self.publish(step, writer, {_STATE: {"object": _name(data), "size": size}}, info)

    def publish(self, step: int, writer: str, files: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        """Create step ``step``'s commit object naming ``files`` (every object already uploaded), conditionally.

        Raises:
            CheckpointConflictError: another writer committed the step first (this writer's objects, named
                by ``files``, are removed).
            OSError: the put failed (not committed, unless the store took it and the answer was lost).
        """
        body = {"tensorfile_commit": 1, "step": step, "writer": writer, "files": dict(files), "info": dict(info)}
        try:
            put_new(self.folder(step).child(COMMIT_OBJECT), json.dumps(body).encode("utf-8"))
        except FileExistsError:
            if self.committed_by(step, writer):  # a retry of our own put, whose first try had landed
                return
            for entry in files.values():
                self.discard(step, entry["object"])
            raise CheckpointConflictError(f"{self.root.url}: step {step} was committed by another writer while "
                                          "this one was writing it; this writer's data objects were removed") from None  # fmt: skip

    def discard(self, step: int, name: str) -> None:
        """Remove an uncommitted attempt's objects: data object ``name``, or a distributed attempt's folder."""
        fs, where = self.root.fs, self.folder(step).child(name.split("/", 1)[0])
        with contextlib.suppress(OSError):
            if "/" in name:
                fs.rm(where.path, recursive=True)
            else:
                fs.rm_file(where.path)
        fs.invalidate_cache(self.folder(step).path)

    def committed_by(self, step: int, writer: str) -> bool:
        """True when step ``step``'s commit object is ``writer``'s."""
        return self._writer_of(step) == writer

    def _writer_of(self, step: int) -> str | None:
        self.root.fs.invalidate_cache(self.folder(step).path)
        try:
            return self.record(step).get("writer")
        except (TensorFileError, OSError):
            return None

    def delete(self, step: int) -> None:
        """Delete step ``step``: its commit object first (the step is gone for readers), then its data objects."""
        fs, folder = self.root.fs, self.folder(step)
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(folder.child(COMMIT_OBJECT).path)
        fs.invalidate_cache(folder.path)
        try:
            rest = fs.find(folder.path)
        except FileNotFoundError:
            return
        for path in rest:
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)
        fs.invalidate_cache(folder.path)

    def sweep(self) -> list[str]:
        """Delete stale data objects no commit object names and abort stale multipart uploads (module docs).

        Returns:
            What was removed: object URLs, then ``bucket/key`` of each upload aborted.
        """
        fs = self.root.fs
        cutoff = time.time() - STALE_AFTER
        removed = []
        for step, objects in self.listing().items():
            keep = COMMIT_OBJECT
            if COMMIT_OBJECT in objects:
                if len(objects) <= 2:  # the commit object and its data object: nothing to look at
                    continue
                try:
                    (entry,) = self.record(step)["files"].values()
                    keep = entry["object"].split("/", 1)[0]  # its data object, or its attempt's folder
                except (TensorFileError, OSError):
                    continue  # a folder this protocol does not understand: left alone
            for name, info in objects.items():
                when = _modified(info)
                top = name.split("/", 1)[0]
                ours = _DATA.fullmatch(name) or _INCREMENTAL_OBJECT.fullmatch(name) or ("/" in name and _ATTEMPT.fullmatch(top))
                if top in (keep, COMMIT_OBJECT) or not ours or when is None or when > cutoff:
                    continue
                where = self.folder(step).child(name)
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(where.path)
                    removed.append(where.url)
        return removed + abort_stale_uploads(self.root, STALE_AFTER)


def _name(location: Location) -> str:
    """The last part of an object's path."""
    return location.path.rsplit("/", 1)[-1]
