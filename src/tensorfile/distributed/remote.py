"""Distributed checkpoints on object storage (``s3://``, ``gs://``, ``memory://``, any fsspec URL).

The layout is the local one (:mod:`.manifest`): ``<url>/manifest.json`` and ``<url>/rank<NNNNN>-<8 hex>.tensorfile``
objects. Object stores have no rename, so the manifest object is the commit point:

1. Every rank writes its shard file locally (a temporary folder) and uploads it in one piece under a fresh
   name (:func:`tensorfile.storage.transfer.upload`: one PUT, or a multipart upload completed at the end):
   a shard object appears whole or not at all, and never replaces another.
2. Rank 0, once every rank has uploaded, writes ``manifest.json`` in one PUT (:func:`.transfer.put`): the
   commit. A store replaces an object atomically, so a reader gets the old manifest or the new one, whole.
3. Rank 0 then deletes the shard objects no manifest names (an earlier save's, a killed save's) and aborts
   S3 multipart uploads under ``<url>`` left unfinished for :data:`tensorfile.checkpoint.objects.STALE_AFTER`
   seconds (:func:`tensorfile.storage.uploads.abort_stale_uploads`).

A save killed before step 2 leaves the previous checkpoint (or none) in force, plus shard objects that the
next save deletes. The window of an overwrite: a reader that read the old manifest before step 2 finds its
shards until step 3 deletes them; a read of a shard after that fails (``FormatError``: named by the
manifest, but missing) and succeeds when retried from the new manifest. Two writers saving to one URL at
once are not supported (the last manifest wins; the other's shards are deleted).

Readers (:class:`ShardObjects`) list the folder once (the sizes of the shard objects) and read each chunk
by byte ranges (:class:`tensorfile.storage.reader.ObjectReader`): the header of a shard object, then only
the chunks, or rows of chunks, a rank needs.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any, Mapping

from ..errors import CheckpointNotFoundError, FormatError, TensorFileError
from ..limits import DEFAULT_LIMITS, Limits
from ..storage import Location, locate
from ..storage.reader import open_object
from ..storage.transfer import put, staged, upload
from . import manifest as mf

__all__ = ["checkpoint_at", "read_manifest", "ShardObjects", "ObjectFolder"]


def checkpoint_at(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Location, Location]:
    """``(folder, manifest)`` locations of the checkpoint at ``url`` (its folder, or its ``manifest.json``)."""
    where = locate(url, storage_options)
    if where.path.endswith("/" + mf.MANIFEST):
        cut = len(mf.MANIFEST) + 1
        return Location(where.fs, where.path[:-cut], where.url[:-cut]), where
    return where, where.child(mf.MANIFEST)


def read_manifest(url: str, storage_options: Mapping[str, Any] | None,
                  limits: Limits = DEFAULT_LIMITS) -> tuple[Location, mf.Manifest]:  # fmt: skip
    """The folder and the checked manifest of the checkpoint at ``url`` (its size checked before it is read).

    Raises:
        CheckpointNotFoundError: no manifest object there. FormatError, LimitError: as :func:`.manifest.read`.
    """
    folder, where = checkpoint_at(url, storage_options)
    fs = folder.fs
    fs.invalidate_cache(folder.path)
    try:
        info = fs.info(where.path)
    except FileNotFoundError:
        info = None
    if info is None or info.get("type") == "directory":
        raise CheckpointNotFoundError(f"{folder.url}: no committed distributed checkpoint here (no {mf.MANIFEST})")
    size = int(info.get("size") or 0)
    mf.check_size(where.url, size, limits)
    return folder, mf.parse(where.url, fs.cat_file(where.path, start=0, end=size), limits)


def _names(folder: Location) -> dict[str, int]:
    """``{name: size}`` of the objects right under ``folder`` (one listing)."""
    fs = folder.fs
    fs.invalidate_cache(folder.path)
    try:
        found = fs.ls(folder.path, detail=True)
    except FileNotFoundError:
        return {}
    return {i["name"].rstrip("/").rsplit("/", 1)[-1]: int(i.get("size") or 0) for i in found if i.get("type") != "directory"}


class ShardObjects:
    """The shard objects of one checkpoint, for :class:`.read.Shards`: their sizes (one listing) and readers.

    Args:
        url: the checkpoint folder's URL. manifest: its manifest. storage_options: for its filesystem.
    """

    def __init__(self, url: str, manifest: mf.Manifest, storage_options: Mapping[str, Any] | None) -> None:
        self.folder = locate(url, storage_options)
        self.manifest = manifest
        self.sizes = _names(self.folder)

    @property
    def total(self) -> int:
        """Bytes of the manifest's shard objects that exist (what a reader's memory budget is reckoned from)."""
        return sum(self.sizes.get(name, 0) for name in self.manifest.files)

    def open(self, index: int, limits: Limits) -> Any:
        """A reader by byte ranges of shard ``index``.

        Raises:
            FormatError: the object is missing (deleted by an overwrite since the manifest was read, or never
                uploaded), or not a safetensors file.
        """
        name = self.manifest.files[index]
        where = self.folder.child(name)
        if name not in self.sizes:
            raise FormatError(f"{where.url}: named by the checkpoint's manifest, but missing (an overwrite may "
                              "have replaced the checkpoint since its manifest was read: load it again)")  # fmt: skip
        try:
            return open_object(where, self.sizes[name], limits)
        except FileNotFoundError:
            raise FormatError(f"{where.url}: named by the checkpoint's manifest, but missing") from None


class ObjectFolder:
    """Where :func:`.saving.write_checkpoint` puts a checkpoint on object storage (see the module docs).

    Raises:
        NotADirectoryError: ``url`` names an object (a file), not a folder.
        ImportError: fsspec or the protocol's backend is not installed.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None) -> None:
        self.folder = locate(url, storage_options)
        self.where = self.folder.url
        self.storage_options = storage_options
        fs = self.folder.fs
        fs.invalidate_cache(self.folder.path)
        if fs.isfile(self.folder.path):
            raise NotADirectoryError(f"{self.where}: a distributed checkpoint is a folder (a prefix); this is an object")

    def write(self, plan: Any, rank: int, world: int) -> str | None:
        """Write this rank's shard file locally, then upload it under its fresh name; the name (None: nothing)."""
        from . import saving

        with staged(self.folder.child("shard")) as local:
            os.mkdir(local)
            name = saving.write_shard(local, plan, rank, world)
            if name is not None:
                upload(os.path.join(local, name), self.folder.child(name))
        return name

    def remove(self, name: str) -> None:
        """Delete this rank's shard object (its save failed)."""
        with contextlib.suppress(OSError):
            self.folder.fs.rm_file(self.folder.child(name).path)

    def publish(self, manifest: mf.Manifest) -> None:
        """Rank 0: put the manifest object (the commit), then delete the shard objects it does not name."""
        from ..checkpoint.objects import KILL_BEFORE_COMMIT

        if os.environ.get(KILL_BEFORE_COMMIT) == "1":  # test hook: every shard uploaded, no manifest
            os.kill(os.getpid(), signal.SIGKILL)
        put(self.folder.child(mf.MANIFEST), mf.dumps(manifest))
        self.remove_unreferenced(set(manifest.files))

    def remove_unreferenced(self, keep: set[str]) -> list[str]:
        """Delete the shard objects ``keep`` does not name, and abort stale multipart uploads; what was deleted."""
        from ..checkpoint.objects import STALE_AFTER
        from ..storage.uploads import abort_stale_uploads

        removed = []
        for name in _names(self.folder):
            if name in keep or not mf.SHARD_FILE.fullmatch(name):
                continue
            with contextlib.suppress(FileNotFoundError):
                self.folder.fs.rm_file(self.folder.child(name).path)
                removed.append(name)
        abort_stale_uploads(self.folder, STALE_AFTER)
        return removed

    def committed(self, files: list[str]) -> bool:
        """Rank 0, after :meth:`publish` raised: whether the manifest in force names exactly ``files``."""
        try:
            _, manifest = read_manifest(self.where, self.storage_options)
        except (OSError, TensorFileError):
            return False
        return set(manifest.files) == set(files)

