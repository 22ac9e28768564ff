"""Where the blobs and manifests of incremental steps live: a local folder, or an object store.

An incremental step (``docs/FORMAT.md``, "Incremental checkpoints") is a manifest in the format of a
distributed checkpoint (:mod:`tensorfile.distributed.manifest`, ``world_size`` 1, one chunk per tensor)
whose files are *blobs*: ordinary tensorfile files, each holding the tensors one step wrote (the ones that
changed), under their names in the state, with their XXH3-64 checksums. A step writes at most one blob;
it names the blobs of older steps for the tensors it shares with them.

Local disk (:class:`LocalBlobs`): a step folder holds its manifest and a *hard link* to every blob it
names, so each folder is a complete distributed checkpoint on its own (``tensorfile.load`` of the folder,
``tensorfile ls/info/verify``), and deleting any other step only drops a link. Commit order: the new blob
written and fsynced, the links made, the manifest written and fsynced, the folder fsynced (every entry:
blob, links, manifest), renamed into place and its parent fsynced (:func:`.commit.commit`).

Object storage (:class:`ObjectBlobs`): blobs live under ``<root>/blobs/``; a step's manifest is the object
``step_<N>/manifest-<writer>.json`` named by its commit object (:mod:`.objects`), its files named in
``<root>/blobs/``. A blob is deleted when no committed step's manifest names it (references are counted
over the manifests of the committed steps after each retention), and it was written by a step no newer
than the newest committed one or :data:`.objects.STALE_AFTER` seconds ago or more (a writer at work).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..distributed import manifest as mf
from ..errors import FormatError, TensorFileError, UnsafeFileError
from ..files import _save
from ..format.reader import SafetensorsReader
from ..format.record import read_record
from .commit import commit

__all__ = ["Ref", "Base", "LocalBlobs", "ObjectBlobs", "INCREMENTAL_KEY", "BLOB_FILE", "blob_name",
           "recorded_checksums", "check_regular", "BlobLostError"]

#: Manifest metadata key of an incremental step: JSON ``{"checksums": {name: 16 hex}, "written": [names]}``.
INCREMENTAL_KEY = "tensorfile.incremental"
BLOB_FILE = re.compile(r"blob-([0-9]{8,})-[0-9a-f]{8,16}\.tensorfile")
BLOBS = "blobs"
_MANIFEST_OBJECT = re.compile(r"manifest-[0-9a-f]{16}\.json")
_CHECKSUM = re.compile(r"[0-9a-f]{16}")


def recorded_checksums(where: str, manifest: mf.Manifest) -> dict[str, str] | None:
    """The XXH3-64 checksum (16 hex) an incremental step's manifest records for each tensor, or None for a
    manifest that is not an incremental step's. A reader compares each with the one the blob records, so that
    a blob swapped for another file holding tensors of the same names (another step's blob, a copy) is caught.

    Raises:
        FormatError: the record is not JSON ``{"checksums": {name: 16 hex}}`` covering every stored tensor
            (``where`` names the manifest).
    """
    raw = manifest.metadata.get(INCREMENTAL_KEY)
    if raw is None:
        return None
    try:
        sums = json.loads(raw)["checksums"]
    except (ValueError, TypeError, KeyError, RecursionError):
        sums = None
    if not isinstance(sums, dict) or not all(isinstance(v, str) and _CHECKSUM.fullmatch(v) for v in sums.values()):
        raise FormatError(f"{where}: metadata {INCREMENTAL_KEY!r}: expected JSON {{\"checksums\": {{name: 16 hex "
                          "digits}}, ...}}")  # fmt: skip
    missing = [n for n, e in manifest.tensors.items() if e.chunks and n not in sums]
    if missing:
        raise FormatError(f"{where}: metadata {INCREMENTAL_KEY!r} records no checksum for tensor {missing[0]!r}")
    return sums


_STEP_FOLDER = re.compile(r"step_[0-9]{8,}")


class BlobLostError(TensorFileError, FileNotFoundError):
    """A blob the new step shares with its base is in no committed step folder (the save may start again
    from the step folders on disk: :mod:`.incremental_saves`)."""


def check_regular(path: str) -> os.stat_result:
    """Refuse a blob that is not a regular file (a symbolic link to another file, a FIFO, a device): a step
    folder holds hard links only, so anything else was put there by another hand and is never read.
    Returns its ``lstat``.

    Raises:
        FileNotFoundError: no such file. UnsafeFileError: not a regular file.
    """
    st = os.lstat(path)
    mode = st.st_mode
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise UnsafeFileError(f"{path}: a blob of an incremental checkpoint is {kind}; refused (never followed)")
    return st


def blob_name(step: int, hex_digits: int = 8) -> str:
    """A fresh blob file name for step ``step`` (random part: no two attempts share one)."""
    return f"blob-{step:08d}-{secrets.token_hex(hex_digits // 2)}.tensorfile"


@dataclass(frozen=True)
class Ref:
    """Where a tensor of a committed step is stored: its blob and its XXH3-64 checksum, dtype name and shape."""

    blob: str
    checksum: str
    dtype: str
    shape: tuple[int, ...]


@dataclass
class Base:
    """The newest committed incremental step: its number and each tensor's :class:`Ref`."""

    step: int
    refs: dict[str, Ref]


def base_of(step: int, manifest: mf.Manifest) -> Base | None:
    """The :class:`Base` recorded by an incremental step's manifest (None: not an incremental step, or its
    record is unreadable: the next step then writes every tensor)."""
    try:
        sums = json.loads(manifest.metadata[INCREMENTAL_KEY])["checksums"]
        refs = {}
        for name, entry in manifest.tensors.items():
            blob = manifest.files[entry.chunks[0].file] if entry.chunks else ""
            refs[name] = Ref(blob, str(sums[name]), entry.dtype, tuple(entry.shape))
    except (KeyError, ValueError, TypeError, IndexError):
        return None
    return Base(step, refs)


def write_blob(path: str, arrays: Mapping[str, np.ndarray], durable: bool) -> dict[str, str]:
    """Write ``arrays`` (name -> host array) as a tensorfile file at ``path``; returns ``{name: checksum}`` as
    recorded in it (XXH3-64, 16 hex digits)."""
    _save(dict(arrays), path, None, durable=False)
    if durable:  # its folder entry is fsynced by the step commit (one fsync of the folder for every file)
        _fsync(path)
    reader = SafetensorsReader(path)
    try:
        record = read_record(reader.header, path)
    finally:
        reader.close()
    return {name: record.tensors[name]["checksum"] for name in arrays}


class LocalBlobs:
    """Incremental steps in a local checkpoint folder (hard-linked blobs; see the module docs)."""

    #: a synchronous save may hash the tensors it shares while it writes its blob (a late change found by that
    #: hash only costs the temporary folder: :meth:`commit` calls ``manifest`` before anything is committed)
    overlaps = True

    def __init__(self, directory: str, step_path: Callable[[int], str]) -> None:
        self.directory = directory
        self.step_path = step_path
        # the checksums a blob's header records, by (device, inode, size, mtime): a blob is linked into every step
        # that shares it, so its header is read once, not at every step (another file, or one written to since,
        # has another key)
        self._recorded: dict[tuple[int, int, int, int], dict[str, str | None]] = {}

    def base(self, steps: list[int]) -> Base | None:
        """The newest committed step as a base, if it is an incremental one."""
        if not steps:
            return None
        folder = self.step_path(steps[-1])
        try:
            return base_of(steps[-1], mf.read(os.path.join(folder, mf.MANIFEST)))
        except (OSError, TensorFileError):
            return None

    def commit(self, step: int, base: Base | None, new: Mapping[str, np.ndarray], files: list[str],
               manifest: Callable[[dict[str, str]], bytes], confirm: Callable[[], None] | None = None) -> None:  # fmt: skip
        """Write step ``step``: the blob of ``new`` (if any) as ``files[-1]``, links to the other ``files`` (blobs
        of ``base``'s folder), the manifest ``manifest(checksums of the new blob)``; then ``confirm()`` (which may
        raise: nothing is committed then, the temporary folder is removed); then commit the folder.

        Raises:
            OSError: a write, link or rename failed (no step is visible; earlier steps are untouched).
        """
        source = self.step_path(base.step) if base is not None else None

        def fill(folder: str) -> None:
            written: dict[str, str] = {}
            for name in files:
                if name in new_names:
                    written = write_blob(os.path.join(folder, name), new, durable=True)
                else:
                    expected = {n: r.checksum for n, r in base.refs.items() if r.blob == name} if base else {}
                    _link(self._source(source, name, step, expected), os.path.join(folder, name))
            with open(os.path.join(folder, mf.MANIFEST), "xb") as f:  # the folder is fresh: no file to replace
                f.write(manifest(written))
            _fsync(os.path.join(folder, mf.MANIFEST))
            if confirm is not None:
                confirm()

        new_names = {files[-1]} if new else set()
        commit(self.directory, os.path.basename(self.step_path(step)), fill)

    def _source(self, first: str | None, name: str, step: int, expected: Mapping[str, str]) -> str:
        """Blob ``name`` in a committed step folder, to link: in ``first`` (the base's folder), else in the newest
        other step folder holding it (the base deleted by hand, or by retention after an older step was saved).
        Only a regular file whose header records the checksums ``expected`` (tensor name -> 16 hex, the base's)
        is linked: a blob replaced by a symbolic link or by another file is never passed on to a new step.

        Raises:
            BlobLostError: no committed step folder holds it (nothing was committed).
        """
        folders = [first] if first else []
        try:
            folders += [os.path.join(self.directory, e) for e in sorted(os.listdir(self.directory), reverse=True)
                        if _STEP_FOLDER.fullmatch(e) and os.path.join(self.directory, e) != first]  # fmt: skip
        except OSError:
            pass
        for folder in folders:
            path = os.path.join(folder, name)
            try:
                st = check_regular(path)
                key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                recorded = self._recorded.get(key)
                if recorded is None:
                    recorded = _recorded(path, None)
                    if len(self._recorded) >= 64:
                        self._recorded.clear()
                    self._recorded[key] = recorded
                if {n: recorded.get(n) for n in expected} == dict(expected):
                    return path
            except (OSError, TensorFileError):
                continue
        raise BlobLostError(f"{self.directory}: step {step}: blob {name} of the step it shares tensors with is in no "
                            "committed step folder as the regular file its step recorded (deleted, damaged or "
                            "replaced by hand?); the step was not committed")  # fmt: skip


def _recorded(path: str, names: Mapping[str, str] | None) -> dict[str, str | None]:
    """The checksums the tensorfile file at ``path`` records for ``names`` (None: every tensor); its header only."""
    reader = SafetensorsReader(path)
    try:
        record = read_record(reader.header, path)
    finally:
        reader.close()
    tensors = record.tensors if record is not None else {}
    return {n: tensors.get(n, {}).get("checksum") for n in (tensors if names is None else names)}


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link(source: str, target: str) -> None:
    """Hard-link ``source`` as ``target``; where the filesystem has no hard links, copy it (fsynced)."""
    try:
        os.link(source, target)
        return
    except FileNotFoundError:
        raise
    except OSError:  # EPERM / ENOTSUP / EMLINK: a filesystem without (more) hard links
        pass
    with open(source, "rb") as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 22)
    _fsync(target)


class ObjectBlobs:
    """Incremental steps on object storage (blobs under ``<root>/blobs/``; see the module docs).

    Args:
        objects: the location's :class:`.objects.ObjectSteps`.
    """

    def __init__(self, objects: Any) -> None:
        self.objects = objects
        self.folder = objects.root.child(BLOBS)

    def manifest(self, step: int, record: Mapping[str, Any]) -> mf.Manifest:
        """Step ``step``'s manifest (``record``: its commit object).

        Raises:
            FormatError: not a manifest. FileNotFoundError: the manifest object is gone.
        """
        where = self.objects.data(step, record)
        return mf.parse(where.url, self.objects.root.fs.cat_file(where.path))

    def base(self, steps: list[int]) -> Base | None:
        """The newest committed step as a base, if it is an incremental one."""
        if not steps:
            return None
        try:
            record = self.objects.record(steps[-1])
            if not self.objects.is_incremental(record):
                return None
            return base_of(steps[-1], self.manifest(steps[-1], record))
        except (OSError, TensorFileError):
            return None

    def commit(self, step: int, base: Base | None, new: Mapping[str, np.ndarray], files: list[str],
               manifest: Callable[[dict[str, str]], bytes], info: Mapping[str, Any]) -> None:  # fmt: skip
        """Upload the blob of ``new`` (if any) as ``files[-1]`` under ``blobs/``, then the manifest, then commit
        the step with its commit object (:meth:`.objects.ObjectSteps.commit_incremental`).

        Raises:
            CheckpointConflictError: the step is committed already (or another writer won). OSError: an upload failed.
        """
        from ..storage.transfer import renamed, staged, upload

        self.objects.check_free(step)
        written: dict[str, str] = {}
        if new:
            blob = self.folder.child(files[-1])
            with staged(blob) as local:
                with renamed(local, blob.url):
                    written = write_blob(local, new, durable=False)
                upload(local, blob)
        self.objects.commit_incremental(step, manifest(written), info)

    def collect(self) -> list[str]:
        """Delete blobs no committed step names (see the module docs); returns their URLs."""
        from .objects import STALE_AFTER, _modified

        fs = self.folder.fs
        steps = self.objects.steps()
        named: set[str] = set()
        for step in steps:
            try:
                record = self.objects.record(step)
                if self.objects.is_incremental(record):  # a full step (incremental=False) names no blob
                    named.update(self.manifest(step, record).files)
            except (OSError, TensorFileError):
                return []  # a step unreadable now: delete nothing rather than something it needs
        fs.invalidate_cache(self.folder.path)
        try:
            found = fs.ls(self.folder.path, detail=True)
        except FileNotFoundError:
            return []
        newest = steps[-1] if steps else -1
        cutoff = time.time() - STALE_AFTER
        removed = []
        for info in found:
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            match = BLOB_FILE.fullmatch(name)
            if match is None or name in named:
                continue
            when = _modified(info)
            if int(match.group(1)) <= newest or (when is not None and when <= cutoff):
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(self.folder.child(name).path)
                    removed.append(self.folder.child(name).url)
        fs.invalidate_cache(self.folder.path)
        return removed
